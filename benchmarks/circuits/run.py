"""Circuit discovery benchmark: SmolLM2, IOI, every method x granularity, in one run.

For each scorer (and, for the two that start from a target, both targets: the correct
token's logit and the logit difference), the scores are computed once for all its
granularities on the same reference prompts; then for each granularity the sparsity
sweep on the same held-out prompts finds the sparsest circuit keeping >= 90% of the
dense logit difference, and its faithfulness (zero- and mean-ablation).
Neurons and query heads are ranked globally over the model (a circuit need not use
every layer); weights row-wise (the pruning default). Prompt counts are `excise circuit`'s
defaults (32 reference, 64 held-out).

    python benchmarks/circuits/run.py            # writes benchmarks/results/circuits.md + PNGs

Finished settings are kept in /tmp/excise-bench-circuits/state.json (with the wall time
they took), so an interrupted run resumes at the next setting.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import sys
import time
from pathlib import Path

from correction.circuits.discovery import CircuitConfig, circuit_from_curve, circuit_sweep, prepare_task, score_task
from correction.circuits.plots import plot_curves
from correction.circuits.sweep import CurvePoint
from correction.errors import ExciseError
from correction.scoring import SCORERS

RESULTS = Path(__file__).resolve().parents[1] / "results"
STATE = Path("/tmp/excise-bench-circuits/state.json")
COMMAND = "python benchmarks/circuits/run.py"
RETAIN = 0.9
REFERENCE, HELDOUT, SEED, REFINE = 32, 64, 0, 1
#: (method, target); wanda and activation do not use a target
SETTINGS = [
    ("lrp", "task_logit_diff"),
    ("lrp", "task_correct"),
    ("gradient", "task_logit_diff"),
    ("wanda", None),
    ("activation", None),
]
#: granularity -> (scope, coarse grid); bisection refines near the threshold
GRIDS = {
    "head": ("global", [0.1, 0.3, 0.5, 0.7, 0.9]),
    "neuron": ("global", [0.2, 0.5, 0.7, 0.9]),
    "weight": ("row", [0.1, 0.2, 0.3, 0.5]),
}

logger = logging.getLogger("benchmarks.circuits")


def config_for(method: str, target: str | None, granularity: str) -> CircuitConfig:
    scope, grid = GRIDS[granularity]
    return CircuitConfig(
        method=method, granularity=granularity, scope=scope, target=target or "task_logit_diff", sparsities=grid,
        refine_steps=REFINE, retain=RETAIN, reference=REFERENCE, heldout=HELDOUT, seed=SEED,
    )


def run_setting(context, method: str, target: str | None, wanted: list[str]) -> list[dict]:
    granularities = [g for g in wanted if g in SCORERS[method].supported_granularities]
    base = config_for(method, target, granularities[0])
    started = time.perf_counter()
    scored = score_task(base, context.loaded.model, context.batches["reference"], granularities=set(granularities))
    rows = []
    for granularity in granularities:
        config = config_for(method, target, granularity)
        sweep = circuit_sweep(config, context, scored.scores)
        curve = sweep.run(config.sparsities, RETAIN * context.dense.logit_diff, config.refine_steps)
        row = {"method": method, "target": target or "-", "granularity": granularity, "scope": config.scope,
               "curve": [p.as_dict() for p in curve], "scoring_s": scored.wall_seconds}
        try:
            result = circuit_from_curve(config, context, sweep, curve, scored.summary())
            row |= {"chosen": result.chosen.as_dict(), "faithfulness": result.faithfulness}
        except ExciseError as error:
            row["error"] = str(error)
        logger.info("%s/%s/%s done (%.0f s so far)", method, target, granularity, time.perf_counter() - started)
        rows.append(row)
    return rows


def table(rows: list[dict]) -> list[str]:
    lines = [
        "| method | target | granularity (scope) | sparsest level >= 90% | weights removed | logit diff (zero-abl.) "
        "| accuracy | faithful: zero / mean (retained) | normalized zero / mean |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        head = f"| {r['method']} | {r['target']} | {r['granularity']} ({r['scope']}) "
        if "chosen" not in r:
            best = max(r["curve"], key=lambda p: p["logit_diff"])
            lines.append(head + f"| not reached (best {best['logit_diff']:.2f} at {best['sparsity']:.3g}) | | | | | |")
            continue
        c, f = r["chosen"], r["faithfulness"]
        # the top of the grid still passing means the real crossing lies higher
        at_top = "≥ " if c["sparsity"] >= max(p["sparsity"] for p in r["curve"]) else ""
        norm = f"{f['zero'].get('normalized', float('nan')):.2f} / {f['mean'].get('normalized', float('nan')):.2f}"
        lines.append(
            head + f"| **{at_top}{c['sparsity']:.3f}** | {c['weight_sparsity']:.3f} | {c['logit_diff']:.2f} | {c['accuracy']:.2f} "
            f"| {f['zero']['retained']:.0%} / {f['mean']['retained']:.0%} | {norm} |"
        )
    return lines


def verdict(rows: list[dict]) -> list[str]:
    """Per granularity: each method under its best setting (sparsest level over targets), sparsest first."""
    lines = []
    for granularity in GRIDS:
        best: dict[str, float] = {}
        for r in rows:
            if r["granularity"] == granularity and "chosen" in r:
                best[r["method"]] = max(best.get(r["method"], 0.0), r["chosen"]["sparsity"])
        if best:
            top = max(best.values())
            ranking = ", ".join(f"{m} {s:.3f}" for m, s in sorted(best.items(), key=lambda kv: -kv[1]))
            winners = " and ".join(m for m, s in best.items() if s == top)
            lines.append(f"- {granularity}: {ranking}; sparsest: **{winners}**")
    return lines


def load_state() -> dict:
    """Finished settings of an earlier run with the same settings, else a fresh start."""
    key = {"reference": REFERENCE, "heldout": HELDOUT, "seed": SEED, "refine": REFINE, "grids": GRIDS, "retain": RETAIN}
    if STATE.is_file():
        state = json.loads(STATE.read_text())
        if state.get("key") == json.loads(json.dumps(key)):
            return state
        logger.warning("%s is from other settings; starting over", STATE)
    return {"key": key, "settings": {}}


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    load_start = os.getloadavg()[0]
    RESULTS.mkdir(parents=True, exist_ok=True)
    wanted = list(GRIDS)
    context = prepare_task(config_for("wanda", None, "head"))
    state = load_state()
    for method, target in SETTINGS:
        key = f"{method}/{target}"
        if key not in state["settings"]:
            started = time.perf_counter()
            rows = run_setting(context, method, target, wanted)
            state["settings"][key] = {"rows": rows, "wall_s": time.perf_counter() - started}
            STATE.parent.mkdir(parents=True, exist_ok=True)
            STATE.write_text(json.dumps(state, indent=1))
    rows = [row for setting in state["settings"].values() for row in setting["rows"]]
    record = {"dense": context.dense.as_dict(), "corrupted": context.corrupted.as_dict(), "rows": rows}
    (RESULTS / "circuits.json").write_text(json.dumps(record, indent=1) + "\n")
    wall_s = sum(setting["wall_s"] for setting in state["settings"].values())
    for granularity in wanted:
        curves = {}
        for r in rows:
            if r["granularity"] == granularity:
                curves[f"{r['method']} ({r['target']})"] = [CurvePoint(**p) for p in r["curve"]]
        plot_curves(curves, context.dense.logit_diff, RETAIN, RESULTS / f"circuits_{granularity}.png",
                    title=f"IOI on SmolLM2, {granularity}s ({GRIDS[granularity][0]})")
    dense, corrupted = context.dense, context.corrupted
    lines = [
        "# Circuit discovery: IOI on SmolLM2-135M-Instruct (Q4_1-rounded weights, see DESIGN.md)",
        "",
        f"Command: `{COMMAND}` ({wall_s:.0f} s of scoring and sweeps on a 2-core CPU, "
        f"{platform.processor() or platform.machine()}; load average {load_start:.1f} at start, "
        f"{os.getloadavg()[0]:.1f} at the end, so times are noisy).",
        "",
        f"Task: generated IOI (8 templates, ABBA/BABA, seed {SEED}); scores from {REFERENCE} reference prompts, every "
        f"evaluation on {HELDOUT} held-out prompts (disjoint). Dense model: logit diff **{dense.logit_diff:.3f}**, "
        f"accuracy {dense.accuracy:.3f}, top-1 {dense.top1:.3f}; corrupted prompts (names replaced): logit diff "
        f"{corrupted.logit_diff:.3f}. Threshold: {RETAIN:.0%} of the dense logit difference = {RETAIN * dense.logit_diff:.3f}.",
        "",
        f"Sparsity = share of the granularity's units removed (weights row-wise; neurons and query heads ranked globally). "
        f"Coarse grids {', '.join(f'{g}: {GRIDS[g][1]}' for g in wanted)}, then {REFINE} bisections between the sparsest "
        "passing and the next failing level. 'weights removed' is the share of all decoder linear weights. Faithfulness: "
        "the circuit's held-out logit difference / the dense model's, with the removed parts zeroed or set to their mean "
        "over the reference activations; normalized = (circuit - corrupted) / (dense - corrupted).",
        "",
        *table(rows),
        "",
        "## Does LRP find the sparsest circuits?",
        "",
        *verdict(rows),
        "",
        "Curves: " + ", ".join(f"`circuits_{g}.png`" for g in wanted) + "; raw numbers: `circuits.json`.",
        "",
    ]
    (RESULTS / "circuits.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
