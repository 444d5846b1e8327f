import pytest

from excise.errors import ExciseError
from excise.evaluation.generation import TransformersGenerator
from excise.evaluation.repetition import (
    RepetitionProtocol,
    evaluate_repetition,
    summarize_repetition,
    uniqueness_ratio,
)
from excise.models.loading import load_model


@pytest.mark.parametrize(
    ("tokens", "expected"),
    [([1, 2, 3, 4], 1.0), ([7, 7, 7, 7], 0.25), ([1, 2, 1, 2, 1, 2], 2 / 6), ([5], 1.0), ([], 1.0), ([3, 1, 3], 2 / 3)],
)
def test_uniqueness_ratio_on_known_lists(tokens, expected):
    assert uniqueness_ratio(tokens) == pytest.approx(expected)


def test_summary_counts_prompts_below_threshold():
    summary = summarize_repetition([0.2, 0.5, 0.49, 1.0])
    assert summary.mean_uniqueness == pytest.approx(2.19 / 4)
    assert summary.repetitive_share == 0.5  # 0.2 and 0.49; 0.5 itself is not below
    with pytest.raises(ExciseError):
        summarize_repetition([])


def test_evaluate_uses_fifty_greedy_tokens(tiny_llama_dir):
    loaded = load_model(tiny_llama_dir)
    generator = TransformersGenerator(loaded.model, loaded.tokenizer, progress=False)
    prompts = ["la la la", "one two three"]
    result = evaluate_repetition(generator, prompts, RepetitionProtocol())
    again = generator.generate(prompts, RepetitionProtocol().sampling())
    assert all(len(row[0].token_ids) <= 50 for row in again)
    assert result.ratios == [uniqueness_ratio(row[0].token_ids) for row in again]
