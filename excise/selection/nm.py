"""N:M semi-structured: in every block of M consecutive inputs of a row, keep N.

The sparsity fixes how many of each block go: `sparsity * M` must be a whole
number (0.5 with M=4 is the 2:4 pattern sparse tensor cores accelerate).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from excise.errors import ExciseError
from excise.artifacts.masks import MaskSet
from excise.selection.base import Selection, keep_highest, prunable_weight_scores


class NmParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    m: int = Field(4, ge=2, description="block size M")


class NmSelection(Selection):
    name = "nm"
    unit = "weight"
    help = "N:M pattern: keep N of every M consecutive weights of a row (0.5 -> 2:4)"
    Params = NmParams

    def check(self, sparsity, params=None) -> NmParams:
        checked = super().check(sparsity, params)
        if abs(sparsity * checked.m - round(sparsity * checked.m)) > 1e-9:
            raise ExciseError(
                f"N:M pruning with M={checked.m} removes whole weights per block: sparsity must be a multiple of "
                f"1/{checked.m} (e.g. 0.5 for {checked.m // 2}:{checked.m}), not {sparsity}"
            )
        return checked

    def select(self, scores, adapter, sparsity, params: NmParams) -> MaskSet:
        m, remove = params.m, round(sparsity * params.m)
        masks = MaskSet()
        for name, score in prunable_weight_scores(scores, adapter).items():
            rows, cols = score.shape
            if cols % m:
                raise ExciseError(f"{name} has {cols} inputs, not a multiple of M={m}; choose another M")
            blocks = score.view(rows, cols // m, m)  # [out, in/M, M]
            masks.weights[name] = keep_highest(blocks, remove).view(rows, cols)
        return masks
