"""Structured: whole attention heads, the same count in every layer.

Rule under grouped-query attention: the unit removed is a KV group (the query
heads sharing one key/value head), scored as the sum of its query heads' scores,
and the sparsity is the share of groups removed per layer (rounded half up: with
SmolLM2's 3 groups, 0.5 removes 2). Removing single query heads of a group would
leave its K/V projections in place and shrink nothing. Without GQA a group is
one head. Query heads of group g are heads g*per_group .. (g+1)*per_group-1, as
transformers' `repeat_kv` lays them out.
"""

from __future__ import annotations

from excise.artifacts.masks import MaskSet
from excise.scoring.base import kv_group_scores
from excise.selection.base import Selection, keep_highest, layer_unit_scores, removal_count


class HeadSelection(Selection):
    name = "head"
    unit = "head"
    help = "whole attention heads (whole KV groups under grouped-query attention)"

    def select(self, scores, adapter, sparsity, params) -> MaskSet:
        masks = MaskSet()
        for layer in adapter.layers():
            attention = layer.attention
            score = layer_unit_scores(scores.heads, layer.index, attention.num_heads, "head")
            groups = kv_group_scores(score, attention.heads_per_group)  # [num_kv_heads]
            kept_groups = keep_highest(groups, removal_count(attention.num_kv_heads, sparsity))
            masks.heads[layer.index] = kept_groups.repeat_interleave(attention.heads_per_group)  # [num_heads]
        return masks
