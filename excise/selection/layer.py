"""Per tensor: every prunable weight tensor loses the same share, rows compete within it."""

from __future__ import annotations

from excise.artifacts.masks import MaskSet
from excise.selection.base import Selection, keep_highest, prunable_weight_scores, removal_count


class LayerSelection(Selection):
    name = "layer"
    unit = "weight"
    help = "same share removed from every weight tensor"

    def select(self, scores, adapter, sparsity, params) -> MaskSet:
        masks = MaskSet()
        for name, score in prunable_weight_scores(scores, adapter).items():
            flat = score.flatten()  # [out * in]
            masks.weights[name] = keep_highest(flat, removal_count(flat.numel(), sparsity)).view(score.shape)
        return masks
