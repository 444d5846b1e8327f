"""Magnitude scorer: |W|. Needs no reference data."""

from __future__ import annotations

from excise.scoring.base import Scorer, unit_scores
from excise.models.placement import weight_of
from excise.artifacts.scores import Scores


class MagnitudeScorer(Scorer):
    name = "magnitude"
    needs_data = False

    def scores(self) -> Scores:
        weights = {}
        if "weight" in self.granularities:
            weights = {f"{n}.weight": weight_of(m).abs() for n, m in self.adapter.prunable_linears().items()}
        neurons, heads = unit_scores(self.adapter, self.granularities, lambda m: weight_of(m).abs())
        return Scores(weights=weights, neurons=neurons, heads=heads)
