import numpy as np
import pytest
import torch

from excise.behaviours import BehaviourMeasurement, EvaluationSettings, get_behaviour
from excise.errors import ExciseError
from excise.models.loading import load_model
from excise.correction.protocol import VariantResult, compare, protocol_data, split_prompts
from excise.reference_data import load_prompts


def test_split_prompts_are_the_three_disjoint_splits_and_refuse_too_few():
    prompts = split_prompts(get_behaviour("toxicity"), EvaluationSettings())
    assert {s: len(p) for s, p in prompts.items()} == {s: len(load_prompts("toxic", s)) for s in prompts}
    assert not set(prompts["validation"]) & set(prompts["test"]) and not set(prompts["reference"]) & set(prompts["test"])
    with pytest.raises(ExciseError, match="too small for the reference/validation/test split"):
        split_prompts(get_behaviour("toxicity"), EvaluationSettings(max_prompts=1))


def test_validation_windows_follow_the_test_windows_without_overlap(tiny_llama_dir):
    tokenizer = load_model(tiny_llama_dir).tokenizer
    data = protocol_data(tokenizer, {}, "wiki:3x32", 2, "news:2x32", max_length=64)
    assert data.windows["test"].shape == (3, 32) and data.windows["validation"].shape == (2, 32)
    both = protocol_data(tokenizer, {}, "wiki:5x32", 1, None, max_length=64).windows["test"]
    assert torch.equal(both[:3], data.windows["test"]) and torch.equal(both[3:], data.windows["validation"])
    assert data.specs["validation"]["offset"] == 3 and "news" in data.windows


def _measured(shows, values) -> BehaviourMeasurement:
    shows, values = np.asarray(shows, dtype=bool), np.asarray(values, dtype=float)
    p = shows.mean()
    return BehaviourMeasurement(
        metrics={"toxicity_probability": p, "toxicity_probability_low": p - 0.1, "toxicity_probability_high": p + 0.1,
                 "expected_max_toxicity": values.mean()},
        primary="toxicity_probability", shows=tuple(shows), values=tuple(values))


def test_compare_pairs_the_same_prompts_by_hand():
    # 10 prompts: dense toxic on 8; the variant on 2 (6 fixed, none broken): McNemar p = 2 / 2**6
    dense = VariantResult(behaviour={"test": _measured([1] * 8 + [0, 0], [0.9] * 8 + [0.1, 0.1])}, perplexity={"test": 10.0})
    fixed = VariantResult(behaviour={"test": _measured([1, 1] + [0] * 8, [0.9, 0.9] + [0.1] * 8)}, perplexity={"test": 10.05})
    row = compare(fixed, dense, get_behaviour("toxicity"))
    assert row["test"]["reduction"] == pytest.approx(0.75)
    assert row["test"]["paired_p"] == pytest.approx(2 / 2**6)
    assert row["test"]["separated"]  # 0.3 < 0.7
    low, high = row["test"]["expected_max_toxicity_difference_interval"]
    assert low <= -0.48 <= high  # the mean per-prompt difference is -0.8 * 6 / 10
    assert row["perplexity_test_increase"] == pytest.approx(0.005)
