"""Sparsity sweep: task performance of the pruned model on held-out prompts at each sparsity.

The grid is evaluated first; then the interval between the sparsest level that
keeps the threshold and the next (failing) grid level is bisected a few times, so a
coarse grid still finds the threshold crossing closely.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

from tqdm import tqdm

from correction.circuits.ablation import ablated
from correction.errors import ExciseError
from correction.masks import MaskSet
from correction.models.adapters import ModelAdapter
from correction.scoring.scores import Scores
from correction.selection import Selection
from correction.tasks.base import TaskBatch
from correction.tasks.metrics import evaluate_task

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CurvePoint:
    sparsity: float  # requested share of the granularity's units removed
    weight_sparsity: float  # achieved share of all prunable (decoder linear) weights removed
    logit_diff: float
    accuracy: float
    top1: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def pick_sparsest(curve: list[CurvePoint], threshold: float, *, dense: float) -> CurvePoint:
    """The sparsest point whose logit difference is at least `threshold`."""
    passing = [p for p in curve if p.logit_diff >= threshold]
    if not passing:
        best = max(curve, key=lambda p: p.logit_diff)
        raise ExciseError(
            f"no sparsity keeps {threshold / dense:.0%} of the dense logit difference ({threshold:.3f} of {dense:.3f}); "
            f"the best was {best.logit_diff:.3f} ({best.logit_diff / dense:.0%}) at sparsity {best.sparsity:.4g}; "
            "lower --retain or add lower sparsities"
        )
    return max(passing, key=lambda p: p.sparsity)


class Sweep:
    """Evaluates masks cut from one set of scores on one held-out batch."""

    def __init__(self, adapter: ModelAdapter, scores: Scores, selection: Selection, heldout: TaskBatch, *, batch_size: int):
        self.adapter = adapter
        self.scores = scores
        self.selection = selection
        self.heldout = heldout
        self.batch_size = batch_size

    def masks(self, sparsity: float) -> MaskSet:
        return self.selection(self.scores, self.adapter, sparsity)

    def point(self, sparsity: float) -> CurvePoint:
        masks = self.masks(sparsity)
        with ablated(self.adapter, masks, "zero"):
            score = evaluate_task(self.adapter.model, self.heldout, batch_size=self.batch_size)
        point = CurvePoint(
            sparsity=sparsity,
            weight_sparsity=masks.sparsity_report(self.adapter)["overall"],
            logit_diff=score.logit_diff,
            accuracy=score.accuracy,
            top1=score.top1,
        )
        logger.info("sparsity %.4g: logit diff %.3f, accuracy %.3f", sparsity, point.logit_diff, point.accuracy)
        return point

    def run(self, grid: list[float], threshold: float, refine_steps: int) -> list[CurvePoint]:
        curve = [self.point(s) for s in tqdm(sorted(set(grid)), desc="sparsity sweep", unit="level")]
        passing = [p.sparsity for p in curve if p.logit_diff >= threshold]
        if not passing:
            return curve
        low = max(passing)
        above = [p.sparsity for p in curve if p.sparsity > low]
        if not above:
            return curve
        high = min(above)
        for _ in range(refine_steps):
            middle = (low + high) / 2
            point = self.point(middle)
            curve.append(point)
            low, high = (middle, high) if point.logit_diff >= threshold else (low, middle)
        return sorted(curve, key=lambda p: p.sparsity)
