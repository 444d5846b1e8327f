"""The common interface of selections: scores + a sparsity -> a `MaskSet`.

A selection decides *which* weights, neurons or heads go, given how much each
matters (`Scores`, higher = keep). Every selection removes an exact count:
`removal_count(n, sparsity)` of each group it works on (a row, a tensor, all
prunable weights, a layer's neurons or KV groups, an N:M block), the lowest
scores first; ties are broken by position (the lower index goes first), so the
same scores always give the same mask.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import ClassVar

import torch
from pydantic import BaseModel, ConfigDict

from excise.errors import ExciseError
from excise.artifacts.masks import MaskSet
from excise.models.adapters import ModelAdapter
from excise.artifacts.scores import Scores
from excise.artifacts.units import Unit

class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Selection(ABC):
    """One way to turn scores into a mask; subclasses live one per module."""

    name: ClassVar[str]
    #: which scores it reads (and so which granularity the scorer must produce)
    unit: ClassVar[Unit]
    help: ClassVar[str]
    Params: ClassVar[type[BaseModel]] = NoParams

    def __call__(self, scores: Scores, adapter: ModelAdapter, sparsity: float, params: dict | None = None) -> MaskSet:
        return self.select(scores, adapter, sparsity, self.check(sparsity, params))

    def check(self, sparsity: float, params: dict | None = None) -> BaseModel:
        """Refuse a sparsity or parameters this selection cannot honour (before any scoring is spent)."""
        if not 0.0 <= sparsity < 1.0:
            raise ExciseError(f"sparsity {sparsity} is outside [0, 1); pass e.g. 0.5 to remove half")
        return self.Params.model_validate(params or {})

    @abstractmethod
    def select(self, scores: Scores, adapter: ModelAdapter, sparsity: float, params: BaseModel) -> MaskSet: ...


def removal_count(n: int, sparsity: float) -> int:
    """How many of `n` to remove: `sparsity * n` rounded half up (1e-9 absorbs float error, 0.3*1536)."""
    return min(n, math.floor(sparsity * n + 0.5 + 1e-9))


def keep_highest(scores: torch.Tensor, remove: int) -> torch.Tensor:
    """Bool mask like `scores`, False for the `remove` lowest along the last dim (ties: lower index first)."""
    keep = torch.ones_like(scores, dtype=torch.bool)
    if remove > 0:
        lowest = torch.argsort(scores, dim=-1, stable=True)[..., :remove]  # [..., remove]
        keep.scatter_(-1, lowest, False)
    return keep


def check_finite(what: str, tensor: torch.Tensor) -> torch.Tensor:
    if not torch.isfinite(tensor).all():
        raise ExciseError(f"scores for {what} contain NaN or infinity; the scoring run is broken, score again")
    return tensor


def prunable_weight_scores(scores: Scores, adapter: ModelAdapter) -> dict[str, torch.Tensor]:
    """The scores of every prunable weight (decoder linears only), checked against the model's shapes."""
    selected = {}
    for module_name, module in adapter.prunable_linears().items():
        name = f"{module_name}.weight"
        if name not in scores.weights:
            raise ExciseError(f"the scores have no entry for {name}; they were made for another model or granularity")
        score = scores.weights[name]
        if tuple(score.shape) != tuple(module.weight.shape):
            raise ExciseError(
                f"scores for {name} have shape {tuple(score.shape)}, the model's weight {tuple(module.weight.shape)}"
            )
        selected[name] = check_finite(name, score.detach().float().cpu())
    return selected


def layer_unit_scores(units: dict[int, torch.Tensor], layer: int, size: int, what: str) -> torch.Tensor:
    """Scores of layer `layer`'s neurons or heads, `[size]`."""
    if layer not in units:
        raise ExciseError(f"the scores have no {what} scores for layer {layer}; score with granularity {what!r}")
    score = units[layer].detach().float().cpu()
    if tuple(score.shape) != (size,):
        raise ExciseError(f"{what} scores of layer {layer} have shape {tuple(score.shape)}, expected ({size},)")
    return check_finite(f"{what}s of layer {layer}", score)
