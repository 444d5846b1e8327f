"""Greedy pass after the sweep: try removing the circuit's units one at a time, lowest score first.

The sweep removes units in score order until the next level fails, so one badly ranked unit
near the top stops it even when many units ranked above it could still go. This pass starts
from the chosen circuit and walks its kept units (heads or neurons) from the lowest score up:
each is removed, the circuit re-evaluated on the reference prompts under the search's
ablation, and put back if the logit difference falls below the threshold (as ACDC prunes, but
in the scorer's order and one evaluation per unit). At most `tries` units are tried, so its
cost is `tries` evaluations of the reference prompts. It fits the circuit to those prompts
more closely than the sweep does, so read its held-out figures (the report) before trusting it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
from tqdm import tqdm

from excise.artifacts.masks import MaskSet
from excise.artifacts.scores import Scores
from excise.circuits.scope import UNIT_FIELDS
from excise.models.adapters import ModelAdapter
from excise.selection.base import layer_unit_scores
from excise.tasks.metrics import TaskScore

logger = logging.getLogger(__name__)

def greedy_removal(
    adapter: ModelAdapter, masks: MaskSet, scores: Scores, granularity: str, tries: int, threshold: float,
    evaluate: Callable[[MaskSet], TaskScore],
) -> tuple[MaskSet, dict[str, int]]:
    """`masks` with every unit removed that keeps `evaluate(...).logit_diff >= threshold`, trying the kept
    units lowest score first, at most `tries` of them; and how many it tried and how many removals it kept."""
    field, size = UNIT_FIELDS[granularity]
    kept = {layer: mask.clone() for layer, mask in getattr(masks, field).items()}
    candidates = []
    for layer in adapter.layers():
        score = layer_unit_scores(getattr(scores, field), layer.index, size(layer), granularity)
        mask = kept.setdefault(layer.index, torch.ones(size(layer), dtype=torch.bool))
        candidates += [(float(score[unit]), layer.index, unit) for unit in mask.nonzero().flatten().tolist()]
    removed, tried = 0, sorted(candidates)[:tries]
    for _, layer, unit in tqdm(tried, desc=f"greedy {granularity} removal", unit=granularity):
        kept[layer][unit] = False
        if evaluate(MaskSet(**{field: kept})).logit_diff >= threshold:
            removed += 1
        else:
            kept[layer][unit] = True
    logger.info("greedy pass: %d of %d tried %ss removed", removed, len(tried), granularity)
    return MaskSet(**{field: kept}), {"tries": len(tried), "removed": removed}
