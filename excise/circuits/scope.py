"""Which selection cuts a circuit's mask, by granularity and scope.

- `row` scope: the pruning selections (weights: uniform sparsity per output row;
  neurons / heads: the same share in every layer).
- `global` scope: one ranking over the whole model (weights: `global` selection;
  neurons and query heads: ranked across layers here), so a circuit can keep many
  units in the layers that do the task and none elsewhere. A circuit removes single
  query heads (their q rows and o_proj columns); a KV group's K/V go only once all of
  its query heads are gone.

The default (`default_scope`) is global for neurons and heads: per layer, a level is
rounded to a whole count of each layer's groups, and with SmolLM2's 3 KV groups a layer
every level below 1/6 rounds to no removal at all, and 0.2 to 0.4 all to one group, so
levels would not mean what they say. Weights default to row (the pruning selection).
"""

from __future__ import annotations

import torch

from excise.artifacts.masks import MaskSet
from excise.selection import Selection, get_selection, keep_highest, removal_count
from excise.selection.base import layer_unit_scores

def default_scope(granularity: str) -> str:
    return "row" if granularity == "weight" else "global"


#: unit -> (field of Scores / MaskSet, units per layer)
UNIT_FIELDS = {
    "neuron": ("neurons", lambda layer: layer.mlp.num_neurons),
    "head": ("heads", lambda layer: layer.attention.num_heads),
}


class GlobalUnitSelection(Selection):
    """Neurons or query heads ranked over all layers at once."""

    name = "global-unit"
    unit = "neuron"
    help = "MLP neurons or query heads ranked over all layers"

    def __init__(self, unit: str):
        self.unit = unit
        self.name = f"global-{unit}"

    def select(self, scores, adapter, sparsity, params) -> MaskSet:
        field, size = UNIT_FIELDS[self.unit]
        per_layer = {
            layer.index: layer_unit_scores(getattr(scores, field), layer.index, size(layer), self.unit)
            for layer in adapter.layers()
        }
        layers = sorted(per_layer)
        flat = torch.cat([per_layer[layer] for layer in layers])  # [units over all layers]
        keep = keep_highest(flat, removal_count(flat.numel(), sparsity))
        return MaskSet(**{field: dict(zip(layers, keep.split([per_layer[layer].numel() for layer in layers])))})


_GLOBAL_UNITS = {unit: GlobalUnitSelection(unit) for unit in UNIT_FIELDS}
_ROW_NAMES = {"weight": "row", "neuron": "neuron", "head": "head"}


def circuit_selection(granularity: str, scope: str) -> Selection:
    if scope == "row":
        return get_selection(_ROW_NAMES[granularity])
    return get_selection("global") if granularity == "weight" else _GLOBAL_UNITS[granularity]
