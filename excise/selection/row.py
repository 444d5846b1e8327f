"""Row-wise (the paper's default): every output row of every prunable weight loses the same share.

Row i of a weight `[out, in]` is what output feature i reads from its inputs;
comparing scores only within a row keeps every feature alive, which is what
makes Wanda and LRP work at 50% (a global cut starves whole rows).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from excise.artifacts.masks import MaskSet
from excise.selection.allocation import layer_sparsities
from excise.selection.base import Selection, keep_highest, prunable_weight_scores, removal_count


class RowParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    allocation: Literal["uniform", "relevance"] = Field(
        "uniform", description="uniform: every layer at the sparsity; relevance: per layer from its score density"
    )
    delta: float = Field(0.05, ge=0.0, lt=0.5, description="with relevance allocation: layers within sparsity ± delta")


class RowSelection(Selection):
    name = "row"
    unit = "weight"
    help = "same share of weights removed from every output row (default)"
    Params = RowParams

    def select(self, scores, adapter, sparsity, params: RowParams) -> MaskSet:
        weight_scores = prunable_weight_scores(scores, adapter)
        shares = {name: sparsity for name in weight_scores}
        if params.allocation == "relevance":
            shares = layer_sparsities(weight_scores, adapter, sparsity, params.delta)
        masks = MaskSet()
        for name, score in weight_scores.items():  # score: [out, in]
            masks.weights[name] = keep_highest(score, removal_count(score.shape[-1], shares[name]))
        return masks
