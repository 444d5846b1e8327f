"""The sweep counts what a mask removes, evaluates each distinct mask once, and picks a level."""

from __future__ import annotations

import pytest
import torch

from excise.circuits.scope import circuit_selection
from excise.circuits.sweep import CurvePoint, Sweep, pick, removed_units
from excise.models.adapters import get_adapter
from excise.models.loading import load_model
from excise.artifacts.scores import Scores
from excise.tasks.metrics import TaskScore


def _curve(values: dict[float, float]) -> list[CurvePoint]:
    return [
        CurvePoint(level=s, sparsity=s, removed=int(100 * s), units=100, weight_sparsity=s, logit_diff=v, accuracy=1.0, top1=1.0)
        for s, v in values.items()
    ]


def test_picks_the_sparsest_level_at_or_above_the_threshold():
    curve = _curve({0.5: 5.0, 0.7: 4.6, 0.8: 3.0, 0.9: 4.5, 0.95: 1.0})  # not monotone, 0.9 exactly at threshold
    assert pick(curve, 4.5) == (curve[3], True)
    assert pick(curve, 4.55) == (curve[1], True)


def test_when_no_level_passes_the_best_level_is_named_not_an_error():
    curve = _curve({0.8: 3.0, 0.9: 1.0, 0.95: 3.0})
    assert pick(curve, 4.5) == (curve[2], False)  # best logit difference, the sparser of the tie


@pytest.fixture(scope="module")
def adapter(tiny_llama_dir):
    return get_adapter(load_model(tiny_llama_dir).model)  # 2 layers x 4 query heads in 2 KV groups


class _Counting:
    """A stand-in evaluation: logit difference falls with the heads removed; counts its calls."""

    def __init__(self, adapter):
        self.adapter, self.calls = adapter, 0

    def __call__(self, masks) -> TaskScore:
        self.calls += 1
        removed, _ = removed_units(masks, self.adapter, "head")
        return TaskScore(logit_diff=8.0 - removed, accuracy=1.0, top1=1.0, count=1)


def test_row_levels_that_round_to_no_removal_or_to_one_mask_are_not_separate_points(adapter):
    scores = Scores(heads={0: torch.tensor([1.0, 2.0, 3.0, 4.0]), 1: torch.tensor([4.0, 3.0, 2.0, 1.0])})
    evaluate = _Counting(adapter)
    sweep = Sweep(adapter, scores, circuit_selection("head", "row"), "head", evaluate)
    # per layer 2 KV groups: 0.1 rounds to none, 0.3 / 0.5 / 0.7 all to one group (2 of 4 query heads)
    curve = sweep.run([0.1, 0.3, 0.5, 0.7], threshold=0.0, refine_steps=0)
    assert evaluate.calls == 1 and len(curve) == 1
    assert (curve[0].removed, curve[0].units, curve[0].sparsity, curve[0].level) == (4, 8, 0.5, 0.3)
    assert sweep.point(0.1) is None  # the full model: never a point


def test_removed_counts_match_the_mask_and_bisection_reuses_masks(adapter):
    scores = Scores(heads={0: torch.tensor([5.0, 1.0, 7.0, 8.0]), 1: torch.tensor([2.0, 6.0, 3.0, 4.0])})
    evaluate = _Counting(adapter)
    sweep = Sweep(adapter, scores, circuit_selection("head", "global"), "head", evaluate)
    curve = sweep.run([0.3, 0.9], threshold=5.0, refine_steps=4)  # passes while <= 3 heads are removed
    for point in curve:
        masks = sweep.masks(point.level)
        removed = sum(int((~m).sum()) for m in masks.heads.values())
        assert point.removed == removed and point.sparsity == removed / 8
        assert point.weight_sparsity == pytest.approx(masks.sparsity_report(adapter)["overall"])
    assert len({p.removed for p in curve}) == len(curve) == evaluate.calls  # each mask once
    best, found = pick(curve, 5.0)
    assert found and best.removed == 3


def test_bisection_starts_from_the_full_model_when_the_lowest_level_fails(adapter):
    scores = Scores(heads={0: torch.tensor([5.0, 1.0, 7.0, 8.0]), 1: torch.tensor([2.0, 6.0, 3.0, 4.0])})
    sweep = Sweep(adapter, scores, circuit_selection("head", "global"), "head", _Counting(adapter))
    curve = sweep.run([0.9], threshold=6.0, refine_steps=4)  # 0.9 removes 7; only <= 2 removed pass
    best, found = pick(curve, 6.0)
    assert found and best.removed == 2
