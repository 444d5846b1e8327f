"""Masks: which weights, MLP neurons and attention heads a pruned model keeps.

`True` means kept. A `MaskSet` is a `UnitTensors` (`excise.artifacts.units`):
- `weights`: per weight tensor, same shape as the weight;
- `neurons`: per layer index, `[num_neurons]` over the MLP's hidden units;
- `heads`: per layer index, `[num_heads]` over query heads (a removed KV group
  is all of its query heads removed).

On disk (`masks.safetensors`) every mask is bit-packed (numpy `packbits`, 8 per
byte) under `weight/<name>`, `neuron/<layer>` or `head/<layer>`; the shapes are
in the file's metadata. Structured masks are applied exactly: a removed neuron's
input rows and output column are zeroed, a removed head's query rows and output
columns (and its KV group's key/value rows once the whole group is removed).
Applying takes the model through its family adapter (`excise.models.adapters`),
which this module only receives, never imports.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from safetensors.torch import save_file

from excise.artifacts.units import UnitTensors, read_unit_file
from excise.errors import ExciseError

if TYPE_CHECKING:
    from excise.models.adapters import ModelAdapter

MASKS_FILE = "masks.safetensors"
_SHAPES_KEY = "shapes"


def pack_bits(mask: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(np.packbits(mask.detach().cpu().numpy().astype(bool).ravel()))


def unpack_bits(packed: torch.Tensor, shape: list[int]) -> torch.Tensor:
    count = int(np.prod(shape))
    bits = np.unpackbits(packed.numpy(), count=count).astype(bool)
    return torch.from_numpy(bits).view(*shape)


def matching_parameter(params: dict[str, torch.nn.Parameter], name: str, shape, what: str) -> torch.nn.Parameter:
    """The model's parameter `name`, refusing a name it lacks or a shape it does not have."""
    if name not in params:
        raise ExciseError(f"the {what} names {name!r}, which this model does not have; it is for another model")
    if params[name].shape != shape:
        raise ExciseError(f"{what} for {name} has shape {tuple(shape)} but the model's weight is {tuple(params[name].shape)}")
    return params[name]


class MaskSet(UnitTensors):
    def only_neurons(self) -> bool:
        """True when the mask removes nothing but whole MLP neurons (expressible as a LoRA)."""
        return bool(self.neurons) and not self.weights and not self.heads

    # ---- persistence -------------------------------------------------------------------------
    def save(self, folder: Path) -> Path:
        entries = self.entries()
        shapes = {key: list(mask.shape) for key, mask in entries.items()}
        path = Path(folder) / MASKS_FILE
        save_file({key: pack_bits(mask) for key, mask in entries.items()}, path, metadata={_SHAPES_KEY: json.dumps(shapes)})
        return path

    @classmethod
    def load(cls, folder: Path) -> MaskSet:
        path = Path(folder) / MASKS_FILE
        if not path.is_file():
            raise ExciseError(f"{folder} has no {MASKS_FILE}")
        packed, metadata = read_unit_file(path, "mask file")
        try:
            shapes = json.loads(metadata[_SHAPES_KEY])
            return cls.from_entries({key: unpack_bits(bits, shapes[key]) for key, bits in packed.items()}, path)
        except (KeyError, json.JSONDecodeError) as error:
            raise ExciseError(f"{path} is not a readable mask file ({error})") from error

    # ---- use ---------------------------------------------------------------------------------
    def weight_masks(self, adapter: ModelAdapter) -> dict[str, torch.Tensor]:
        """Every mask expressed on weight tensors (structured masks expanded), combined with AND."""
        params = dict(adapter.model.named_parameters())
        combined: dict[str, torch.Tensor] = {name: mask.clone() for name, mask in self.weights.items()}

        def restrict(weight: torch.nn.Parameter, rows=None, cols=None) -> None:
            name = next(n for n, p in params.items() if p is weight)
            mask = combined.setdefault(name, torch.ones_like(weight, dtype=torch.bool))
            if rows is not None:
                mask[~rows] = False
            if cols is not None:
                mask[:, ~cols] = False

        for layer in adapter.layers():
            if layer.index in self.neurons:
                kept = self.neurons[layer.index]
                for projection in layer.mlp.inputs:
                    restrict(projection.weight, rows=kept)
                restrict(layer.mlp.output.weight, cols=kept)
            if layer.index in self.heads:
                attention = layer.attention
                kept_dims = self.heads[layer.index].repeat_interleave(attention.head_dim)
                restrict(attention.q_proj.weight, rows=kept_dims)
                restrict(attention.o_proj.weight, cols=kept_dims)
                groups = self.heads[layer.index].view(attention.num_kv_heads, -1).any(dim=1)
                kept_kv = groups.repeat_interleave(attention.head_dim)
                restrict(attention.k_proj.weight, rows=kept_kv)
                restrict(attention.v_proj.weight, rows=kept_kv)
        return combined

    @torch.no_grad()
    def apply(self, adapter: ModelAdapter) -> None:
        """Zero every removed weight of the adapter's model in place (and biases of removed units)."""
        params = dict(adapter.model.named_parameters())
        for name, mask in self.weight_masks(adapter).items():
            param = matching_parameter(params, name, mask.shape, "mask")
            param.mul_(mask.to(param.device, param.dtype))
        self._zero_unit_biases(adapter)

    def _zero_unit_biases(self, adapter: ModelAdapter) -> None:
        for layer in adapter.layers():
            if layer.index in self.neurons:
                for projection in layer.mlp.inputs:
                    if projection.bias is not None:
                        projection.bias.mul_(self.neurons[layer.index].to(projection.bias.dtype))
            if layer.index in self.heads and layer.attention.q_proj.bias is not None:
                kept = self.heads[layer.index].repeat_interleave(layer.attention.head_dim)
                layer.attention.q_proj.bias.mul_(kept.to(layer.attention.q_proj.bias.dtype))

    def sparsity_report(self, adapter: ModelAdapter) -> dict[str, float]:
        """Share of weights removed: `overall` over all prunable linears, and per masked tensor."""
        masks = self.weight_masks(adapter)
        report: dict[str, float] = {}
        removed = total = 0
        for name, module in adapter.prunable_linears().items():
            key = f"{name}.weight"
            numel = module.weight.numel()
            zeros = int((~masks[key]).sum()) if key in masks else 0
            removed += zeros
            total += numel
            if key in masks:
                report[key] = zeros / numel
        report["overall"] = removed / total if total else 0.0
        return report
