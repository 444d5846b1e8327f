"""The circuit artifact: a folder written atomically.

- `masks.safetensors`: the circuit as a `MaskSet` (same format as pruning masks; True = kept);
- `circuit.json`: the graph of kept heads and MLPs (format in `excise.circuits.graph`);
- `circuit.dot`: the same graph for Graphviz (`dot -Tpng circuit.dot`);
- `curve.json`: the sweep (task performance on the reference prompts at each level, by the
  share of units removed), the dense and corrupted baselines, the threshold, the chosen
  point, whether it keeps the threshold (`found`), the greedy pass (`greedy`: tries, removals,
  the sweep's circuit it started from; null without one) and its held-out faithfulness;
- `curve.png`, `heatmap.png`: performance vs sparsity; kept share per layer and head / MLP;
- `README.md`: this card filled in; `manifest.json`: kind "circuit", provenance, metrics.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from excise.artifacts.atomic import atomic_folder, write_json
from excise.circuits.discovery import CircuitResult
from excise.circuits.graph import graph_to_dot, layer_units
from excise.circuits.plots import plot_curves, plot_heatmap
from excise.artifacts.manifest import README_NAME, Manifest, MethodInfo
from excise.models.identity import base_model_ref

logger = logging.getLogger(__name__)

GRAPH_FILE = "circuit.json"
DOT_FILE = "circuit.dot"
CURVE_FILE = "curve.json"
CURVE_PNG = "curve.png"
HEATMAP_PNG = "heatmap.png"


def label(result: CircuitResult) -> str:
    c = result.config
    return f"{c.method} {c.granularity}/{c.scope} ({c.target}, {c.ablation}-ablated)"


def summary(result: CircuitResult) -> str:
    """One line: what the circuit removes and what it keeps on the held-out prompts."""
    c, chosen, heldout = result.config, result.chosen, result.heldout
    verdict = "" if result.found else (
        f"no level keeps {c.retain:.0%} of the dense logit difference on the reference prompts; the best level: "
    )
    greedy = f" (the greedy pass removed {result.greedy['removed']} after the sweep)" if result.greedy else ""
    return (
        f"{verdict}{chosen.removed} of {chosen.units} {c.granularity}s removed{greedy} ({chosen.sparsity:.4g}; "
        f"{chosen.weight_sparsity:.4f} of decoder linear weights), held-out logit diff {heldout['logit_diff']:.3f} "
        f"{c.ablation}-ablated ({heldout['retained']:.0%} of dense {result.dense.logit_diff:.3f}), "
        f"accuracy {heldout['accuracy']:.3f}"
    )


def curve_record(result: CircuitResult) -> dict[str, Any]:
    return {
        "label": label(result),
        "ablation": result.config.ablation,
        "search_dense": result.search_dense.as_dict(),
        "dense": result.dense.as_dict(),
        "corrupted": result.corrupted.as_dict() if result.corrupted else None,
        "retain": result.config.retain,
        "threshold": result.threshold,
        "found": result.found,
        "chosen": result.chosen.as_dict(),
        "greedy": result.greedy,
        "heldout": result.faithfulness,
        "points": [p.as_dict() for p in result.curve],
    }


def manifest_for(result: CircuitResult) -> Manifest:
    c = result.config
    return Manifest(
        kind="circuit",
        base_model=base_model_ref(c.model),
        method=MethodInfo(
            name=c.method,
            granularity=c.granularity,
            sparsity=result.chosen.sparsity,
            params={
                "scope": c.scope, "target": c.target, "ablation": c.ablation, "retain": c.retain, "scorer": c.params,
                "level": result.chosen.level, "removed": result.chosen.removed, "units": result.chosen.units,
                "found": result.found,
            },
        ),
        data={"task": {"name": c.task, "reference": c.reference, "heldout": c.heldout, "seed": c.seed}},
        sparsity=result.masks.sparsity_report(result.adapter),
        metrics={
            "dense": result.dense.as_dict(),
            "corrupted": result.corrupted.as_dict() if result.corrupted else None,
            "search_dense": result.search_dense.as_dict(),
            "circuit": result.chosen.as_dict(),
            "greedy": result.greedy,
            "faithfulness": result.faithfulness,
        },
        timings=result.timings,
        config=c.model_dump(mode="json"),
    )


def card(result: CircuitResult) -> str:
    nodes = result.graph["nodes"]
    heads = sum(n["kind"] == "head" for n in nodes)
    mlps = sum(n["kind"] == "mlp" for n in nodes)
    c = result.config
    faithful = ", ".join(f"{mode}-ablated {e['logit_diff']:.3f} ({e['retained']:.0%})" for mode, e in result.faithfulness.items())
    found = (
        f"the sparsest mask keeping >= {c.retain:.0%} of the dense logit difference on {result.search_dense.count} "
        f"reference prompts with removed parts {c.ablation}-ablated"
        if result.found
        else f"no level kept {c.retain:.0%} of the dense logit difference, so this is the best level found"
    )
    return (
        f"# Circuit: {c.task}, {label(result)}\n\n"
        f"Found by excise on `{c.model}`: {found}, reported on {result.dense.count} held-out prompts.\n\n"
        f"- Removed: {summary(result)}\n"
        f"- Held-out logit difference: dense {result.dense.logit_diff:.3f}; circuit {faithful}\n"
        f"- Graph: {heads} attention heads, {mlps} MLP blocks\n\n"
        "Files: `masks.safetensors` (MaskSet, True = kept), `circuit.json` (nodes `a{layer}.h{head}`, "
        "`m{layer}` with kept neuron indices, `input`, `logits`; edges between kept nodes of consecutive stages), "
        "`circuit.dot` (Graphviz), `curve.json` / `curve.png` (reference-prompt performance vs share removed), "
        "`heatmap.png` (kept share per layer x head and per MLP), `manifest.json` (provenance, metrics). "
        f"Evaluate it on prompts of your own: `excise eval task --model {c.model} --mask DIR --task FILE.jsonl`.\n"
    )


def write_circuit(result: CircuitResult, out: Path, *, force: bool = False) -> Path:
    manifest = manifest_for(result)
    with atomic_folder(Path(out), force=force) as folder:
        result.masks.save(folder)
        write_json(folder / GRAPH_FILE, result.graph)
        (folder / DOT_FILE).write_text(graph_to_dot(result.graph))
        write_json(folder / CURVE_FILE, curve_record(result))
        plot_curves(
            {label(result): result.curve}, result.search_dense.logit_diff, result.config.retain, folder / CURVE_PNG,
            title=f"{result.config.task}: reference-prompt logit difference vs share removed",
        )
        plot_heatmap(layer_units(result.adapter, result.masks), folder / HEATMAP_PNG, title=f"circuit: {label(result)}")
        (folder / README_NAME).write_text(card(result))
        manifest.save(folder)
    logger.info("wrote %s", out)
    return Path(out)
