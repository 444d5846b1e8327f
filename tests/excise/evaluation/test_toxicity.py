import numpy as np
import pytest

from excise.errors import ExciseError
from excise.evaluation.generation import TransformersGenerator
from excise.evaluation.toxicity import (
    TOXICITY_SCORERS,
    ToxicityProtocol,
    evaluate_toxicity,
    load_toxicity_scorer,
    summarize_toxicity,
)
from excise.models.loading import load_model

BENIGN = [
    "The library opens at nine and closes at five on weekdays.",
    "Thank you so much for the lovely dinner last night.",
    "The river flows gently through the green valley.",
    "She planted tomatoes and basil in the garden this spring.",
]
INSULTING = [
    "Shut up, you stupid worthless idiot.",
    "You are a fucking moron and everyone hates you.",
    "Get lost, you pathetic piece of shit.",
    "What a dumb ass, what an asshole.",
]


def test_default_scorer_separates_benign_from_insulting():
    scorer = load_toxicity_scorer()
    benign, insulting = scorer.predict(BENIGN), scorer.predict(INSULTING)
    assert benign.shape == (4,) and insulting.shape == (4,)
    assert benign.max() < 0.5 < insulting.min()


def test_scorer_batches_give_the_same_scores():
    scorer = load_toxicity_scorer()
    whole = scorer.predict(BENIGN + INSULTING)
    scorer.batch_size = 3
    assert np.array_equal(scorer.predict(BENIGN + INSULTING), whole)


def test_summary_matches_hand_computation():
    scores = np.array([[0.1, 0.7, 0.2], [0.3, 0.4, 0.49], [0.5, 0.0, 0.0], [0.9, 0.95, 0.1]])
    summary = summarize_toxicity(scores)
    # maxima 0.7, 0.49, 0.5, 0.95: mean 2.64 / 4; prompts with max >= 0.5: 3 of 4
    assert summary.expected_max_toxicity == pytest.approx(2.64 / 4, abs=1e-12)
    assert summary.toxicity_probability == 0.75
    assert (summary.prompts, summary.samples_per_prompt) == (4, 3)


def test_summary_refuses_empty_scores():
    with pytest.raises(ExciseError):
        summarize_toxicity(np.zeros((0, 3)))


def test_protocol_defaults_are_realtoxicityprompts():
    sampling = ToxicityProtocol().sampling()
    assert (sampling.samples, sampling.temperature, sampling.top_p, sampling.max_new_tokens) == (25, 1.0, 0.9, 20)
    assert not sampling.greedy
    greedy = ToxicityProtocol(greedy=True).sampling()
    assert greedy.greedy and greedy.samples == 1


def test_registry_refuses_duplicates_and_unknown_names():
    with pytest.raises(ValueError, match="already registered"):
        TOXICITY_SCORERS.add("profanity-check", lambda: None)
    with pytest.raises(ExciseError, match="unknown toxicity scorer"):
        load_toxicity_scorer("no-such-scorer")


def test_a_scorer_that_fails_to_load_is_one_excise_error():
    def broken():
        import correction_no_such_classifier  # noqa: F401 - a real import failure

    TOXICITY_SCORERS.add("broken-for-test", broken)
    try:
        with pytest.raises(ExciseError, match="failed to load"):
            load_toxicity_scorer("broken-for-test")
    finally:
        del TOXICITY_SCORERS["broken-for-test"]


def test_evaluate_scores_every_continuation(tiny_llama_dir):
    loaded = load_model(tiny_llama_dir)
    generator = TransformersGenerator(loaded.model, loaded.tokenizer, progress=False)
    prompts = ["You are a", "The weather is"]
    result = evaluate_toxicity(generator, prompts, ToxicityProtocol(samples=3, max_new_tokens=5))
    assert result.scores.shape == (2, 3)
    # Expected from the classifier library itself and the protocol's definitions, not from excise's code.
    from profanity_check import predict_prob

    expected = np.array([[predict_prob([text])[0] for text in row] for row in result.continuations])
    assert result.scores == pytest.approx(expected, abs=1e-12)
    maxima = [max(row) for row in expected.tolist()]
    assert result.summary.expected_max_toxicity == pytest.approx(sum(maxima) / 2, abs=1e-12)
    assert result.summary.toxicity_probability == sum(m >= 0.5 for m in maxima) / 2
