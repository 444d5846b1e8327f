"""The circuit artifact: a folder written atomically.

- `masks.safetensors`: the circuit as a `MaskSet` (same format as pruning masks; True = kept);
- `circuit.json`: the graph of kept heads and MLPs (format in `correction.circuits.graph`);
- `circuit.dot`: the same graph for Graphviz (`dot -Tpng circuit.dot`);
- `curve.json`: the sweep (held-out task performance at each sparsity), the dense and
  corrupted baselines, the threshold and the chosen level;
- `curve.png`, `heatmap.png`: performance vs sparsity; kept share per layer and head / MLP;
- `README.md`: this card filled in; `manifest.json`: kind "circuit", provenance, metrics.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from correction.atomic import atomic_folder, write_json
from correction.circuits.discovery import CircuitResult
from correction.circuits.graph import graph_to_dot, layer_units
from correction.circuits.plots import plot_curves, plot_heatmap
from correction.manifest import Manifest, MethodInfo
from correction.models.identity import base_model_ref

logger = logging.getLogger(__name__)

GRAPH_FILE = "circuit.json"
DOT_FILE = "circuit.dot"
CURVE_FILE = "curve.json"
CURVE_PNG = "curve.png"
HEATMAP_PNG = "heatmap.png"
README_FILE = "README.md"


def label(result: CircuitResult) -> str:
    c = result.config
    return f"{c.method} {c.granularity}/{c.scope} ({c.target})"


def curve_record(result: CircuitResult) -> dict[str, Any]:
    return {
        "label": label(result),
        "dense": result.dense.as_dict(),
        "corrupted": result.corrupted.as_dict() if result.corrupted else None,
        "retain": result.config.retain,
        "threshold": result.threshold,
        "chosen": result.chosen.as_dict(),
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
            params={"scope": c.scope, "target": c.target, "retain": c.retain, "scorer": c.params},
        ),
        data={"task": {"name": c.task, "reference": c.reference, "heldout": c.heldout, "seed": c.seed}},
        sparsity=result.masks.sparsity_report(result.adapter),
        metrics={
            "dense": result.dense.as_dict(),
            "corrupted": result.corrupted.as_dict() if result.corrupted else None,
            "circuit": result.chosen.as_dict(),
            "faithfulness": result.faithfulness,
        },
        timings=result.timings,
        notes="config: " + c.model_dump_json(),
    )


def card(result: CircuitResult) -> str:
    nodes = result.graph["nodes"]
    heads = sum(n["kind"] == "head" for n in nodes)
    mlps = sum(n["kind"] == "mlp" for n in nodes)
    zero, mean = result.faithfulness["zero"], result.faithfulness["mean"]
    return (
        f"# Circuit: {result.config.task}, {label(result)}\n\n"
        f"Found by excise on `{result.config.model}`: the sparsest mask keeping >= {result.config.retain:.0%} of the "
        f"dense logit difference on {result.dense.count} held-out prompts.\n\n"
        f"- Sparsity: {result.chosen.sparsity:.4g} of {result.config.granularity}s "
        f"({result.chosen.weight_sparsity:.4f} of decoder linear weights)\n"
        f"- Logit difference: dense {result.dense.logit_diff:.3f}, circuit {zero['logit_diff']:.3f} with removed parts "
        f"zeroed ({zero['retained']:.0%}), {mean['logit_diff']:.3f} mean-ablated ({mean['retained']:.0%})\n"
        f"- Graph: {heads} attention heads, {mlps} MLP blocks\n\n"
        "Files: `masks.safetensors` (MaskSet, True = kept), `circuit.json` (nodes `a{layer}.h{head}`, "
        "`m{layer}` with kept neuron indices, `input`, `logits`; edges between kept nodes of consecutive stages), "
        "`circuit.dot` (Graphviz), `curve.json` / `curve.png` (held-out performance vs sparsity), "
        "`heatmap.png` (kept share per layer x head and per MLP), `manifest.json` (provenance, metrics).\n"
    )


def write_circuit(result: CircuitResult, out: Path, *, force: bool = False) -> Path:
    manifest = manifest_for(result)
    with atomic_folder(Path(out), force=force) as folder:
        result.masks.save(folder)
        write_json(folder / GRAPH_FILE, result.graph)
        (folder / DOT_FILE).write_text(graph_to_dot(result.graph))
        write_json(folder / CURVE_FILE, curve_record(result))
        plot_curves(
            {label(result): result.curve}, result.dense.logit_diff, result.config.retain, folder / CURVE_PNG,
            title=f"{result.config.task}: held-out logit difference vs sparsity",
        )
        plot_heatmap(layer_units(result.adapter, result.masks), folder / HEATMAP_PNG, title=f"circuit: {label(result)}")
        (folder / README_FILE).write_text(card(result))
        manifest.save(folder)
    logger.info("wrote %s", out)
    return Path(out)
