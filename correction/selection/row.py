"""Row-wise (the paper's default): every output row of every prunable weight loses the same share.

Row i of a weight `[out, in]` is what output feature i reads from its inputs;
comparing scores only within a row keeps every feature alive, which is what
makes Wanda and LRP work at 50% (a global cut starves whole rows).
"""

from __future__ import annotations

from correction.masks import MaskSet
from correction.selection.base import Selection, keep_highest, prunable_weight_scores, removal_count


class RowSelection(Selection):
    name = "row"
    unit = "weight"
    help = "same share of weights removed from every output row (default)"

    def select(self, scores, adapter, sparsity, params) -> MaskSet:
        masks = MaskSet()
        for name, score in prunable_weight_scores(scores, adapter).items():  # score: [out, in]
            masks.weights[name] = keep_highest(score, removal_count(score.shape[-1], sparsity))
        return masks
