"""Reconstruction: prune with SparseGPT's OBS update, which also changes the weights that stay.

Two uses, one algorithm (`sequential.reconstruct` over `obs.obs_prune`):
- `sparsegpt` as a method: SparseGPT chooses the mask itself from its saliency w²/[H⁻¹]_jj²
  (`saliency_rules`, for the granularities `row`, `layer` and `nm`);
- any scorer's mask repaired (`excise prune --reconstruct`): LRP, Wanda, ... choose which
  weights go, the update re-fits the kept weights of each row to the layer's calibration
  outputs (`fixed_rules`).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from excise.errors import ExciseError
from excise.artifacts.masks import MaskSet
from excise.pruning.reconstruction.obs import BlockShare, FixedMask, MaskRule, NofM, RowShare
from excise.pruning.reconstruction.sequential import Reconstruction, ReconstructionConfig, reconstruct

#: the method name under which SparseGPT selects its own mask
SPARSEGPT = "sparsegpt"

RuleFor = Callable[[str, nn.Linear], MaskRule]

#: granularity -> SparseGPT's own mask rule for it (sparsity, selection params, linear)
_SALIENCY_RULES: dict[str, Callable[[float, dict, nn.Linear], MaskRule]] = {
    "row": lambda sparsity, params, linear: RowShare(sparsity, linear.in_features),
    "layer": lambda sparsity, params, linear: BlockShare(sparsity),
    "nm": lambda sparsity, params, linear: NofM(round(sparsity * params.get("m", 4)), params.get("m", 4)),
}


def saliency_granularities() -> list[str]:
    return list(_SALIENCY_RULES)


def saliency_rules(granularity: str, sparsity: float, params: dict | None = None) -> RuleFor:
    """SparseGPT's adaptive mask choice at `sparsity` for every linear."""
    if granularity not in _SALIENCY_RULES:
        raise ExciseError(
            f"sparsegpt chooses single weights: granularity {granularity!r} is not one of "
            f"{', '.join(_SALIENCY_RULES)}; for neurons or heads score with another method"
        )
    make = _SALIENCY_RULES[granularity]
    return lambda name, linear: make(sparsity, params or {}, linear)


def fixed_rules(masks: MaskSet) -> RuleFor:
    """Keep exactly what `masks` keeps (weight masks; a linear without one keeps everything)."""

    def rule(name: str, linear: nn.Linear) -> MaskRule:
        keep = masks.weights.get(name)
        return FixedMask(keep if keep is not None else linear.weight.new_ones(linear.weight.shape, dtype=bool))

    return rule


__all__ = [
    "SPARSEGPT",
    "Reconstruction",
    "ReconstructionConfig",
    "fixed_rules",
    "reconstruct",
    "saliency_granularities",
    "saliency_rules",
]
