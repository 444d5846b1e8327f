"""The contrastive rule of a correction and the cut that removes exactly K components.

See `excise.correction.run` (its module docstring) for the rule's definition and why the
`relative` normalisation is the default.
"""

from __future__ import annotations

from typing import Literal

import torch

from excise.errors import ExciseError
from excise.artifacts.masks import MaskSet
from excise.artifacts.units import Unit
from excise.artifacts.scores import Scores

Normalise = Literal["overall", "layer", "relative"]
#: what the contrast protects: the general windows, or those and the harmless continuations of the
#: reference prompts (same context as the undesired texts, without the behaviour)
Keep = Literal["general", "general+harmless"]


def _normalised(units: dict, normalise: Normalise) -> dict:
    if normalise == "layer":
        return {key: value.float() / value.float().abs().sum().clamp(min=1e-30) for key, value in units.items()}
    total = sum(value.float().abs().sum() for value in units.values())
    return {key: value.float() / max(float(total), 1e-30) for key, value in units.items()}


def blended(first: Scores, second: Scores, granularity: Unit) -> Scores:
    """The mean of two references' scores, each divided by its own total first, so that both weigh the
    same whatever their length (the *keep* side of `keep="general+harmless"`)."""
    a, b = first.per_unit()[granularity], second.per_unit()[granularity]
    if set(a) != set(b):
        raise ExciseError(f"the two references' scores do not cover the same {granularity}s; score both alike")
    a, b = _normalised(a, "overall"), _normalised(b, "overall")
    mean = Scores()
    mean.per_unit()[granularity].update({key: (a[key] + b[key]) / 2 for key in sorted(a)})
    return mean


def contrastive_scores(general: Scores, undesired: Scores, granularity: Unit, normalise: Normalise) -> Scores:
    """`general - undesired` after normalising each (higher = keep); see the module docstring."""
    general_units, undesired_units = general.per_unit()[granularity], undesired.per_unit()[granularity]
    if set(general_units) != set(undesired_units) or not general_units:
        raise ExciseError(f"the general and undesired scores do not cover the same {granularity}s; score both alike")
    g = _normalised(general_units, "layer" if normalise == "layer" else "overall")
    u = _normalised(undesired_units, "layer" if normalise == "layer" else "overall")
    contrast = Scores()
    if normalise == "relative":
        # the difference as a share of the component's own relevance, shrunk towards 0 for
        # components that matter little to either reference (the mean keeps noise from ranking first)
        typical = float(sum((g[k].abs() + u[k].abs()).sum() for k in g)) / sum(g[k].numel() for k in g)
        difference = {key: (g[key] - u[key]) / (g[key].abs() + u[key].abs() + typical) for key in g}
    else:
        difference = {key: g[key] - u[key] for key in g}
    contrast.per_unit()[granularity].update({key: difference[key] for key in sorted(difference)})
    return contrast


def component_count(scores: Scores, granularity: Unit) -> int:
    return sum(value.numel() for value in scores.per_unit()[granularity].values())


def lowest_first(units: dict) -> list[tuple]:
    """`(key, flat index)` of every component of `units`, from the lowest score up across all keys
    (ties: earlier key, then lower index)."""
    keys = sorted(units)
    owners = [(key, index) for key in keys for index in range(units[key].numel())]
    flat = torch.cat([units[key].reshape(-1) for key in keys])  # [total], in key order
    return [owners[i] for i in torch.argsort(flat, stable=True).tolist()]


def remove_lowest(contrast: Scores, granularity: Unit, budget: int) -> MaskSet:
    """A mask removing exactly the `budget` components with the lowest contrast, across all layers."""
    units = contrast.per_unit()[granularity]
    total = component_count(contrast, granularity)
    if budget > total:
        raise ExciseError(f"budget {budget} exceeds the {total} {granularity}s of the model; give a budget <= {total}")
    keep = {key: torch.ones(value.numel(), dtype=torch.bool) for key, value in units.items()}
    for key, index in lowest_first(units)[:budget]:
        keep[key][index] = False
    masks = MaskSet()
    masks.per_unit()[granularity].update({key: keep[key].view(units[key].shape) for key in sorted(units)})
    return masks
