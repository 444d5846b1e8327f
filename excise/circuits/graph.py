"""The circuit as a graph of kept attention heads and MLP blocks, in JSON and Graphviz dot.

Format of `circuit.json` (version 1):

    {
      "format": "excise-circuit-graph", "version": 1,
      "num_layers": L, "num_heads": H, "num_neurons": N,
      "removed": {"heads": query heads removed, "neurons": MLP neurons removed} (of L*H, L*N),
      "nodes": [
        {"id": "input", "kind": "input"},
        {"id": "a{layer}.h{head}", "kind": "head", "layer": l, "head": h,
         "kept_share": share of the head's o_proj weights kept},
        {"id": "m{layer}", "kind": "mlp", "layer": l, "kept_neurons": count,
         "neurons": [indices of kept neurons], "kept_share": share of the down projection's weights kept},
        {"id": "logits", "kind": "logits"}
      ],
      "edges": [["input", "a0.h3"], ["a0.h3", "m0"], ...]
    }

A head is kept when some weight of its o_proj columns and of its KV group's v_proj
rows is kept (else it writes nothing, or only a constant, to the residual stream).
An MLP neuron is kept when some weight of its down-projection column and of its
row in every input projection is kept; `m{layer}` is a node when it keeps any
neuron. The nodes form stages in computation order (input, attention 0, MLP 0,
attention 1, ..., logits); every node of a stage has an edge to every node of the
next stage that has nodes (stages with none are skipped, the residual stream
carries past them). Unstructured (weight) masks keep almost every unit at
moderate sparsity; the `kept_share` fields say how much of each is left.
"""

from __future__ import annotations

from typing import Any

import torch

from excise.artifacts.masks import MaskSet
from excise.models.adapters import ModelAdapter

GRAPH_FORMAT = "excise-circuit-graph"
GRAPH_VERSION = 1


def _mask_of(weight_masks: dict[str, torch.Tensor], adapter: ModelAdapter, linear) -> torch.Tensor:
    name = f"{adapter.module_name(linear)}.weight"
    return weight_masks.get(name, torch.ones_like(linear.weight, dtype=torch.bool))


def layer_units(adapter: ModelAdapter, masks: MaskSet) -> list[dict[str, Any]]:
    """Per layer: kept heads and their share of kept o_proj weights, kept neurons and the down share."""
    weight_masks = masks.weight_masks(adapter)
    layers = []
    for layer in adapter.layers():
        attn = layer.attention
        o_cols = _mask_of(weight_masks, adapter, attn.o_proj).view(-1, attn.num_heads, attn.head_dim)  # [d, H, hd]
        v_rows = _mask_of(weight_masks, adapter, attn.v_proj).view(attn.num_kv_heads, -1)  # [G, hd * d]
        group_alive = v_rows.any(dim=1).repeat_interleave(attn.heads_per_group)  # [H]
        head_alive = o_cols.any(dim=2).any(dim=0) & group_alive
        head_share = o_cols.float().mean(dim=(0, 2))  # [H]
        down = _mask_of(weight_masks, adapter, layer.mlp.output)  # [d, N]
        neuron_alive = down.any(dim=0)
        for projection in layer.mlp.inputs:
            neuron_alive &= _mask_of(weight_masks, adapter, projection).any(dim=1)
        layers.append(
            {
                "heads": [h for h in range(attn.num_heads) if head_alive[h]],
                "head_share": head_share.tolist(),
                "neurons": torch.nonzero(neuron_alive).flatten().tolist(),
                "num_neurons": layer.mlp.num_neurons,
                "mlp_share": float(down.float().mean()),
            }
        )
    return layers


def circuit_graph(adapter: ModelAdapter, masks: MaskSet) -> dict[str, Any]:
    """The documented graph (see module docstring) of what `masks` keeps."""
    layers = layer_units(adapter, masks)
    nodes: list[dict[str, Any]] = [{"id": "input", "kind": "input"}]
    stages: list[list[str]] = [["input"]]
    for index, unit in enumerate(layers):
        heads = [
            {"id": f"a{index}.h{h}", "kind": "head", "layer": index, "head": h, "kept_share": unit["head_share"][h]}
            for h in unit["heads"]
        ]
        nodes += heads
        stages.append([n["id"] for n in heads])
        if unit["neurons"]:
            nodes.append(
                {
                    "id": f"m{index}",
                    "kind": "mlp",
                    "layer": index,
                    "kept_neurons": len(unit["neurons"]),
                    "neurons": unit["neurons"],
                    "kept_share": unit["mlp_share"],
                }
            )
            stages.append([f"m{index}"])
    nodes.append({"id": "logits", "kind": "logits"})
    stages.append(["logits"])
    stages = [stage for stage in stages if stage]
    edges = [[a, b] for before, after in zip(stages, stages[1:]) for a in before for b in after]
    first = adapter.layers()[0]
    return {
        "format": GRAPH_FORMAT,
        "version": GRAPH_VERSION,
        "num_layers": len(layers),
        "num_heads": first.attention.num_heads,
        "num_neurons": first.mlp.num_neurons,
        "removed": {
            "heads": sum(len(unit["head_share"]) - len(unit["heads"]) for unit in layers),
            "neurons": sum(unit["num_neurons"] - len(unit["neurons"]) for unit in layers),
        },
        "nodes": nodes,
        "edges": edges,
    }


def graph_to_dot(graph: dict[str, Any]) -> str:
    """Graphviz text: heads as ellipses, MLPs as boxes (label: kept neurons), layered top to bottom."""
    lines = ["digraph circuit {", "  rankdir=BT;", '  node [fontname="Helvetica"];']
    for node in graph["nodes"]:
        if node["kind"] == "mlp":
            label, shape = f"{node['id']}\\n{node['kept_neurons']}/{graph['num_neurons']} neurons", "box"
        elif node["kind"] == "head":
            label, shape = node["id"], "ellipse"
        else:
            label, shape = node["id"], "doubleoctagon"
        lines.append(f'  "{node["id"]}" [label="{label}", shape={shape}];')
    lines += [f'  "{a}" -> "{b}";' for a, b in graph["edges"]]
    lines.append("}")
    return "\n".join(lines) + "\n"
