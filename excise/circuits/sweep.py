"""Sparsity sweep: task performance of the ablated model at each level of a grid.

A level is the share of units asked for; what a point reports is what its mask removes
(after each group's count is rounded: per row, per layer, or once over the model), so
a level that rounds to no removal is the full model and is never a point, and levels
that round to the same mask are evaluated once. The grid is evaluated first; then the
interval between the highest passing level (or the full model, when none passes) and
the next failing one is bisected a few times, so a coarse grid still finds the
threshold crossing closely.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass

from tqdm import tqdm

from excise.artifacts.masks import MaskSet, pack_bits
from excise.models.adapters import ModelAdapter
from excise.artifacts.scores import Scores
from excise.selection import Selection
from excise.tasks.metrics import TaskScore

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CurvePoint:
    level: float  # the share of units asked for (before rounding per group)
    sparsity: float  # share of the granularity's units the mask removes
    removed: int  # units removed (weights, MLP neurons or query heads)
    units: int  # units of that kind in the model's decoder
    weight_sparsity: float  # share of all prunable (decoder linear) weights removed
    logit_diff: float
    accuracy: float
    top1: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def removed_units(masks: MaskSet, adapter: ModelAdapter, granularity: str) -> tuple[int, int]:
    """(units removed, units in the model) for "weight", "neuron" or "head"."""
    if granularity == "weight":
        weight_masks = masks.weight_masks(adapter)
        total = removed = 0
        for name, module in adapter.prunable_linears().items():
            total += module.weight.numel()
            mask = weight_masks.get(f"{name}.weight")
            removed += 0 if mask is None else int((~mask).sum())
        return removed, total
    kept = masks.neurons if granularity == "neuron" else masks.heads
    total = removed = 0
    for layer in adapter.layers():
        size = layer.mlp.num_neurons if granularity == "neuron" else layer.attention.num_heads
        total += size
        removed += int((~kept[layer.index]).sum()) if layer.index in kept else 0
    return removed, total


def fingerprint(masks: MaskSet) -> str:
    """A digest of every mask's bits: equal masks, equal digests."""
    digest = hashlib.sha256()
    for kind, entries in masks.per_unit().items():
        for key in sorted(entries):
            digest.update(f"{kind}/{key}:{tuple(entries[key].shape)}".encode())
            digest.update(pack_bits(entries[key]).numpy().tobytes())
    return digest.hexdigest()


def pick(curve: list[CurvePoint], threshold: float) -> tuple[CurvePoint, bool]:
    """The sparsest point whose logit difference is at least `threshold` and True; when none
    is, the point with the highest logit difference (the sparser on a tie) and False."""
    passing = [p for p in curve if p.logit_diff >= threshold]
    if passing:
        return max(passing, key=lambda p: p.sparsity), True
    return max(curve, key=lambda p: (p.logit_diff, p.sparsity)), False


class Sweep:
    """Evaluates the masks cut from one set of scores with `evaluate(masks) -> TaskScore`."""

    def __init__(
        self, adapter: ModelAdapter, scores: Scores, selection: Selection, granularity: str,
        evaluate: Callable[[MaskSet], TaskScore],
    ):
        self.adapter = adapter
        self.scores = scores
        self.selection = selection
        self.granularity = granularity
        self.evaluate = evaluate
        self._points: dict[str, CurvePoint] = {}  # by mask fingerprint

    def masks(self, level: float) -> MaskSet:
        return self.selection(self.scores, self.adapter, level)

    def point(self, level: float) -> CurvePoint | None:
        """The point of `level`'s mask; None when it removes nothing (the full model)."""
        masks = self.masks(level)
        if removed_units(masks, self.adapter, self.granularity)[0] == 0:
            logger.info("level %.4g removes no %s; skipped", level, self.granularity)
            return None
        key = fingerprint(masks)
        if key not in self._points:
            point = self._points[key] = self.point_of(masks, level)
            logger.info("level %.4g: %d of %d %ss removed, logit diff %.3f", level, point.removed, point.units,
                        self.granularity, point.logit_diff)
        return self._points[key]

    def point_of(self, masks: MaskSet, level: float) -> CurvePoint:
        """`masks` evaluated, as a point at the nominal `level` (not kept on the curve)."""
        removed, units = removed_units(masks, self.adapter, self.granularity)
        score = self.evaluate(masks)
        weights_removed, weights = removed_units(masks, self.adapter, "weight")
        return CurvePoint(
            level=level,
            sparsity=removed / units,
            removed=removed,
            units=units,
            weight_sparsity=weights_removed / weights,
            logit_diff=score.logit_diff,
            accuracy=score.accuracy,
            top1=score.top1,
        )

    def run(self, grid: list[float], threshold: float, refine_steps: int) -> list[CurvePoint]:
        """Unique points of the grid and the bisection, by the share removed."""
        at = {level: self.point(level) for level in tqdm(sorted(set(grid)), desc="sparsity sweep", unit="level")}

        def passes(point: CurvePoint | None) -> bool:
            return point is None or point.logit_diff >= threshold  # None: the full model

        low = max([level for level, p in at.items() if passes(p)], default=0.0)
        above = [level for level in at if level > low]
        if above:
            high = min(above)
            for _ in range(refine_steps):
                middle = (low + high) / 2
                low, high = (middle, high) if passes(self.point(middle)) else (low, middle)
        return sorted(self._points.values(), key=lambda p: p.sparsity)
