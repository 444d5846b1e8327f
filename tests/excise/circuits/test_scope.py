"""Global scope ranks neurons / query heads over all layers; row scope is the pruning selection."""

from __future__ import annotations

import pytest
import torch

from excise.circuits.scope import circuit_selection
from excise.models.adapters import get_adapter
from excise.models.loading import load_model
from excise.artifacts.scores import Scores


@pytest.fixture(scope="module")
def adapter(tiny_llama_dir):
    return get_adapter(load_model(tiny_llama_dir).model)


def test_global_neurons_follow_the_scores_across_layers(adapter):
    scores = Scores(neurons={0: torch.arange(128.0), 1: torch.arange(128.0) + 1000})  # layer 1 matters more
    masks = circuit_selection("neuron", "global")(scores, adapter, 0.5)
    assert not masks.neurons[0].any() and masks.neurons[1].all()
    uniform = circuit_selection("neuron", "row")(scores, adapter, 0.5)
    assert int(uniform.neurons[0].sum()) == int(uniform.neurons[1].sum()) == 64


def test_global_heads_remove_single_query_heads(adapter):
    scores = Scores(heads={0: torch.tensor([5.0, 1.0, 7.0, 8.0]), 1: torch.tensor([2.0, 6.0, 3.0, 4.0])})
    masks = circuit_selection("head", "global")(scores, adapter, 0.25)  # 2 of 8 query heads
    assert masks.heads[0].tolist() == [True, False, True, True]
    assert masks.heads[1].tolist() == [False, True, True, True]
