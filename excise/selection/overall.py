"""Global: one threshold over all prunable weights of the model; tensors end up unevenly sparse.

Only meaningful when scores are comparable across tensors (LRP relevance is, by
conservation; magnitudes are not across differently scaled layers).
"""

from __future__ import annotations

import torch

from excise.artifacts.masks import MaskSet
from excise.selection.base import Selection, prunable_weight_scores, removal_count


def lowest_flat(flat: torch.Tensor, remove: int) -> torch.Tensor:
    """Bool `[n]`, True at the `remove` lowest entries (ties: lower index first).

    `kthvalue` plus a pass over the ties instead of a full argsort: an argsort of
    100M+ scores would need an int64 index per weight.
    """
    chosen = torch.zeros_like(flat, dtype=torch.bool)
    if remove == 0:
        return chosen
    threshold = torch.kthvalue(flat, remove).values
    chosen |= flat < threshold
    missing = remove - int(chosen.sum())
    ties = (flat == threshold).nonzero().squeeze(1)[:missing]  # [missing], in index order
    chosen[ties] = True
    return chosen


class GlobalSelection(Selection):
    name = "global"
    unit = "weight"
    help = "one score threshold over all prunable weights"

    def select(self, scores, adapter, sparsity, params) -> MaskSet:
        weights = prunable_weight_scores(scores, adapter)
        flat = torch.cat([score.flatten() for score in weights.values()])  # [total prunable weights]
        removed = lowest_flat(flat, removal_count(flat.numel(), sparsity))
        masks = MaskSet()
        for (name, score), part in zip(weights.items(), removed.split([s.numel() for s in weights.values()])):
            masks.weights[name] = ~part.view(score.shape)
        return masks
