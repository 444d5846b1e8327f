"""The circuit graph of hand-made masks: the documented nodes and edges."""

from __future__ import annotations

import pytest
import torch

from excise.circuits.graph import circuit_graph, graph_to_dot
from excise.artifacts.masks import MaskSet
from excise.models.adapters import get_adapter
from excise.models.loading import load_model


@pytest.fixture(scope="module")
def adapter(tiny_llama_dir):
    return get_adapter(load_model(tiny_llama_dir).model)


def test_structured_mask_gives_the_documented_graph(adapter):
    kept_1 = torch.zeros(128, dtype=torch.bool)
    kept_1[[3, 7]] = True
    masks = MaskSet(
        heads={0: torch.tensor([True, False, False, True]), 1: torch.zeros(4, dtype=torch.bool)},
        neurons={0: torch.zeros(128, dtype=torch.bool), 1: kept_1},
    )
    graph = circuit_graph(adapter, masks)
    ids = [n["id"] for n in graph["nodes"]]
    assert ids == ["input", "a0.h0", "a0.h3", "m1", "logits"]
    mlp = graph["nodes"][3]
    assert mlp["kept_neurons"] == 2 and mlp["neurons"] == [3, 7]
    assert graph["edges"] == [["input", "a0.h0"], ["input", "a0.h3"], ["a0.h0", "m1"], ["a0.h3", "m1"], ["m1", "logits"]]
    assert (graph["num_layers"], graph["num_heads"], graph["num_neurons"]) == (2, 4, 128)
    assert graph["removed"] == {"heads": 6, "neurons": 128 + 126}  # counted on the mask
    dot = graph_to_dot(graph)
    assert dot.startswith("digraph circuit {") and '"a0.h3" -> "m1";' in dot and "2/128 neurons" in dot


def test_weight_mask_removes_a_head_whose_output_columns_are_all_gone(adapter):
    layer = adapter.layers()[0]
    name = f"{adapter.module_name(layer.attention.o_proj)}.weight"
    o_mask = torch.ones_like(layer.attention.o_proj.weight, dtype=torch.bool)
    o_mask[:, 32:48] = False  # head 2 of 4 (head_dim 16)
    o_mask[0, 0] = False  # a single weight of head 0 gone: head 0 stays
    graph = circuit_graph(adapter, MaskSet(weights={name: o_mask}))
    heads = {n["id"]: n for n in graph["nodes"] if n["kind"] == "head"}
    assert set(heads) == {"a0.h0", "a0.h1", "a0.h3", "a1.h0", "a1.h1", "a1.h2", "a1.h3"}
    assert heads["a0.h0"]["kept_share"] == pytest.approx(1 - 1 / (64 * 16))
    assert ["a0.h3", "m0"] in graph["edges"] and ["m1", "logits"] in graph["edges"]
