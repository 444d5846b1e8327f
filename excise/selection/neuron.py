"""Structured: whole MLP neurons, the same count in every layer.

Uniform per layer so a shrunk model keeps one MLP width and its HF config stays
valid (a ragged width is not loadable by vLLM). A removed neuron is its row in
every MLP input projection and its column in the output projection.
"""

from __future__ import annotations

from excise.artifacts.masks import MaskSet
from excise.selection.base import Selection, keep_highest, layer_unit_scores, removal_count


class NeuronSelection(Selection):
    name = "neuron"
    unit = "neuron"
    help = "whole MLP neurons, the same share in every layer"

    def select(self, scores, adapter, sparsity, params) -> MaskSet:
        masks = MaskSet()
        for layer in adapter.layers():
            size = layer.mlp.num_neurons
            score = layer_unit_scores(scores.neurons, layer.index, size, "neuron")
            masks.neurons[layer.index] = keep_highest(score, removal_count(size, sparsity))
        return masks
