"""A neuron-level edit: MLP neuron j of layer l has its output scaled by `scales[l][j]`.

0 removes the neuron (what a neuron mask does), 1 leaves it alone, a value in between
dampens it (the AurA baseline). Either way it changes only the output projection's
columns, `W_out[:, j] *= s_j`, an exact low-rank change: a LoRA adapter
(`excise.export.lora.write_neuron_lora`) serves it on the dense engine.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from excise.artifacts.masks import MaskSet
from excise.models.adapters import ModelAdapter


@dataclass
class NeuronScales:
    scales: dict[int, torch.Tensor]  # layer index -> [num_neurons]

    @classmethod
    def from_masks(cls, masks: MaskSet) -> NeuronScales:
        return cls({index: kept.float() for index, kept in masks.neurons.items()})

    @classmethod
    def edited(cls, widths: dict[int, int], entries) -> NeuronScales:
        """Every layer's neurons at scale 1 except `entries`' `(layer, neuron, scale)`."""
        scales = {layer: torch.ones(width) for layer, width in widths.items()}
        for layer, neuron, scale in entries:
            scales[layer][neuron] = scale
        return cls(scales)

    def changed(self) -> int:
        return sum(int((scale != 1).sum()) for scale in self.scales.values())

    def touched(self, adapter: ModelAdapter) -> dict[str, torch.nn.Parameter]:
        """The parameters `apply` changes, by name (to save and restore them)."""
        layers = {layer.index: layer for layer in adapter.layers()}
        return {adapter.module_name(layers[i].mlp.output) + ".weight": layers[i].mlp.output.weight for i in self.scales}

    @torch.no_grad()
    def apply(self, adapter: ModelAdapter) -> None:
        for layer in adapter.layers():
            if layer.index in self.scales:
                weight = layer.mlp.output.weight  # [hidden, num_neurons]
                weight.mul_(self.scales[layer.index].to(device=weight.device, dtype=weight.dtype)[None, :])
