"""Choosing the circuit's level from a curve."""

from __future__ import annotations

import pytest

from correction.circuits.sweep import CurvePoint, pick_sparsest
from correction.errors import ExciseError


def _curve(values: dict[float, float]) -> list[CurvePoint]:
    return [CurvePoint(sparsity=s, weight_sparsity=s, logit_diff=v, accuracy=1.0, top1=1.0) for s, v in values.items()]


def test_picks_the_sparsest_level_at_or_above_the_threshold():
    curve = _curve({0.5: 5.0, 0.7: 4.6, 0.8: 3.0, 0.9: 4.5, 0.95: 1.0})  # not monotone, 0.9 exactly at threshold
    assert pick_sparsest(curve, 4.5, dense=5.0).sparsity == 0.9
    assert pick_sparsest(curve, 4.55, dense=5.0).sparsity == 0.7


def test_unreachable_level_names_the_best_achieved():
    with pytest.raises(ExciseError, match=r"no sparsity keeps 90% .* the best was 3\.000 \(60%\) at sparsity 0\.8"):
        pick_sparsest(_curve({0.8: 3.0, 0.9: 1.0}), 4.5, dense=5.0)
