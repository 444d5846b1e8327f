import pytest
import torch

from excise.behaviours import EvaluationSettings, get_behaviour
from excise.cli.main import main
from excise.correction.contrast import blended
from excise.correction.run import CorrectConfig, choose, contrastive_scores, correct, remove_lowest
from excise.errors import ExciseError
from excise.evaluation.toxicity import TOXICITY_SCORERS
from excise.artifacts.manifest import Manifest
from excise.artifacts.masks import MaskSet
from excise.models.adapters import get_adapter
from excise.models.loading import load_model
from excise.artifacts.scores import Scores
from excise.artifacts.validation import validate_artifact


def neuron_scores(layer0, layer1) -> Scores:
    return Scores(neurons={0: torch.tensor(layer0, dtype=torch.float32), 1: torch.tensor(layer1, dtype=torch.float32)})


def removed(masks: MaskSet) -> set[tuple[int, int]]:
    return {(layer, int(i)) for layer, keep in masks.neurons.items() for i in (~keep).nonzero().flatten()}


# general: layer 1 matters 100x more than layer 0; undesired: one neuron in layer 0, mostly neuron 3 of layer 1
GENERAL = neuron_scores([1, 1, 1, 1], [100, 100, 100, 100])
UNDESIRED = neuron_scores([0, 0, 1, 0], [0, 0, 10, 90])


def test_overall_normalisation_picks_by_hand():
    # g / 404 and u / 101: layer-1 neuron 3 has 0.2475 - 0.8911 = -0.64, layer-0 neuron 2 0.0025 - 0.0099
    contrast = contrastive_scores(GENERAL, UNDESIRED, "neuron", "overall")
    assert contrast.neurons[1][3].item() == pytest.approx(100 / 404 - 90 / 101)
    assert removed(remove_lowest(contrast, "neuron", 1)) == {(1, 3)}
    assert removed(remove_lowest(contrast, "neuron", 2)) == {(1, 3), (0, 2)}


def test_layer_normalisation_picks_by_hand():
    # per layer: layer 0 neuron 2 = 0.25 - 1.0 = -0.75, layer 1 neuron 3 = 0.25 - 0.9 = -0.65, neuron 2 = 0.15
    contrast = contrastive_scores(GENERAL, UNDESIRED, "neuron", "layer")
    assert contrast.neurons[0][2].item() == pytest.approx(-0.75)
    assert removed(remove_lowest(contrast, "neuron", 1)) == {(0, 2)}
    assert removed(remove_lowest(contrast, "neuron", 2)) == {(0, 2), (1, 3)}


def test_relative_rule_prefers_a_small_purely_undesired_neuron_by_hand():
    # one layer; both sum to 100. Neuron 0 is big on both references, neuron 2 small and mostly undesired.
    general, undesired = Scores(neurons={0: torch.tensor([50.0, 1, 1, 48])}), Scores(neurons={0: torch.tensor([60.0, 0, 5, 35])})
    # plain difference: [-0.10, 0.01, -0.04, 0.13] -> the big neuron 0 goes first
    assert removed(remove_lowest(contrastive_scores(general, undesired, "neuron", "overall"), "neuron", 1)) == {(0, 0)}
    # relative, mean(|g| + |u|) = 0.5: neuron 0 -0.10 / 1.6 = -0.0625, neuron 2 -0.04 / 0.56 = -0.0714
    contrast = contrastive_scores(general, undesired, "neuron", "relative")
    assert contrast.neurons[0][2].item() == pytest.approx(-0.04 / 0.56)
    assert contrast.neurons[0][0].item() == pytest.approx(-0.1 / 1.6)
    assert removed(remove_lowest(contrast, "neuron", 1)) == {(0, 2)}


def test_ties_go_to_the_lower_layer_and_index():
    contrast = neuron_scores([0, 0, 0], [0, 0, 0])
    assert removed(remove_lowest(contrast, "neuron", 2)) == {(0, 0), (0, 1)}


def test_weights_and_heads_remove_exactly_k():
    weights = Scores(weights={"a.weight": torch.arange(12.0).view(3, 4), "b.weight": -torch.arange(6.0).view(2, 3)})
    masks = remove_lowest(weights, "weight", 4)
    assert sum(int((~m).sum()) for m in masks.weights.values()) == 4
    assert masks.weights["a.weight"].all() and int((~masks.weights["b.weight"]).sum()) == 4
    heads = Scores(heads={0: torch.tensor([3.0, 1.0]), 1: torch.tensor([2.0, 0.5])})
    assert {(k, int(i)) for k, m in remove_lowest(heads, "head", 2).heads.items() for i in (~m).nonzero().flatten()} == {
        (1, 1), (0, 1)
    }


def test_budget_above_the_component_count_is_refused():
    with pytest.raises(ExciseError, match="exceeds the 8 neurons"):
        remove_lowest(GENERAL, "neuron", 9)


def test_mismatched_scores_are_refused():
    with pytest.raises(ExciseError, match="same neurons"):
        contrastive_scores(GENERAL, Scores(neurons={0: torch.ones(4)}), "neuron", "overall")


def test_choose_reads_validation_only():
    def row(budget, validation, increase, test):
        return {"budget": budget, "validation": {"reduction": validation}, "test": {"reduction": test},
                "perplexity_validation_increase": increase, "perplexity_test_increase": 0.0}

    # the test column would prefer K=10 and K=40; the choice must not look at it
    rows = [row(10, 0.2, 0.001, 0.99), row(20, 0.5, 0.015, 0.1), row(30, 0.5, 0.019, 0.1), row(40, 0.9, 0.05, 0.99)]
    assert choose(rows, 0.02)["budget"] == 20
    assert choose(rows, 0.1)["budget"] == 40
    assert choose(rows, 0.0) is None


def tiny_config(model, **changes) -> CorrectConfig:
    base = dict(
        model=str(model), behaviour="repetition", method="wanda", granularity="neuron", budget=5,
        general="wiki:4x32", evaluation="wiki:2x32", validation_windows=2, second_evaluation="news:2x32",
        settings=EvaluationSettings(max_prompts=4, samples=2, reference_samples=2), backend="transformers", sweep=None,
    )
    return CorrectConfig(**(base | changes))


def test_correct_writes_a_valid_artifact_removing_exactly_k(tiny_llama_dir, tmp_path):
    out = correct(tiny_config(tiny_llama_dir), tmp_path / "fix")
    validated = validate_artifact(out)  # hashes, base model, mask shapes
    manifest = Manifest.load(out)
    assert manifest.kind == "correction" and validated.manifest.kind == "correction"
    masks = MaskSet.load(out)
    assert masks.only_neurons()
    assert sum(int((~keep).sum()) for keep in masks.neurons.values()) == 5
    metrics = manifest.metrics
    assert metrics["budget"] == 5 and metrics["repetition"]["primary"] == "repetitive_share"
    assert set(metrics["perplexity"]) == {"before", "after"} and set(metrics["perplexity_news"]) == {"before", "after"}
    assert metrics["repetition"]["split"] == "test" and set(metrics["validation"]) == {"before", "after"}
    low, high = metrics["repetition"]["after"]["repetitive_share_low"], metrics["repetition"]["after"]["repetitive_share_high"]
    assert low <= metrics["repetition"]["after"]["repetitive_share"] <= high
    assert metrics["generation"]["calls"] and {c["backend"] for c in metrics["generation"]["calls"]} == {"transformers"}
    assert manifest.method.name == "wanda" and manifest.method.params["contrast"] == "general - undesired"
    assert manifest.config == tiny_config(tiny_llama_dir).model_dump(mode="json")
    # the recorded perplexity after is the masked model's
    loaded = load_model(tiny_llama_dir)
    masks.apply(get_adapter(loaded.model))
    from excise.data.windows import DataSpec, token_windows
    from excise.evaluation.perplexity import perplexity

    windows = token_windows(loaded.tokenizer, DataSpec.parse("wiki:2x32", split="evaluation", order="sequential"))
    assert perplexity(loaded.model, windows, progress=False).perplexity == pytest.approx(metrics["perplexity"]["after"], rel=1e-5)


def test_sweep_records_every_budget_and_keeps_one_within_the_bound(tiny_llama_dir, tmp_path):
    out = correct(tiny_config(tiny_llama_dir, method="lrp", sweep=[2, 6], ppl_bound=1.0), tmp_path / "sweep")
    metrics = Manifest.load(out).metrics
    assert [row["budget"] for row in metrics["sweep"]] == [2, 6]
    chosen = next(row for row in metrics["sweep"] if row["budget"] == metrics["budget"])
    assert chosen["perplexity_validation_increase"] <= 1.0
    assert sum(int((~k).sum()) for k in MaskSet.load(out).neurons.values()) == metrics["budget"]
    # whether the kept budget lowered the behaviour on validation is said, not left to be inferred
    assert metrics["validation_reduced"] is (chosen["validation"]["reduction"] > 0)


def cli(capsys, *args) -> tuple[int, str]:
    try:
        code = main(["correct", *args])
    except SystemExit as exit:  # a flag argparse refuses (e.g. --sweep 25,x) exits while parsing
        code = exit.code
    return code, capsys.readouterr().err.strip()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--behaviour", "repetition", "--budget", "100000"], "exceeds the 256 neurons"),
        (["--behaviour", "sarcasm"], "unknown behaviour 'sarcasm' (no reference set)"),
        (["--behaviour", "repetition", "--method", "magnitude"], "cannot contrast"),
        (["--behaviour", "toxicity", "--toxicity-scorer", "broken-for-test"], "failed to load"),
        (["--behaviour", "toxicity", "--max-prompts", "2", "--samples", "2", "--reference-samples", "2",
          "--backend", "transformers"], "nothing to correct"),
        (["--behaviour", "toxicity", "--sweep", "25,x"], "argument --sweep: cannot read '25,x'"),
        (["--behaviour", "toxicity", "--sweep", "0,5"], "needs positive budgets"),
        (["--behaviour", "repetition", "--sweep", "5,100000"], "exceeds the 256 neurons"),
        (["--behaviour", "toxicity", "--max-prompts", "1"], "too small for the reference/validation/test split"),
        (["--behaviour", "toxicity", "--method", "lrp", "--param", "aggregation=bogus"], "bad --param for 'lrp'"),
        (["--behaviour", "toxicity", "--method", "lrp", "--target", "task_correct"], "argument --target: invalid choice"),
        (["--behaviour", "repetition", "--focus", "onset"], "cannot tell where a text turns undesired"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(args, message, tiny_llama_dir, tmp_path, capsys):
    def broken():
        raise OSError("model file is truncated")

    TOXICITY_SCORERS.add("broken-for-test", broken)
    try:
        code, err = cli(capsys, "--model", str(tiny_llama_dir), "--out", str(tmp_path / "fix"), *args)
    finally:
        del TOXICITY_SCORERS["broken-for-test"]
    assert code == 2
    errors = [line for line in err.splitlines() if line.startswith("excise:")]  # progress bars aside
    assert len(errors) == 1 and message in errors[0]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_default_correction_lowers_toxicity_on_validation_prompts(smollm2_dir):
    """excise correct's default method, target, focus and contrast (CorrectConfig) on SmolLM2 at K=10, the budget
    the correction benchmark chose for it on its validation split; fewer prompts, samples and reference texts than
    the benchmark so it takes minutes. Removing the ranking's first 10 neurons lowers toxicity on the validation
    prompts, and removing the opposite end of the same ranking does not (a reversed ranking fails this test).
    Every variant samples with the same seeds, so the comparison is paired."""
    from excise.correction.protocol import measure_variants
    from excise.correction.run import build_references, score_contrast
    from excise.evaluation.neuron_scales import NeuronScales
    from excise.evaluation.variants import VariantEvaluator

    config = CorrectConfig(model=str(smollm2_dir), budget=10, sweep=None, general="wiki:16x128",
                           settings=EvaluationSettings(samples=10, reference_samples=6, max_prompts=32))
    loaded, behaviour = load_model(smollm2_dir), get_behaviour("toxicity")
    evaluator = VariantEvaluator(loaded, config.backend)
    references = build_references(config, loaded, behaviour, evaluator)
    contrast, _ = score_contrast(config, loaded.model, references)
    reversed_contrast = Scores(neurons={k: -v for k, v in contrast.neurons.items()})
    variants = {"dense": None,
                "ranked": NeuronScales.from_masks(remove_lowest(contrast, "neuron", config.budget)),
                "reversed": NeuronScales.from_masks(remove_lowest(reversed_contrast, "neuron", config.budget))}
    measured = measure_variants(evaluator, behaviour, variants, references.protocol, config.settings,
                                splits=("validation",), window_sets=())
    dense, ranked, reversed_ = (measured[k].behaviour["validation"].metrics for k in variants)
    assert dense["toxicity_probability"] >= 0.3  # the dense model is measurably toxic on these prompts
    assert ranked["toxicity_probability"] <= 0.8 * dense["toxicity_probability"]
    assert ranked["expected_max_toxicity"] < min(dense["expected_max_toxicity"], reversed_["expected_max_toxicity"])


def test_harmless_continuations_protect_what_the_prompts_need_by_hand():
    # one layer. Neuron 3 carries the prompts' topic: the undesired texts use it most, general text a little,
    # and the harmless continuations of the same prompts need it; neuron 2 is used only by the undesired texts
    general, undesired = Scores(neurons={0: torch.tensor([40.0, 40, 10, 10])}), Scores(neurons={0: torch.tensor([0.0, 0, 40, 60])})
    harmless = Scores(neurons={0: torch.tensor([0.0, 0, 0, 100])})
    # against general text alone: [0.4, 0.4, 0.1 - 0.4, 0.1 - 0.6] -> the topic neuron 3 goes first
    assert removed(remove_lowest(contrastive_scores(general, undesired, "neuron", "overall"), "neuron", 1)) == {(0, 3)}
    # kept side (g / 100 + h / 100) / 2 = [0.2, 0.2, 0.05, 0.55]; contrast [0.2, 0.2, -0.35, -0.05]
    keep = blended(general, harmless, "neuron")
    assert keep.neurons[0].tolist() == pytest.approx([0.2, 0.2, 0.05, 0.55])
    contrast = contrastive_scores(keep, undesired, "neuron", "overall")
    assert contrast.neurons[0].tolist() == pytest.approx([0.2, 0.2, -0.35, -0.05])
    assert removed(remove_lowest(contrast, "neuron", 1)) == {(0, 2)}


def test_focus_defaults_to_the_onset_only_where_the_behaviour_can_find_it():
    # the default is resolved when the config is made, so the manifest records what the run used
    assert CorrectConfig(behaviour="toxicity").focus == "onset"
    assert CorrectConfig(behaviour="repetition").focus == "continuation"
    assert CorrectConfig(behaviour="toxicity", focus="continuation").focus == "continuation"


def test_onset_focus_scores_only_the_word_where_each_text_turns_toxic(tiny_llama_dir):
    from excise.behaviours.base import UndesiredText
    from excise.correction.run import build_references, score_contrast
    from excise.evaluation.variants import VariantEvaluator
    from excise.scoring import score_model

    config = tiny_config(tiny_llama_dir, behaviour="toxicity", method="activation", focus="onset")
    loaded, behaviour = load_model(tiny_llama_dir), get_behaviour("toxicity")
    toxic = [UndesiredText("He looked at me and said", " you stupid idiot, get out of my house now"),
             UndesiredText("She wrote", " that the damn fool had shit for brains and left early")]
    references = build_references(config, loaded, behaviour, VariantEvaluator(loaded, "transformers"),
                                  (toxic, [UndesiredText("She wrote", " a letter")]))
    onsets = behaviour.onsets(toxic, config.settings)  # the real scorer's words (profanity-check)
    tokens = [len(loaded.tokenizer.encode(o.continuation, add_special_tokens=False)) for o in onsets]
    assert sum(b.num_scored_tokens() for b in references.onsets) == sum(tokens)
    assert sum(tokens) < sum(b.num_scored_tokens() for b in references.undesired)  # a word, not the continuation
    assert references.undesired_summary()["onset_scored_tokens"] == sum(tokens)
    # the contrast's undesired side is scored on the onset batches, the continuation ones without the focus
    by_focus = {focus: score_contrast(config.model_copy(update={"focus": focus}), loaded.model, references)[0]
                for focus in ("onset", "continuation")}
    onset_only, general = (score_model(loaded.model, data, "activation", granularities={"neuron"}, batch_size=4,
                                       progress=False) for data in (references.onsets, references.general))
    expected = contrastive_scores(general.scores, onset_only.scores, "neuron", "relative")
    assert all(torch.allclose(by_focus["onset"].neurons[k], expected.neurons[k]) for k in expected.neurons)
    assert not all(torch.allclose(by_focus["continuation"].neurons[k], expected.neurons[k]) for k in expected.neurons)
