"""Circuit discovery benchmark: SmolLM2, IOI, methods x granularities x search ablations.

For each scorer the scores are computed once, for all its granularities, on the reference
prompts; then for each granularity and each ablation used during the search (zero; mean
over the reference activations; corrupted = patched from the prompt's corrupted, names
replaced, counterpart) the sweep on the same reference prompts finds the sparsest circuit
keeping >= 90% of the dense logit difference, and that circuit is reported on held-out
prompts (disjoint): the circuit is chosen on one split and reported on the other. Every
size is a removed share counted on the mask (after rounding). Scopes are `excise
circuit`'s default for these granularities (neurons and query heads ranked globally).

    python benchmarks/circuits/run.py               # writes benchmarks/results/circuits.{md,json} + PNGs
    python benchmarks/circuits/run.py --minutes 9   # start no row after 9 minutes; rerun resumes

Finished rows (and each method's scores) are kept in /tmp/excise-bench-circuits/, so an
interrupted or chunked run resumes at the next row; the results are rewritten at the end of
every chunk from all finished rows, naming the rows still to run.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from benchmarks.results_files import resumed_state  # noqa: E402
from excise.circuits.discovery import CircuitConfig, circuit_from_curve, circuit_sweep, prepare_task, score_task
from excise.circuits.plots import plot_curves
from excise.circuits.sweep import CurvePoint
from excise.scoring import SCORERS
from excise.artifacts.scores import Scores

RESULTS = Path(__file__).resolve().parents[1] / "results"
STATE_DIR = Path("/tmp/excise-bench-circuits")
STATE = STATE_DIR / "state.json"
COMMAND = "python benchmarks/circuits/run.py"
RETAIN = 0.9
REFERENCE, HELDOUT, SEED, REFINE = 32, 64, 0, 3
#: variant -> (method, its scorer params given the search ablation, the granularities and the search ablations
#: it runs with, None for all). "lrp" is `excise circuit`'s default (`excise.circuits.config.LRP_CIRCUIT_DEFAULTS`):
#: for heads, relevance measured from what the search ablates to and ranked by its net effect over the prompts;
#: for neurons the paper's rule (|relevance| of each prompt, from zero), which "lrp-paper" is for heads and
#: "lrp-net" the head default applied to neurons, so the table shows why each default is what it is. EAP is the
#: field's baseline (patched from the corrupted prompt); "eap-mean" patches to the mean, EAP's counterpart of
#: mean ablation. gradient and wanda are the pruning peers. "+ greedy" rows add `excise circuit --greedy`: after
#: the sweep, every kept head is tried for removal, lowest score first (`excise.circuits.greedy`).
class Variant(NamedTuple):
    method: str
    params: Callable[[str], dict]  # the search ablation -> scorer params beyond `excise circuit`'s defaults
    units: tuple[str, ...] | None = None  # granularities it runs with (None: all its scorer supports)
    ablations: tuple[str, ...] | None = None  # search ablations it runs with (None: all)
    greedy: int = 0  # `--greedy`: units the pass after the sweep tries
    reference: int = 0  # reference prompts to score and search on (0: REFERENCE)


def _defaults(ablation: str) -> dict:
    return {}


GREEDY = 270  # every head a circuit keeps
VARIANTS = {
    "lrp": Variant("lrp", _defaults),
    "lrp-paper": Variant("lrp", lambda ablation: {"aggregation": "absolute", "baseline": "zero"}, ("head",)),
    "lrp-net": Variant("lrp", lambda ablation: {"aggregation": "net_absolute", "baseline": ablation}, ("neuron",)),
    "eap": Variant("eap", _defaults),
    "eap-mean": Variant("eap", lambda ablation: {"baseline": "mean"}, ablations=("mean",)),
    "gradient": Variant("gradient", _defaults),
    "wanda": Variant("wanda", _defaults),
    "lrp + greedy": Variant("lrp", _defaults, ("head",), ("mean", "corrupted"), GREEDY),
    "eap + greedy": Variant("eap", _defaults, ("head",), ("mean", "corrupted"), GREEDY),
    # the greedy pass fits the reference prompts: with twice as many, less of that carries over to held-out
    "lrp + greedy, 64 prompts": Variant("lrp", _defaults, ("head",), ("corrupted",), GREEDY, 64),
    "eap + greedy, 64 prompts": Variant("eap", _defaults, ("head",), ("corrupted",), GREEDY, 64),
}
ABLATIONS = ("zero", "mean", "corrupted")
#: granularity -> coarse grid of levels (bisection refines near the threshold)
GRIDS = {
    "head": [0.1, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.98],
    "neuron": [0.1, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.98],
}
#: granularity -> search ablations run, each circuit reported under its own. Neurons only with `excise
#: circuit`'s default (mean) and no weights (cutting one row-wise weight level takes up to ~27 s here, a sort
#: of 106M scores), so the run stays within ~25 minutes on the shared 2-core CPU
SEARCHES = {"head": ABLATIONS, "neuron": ("mean",)}
#: rows in the order they run: heads before neurons, LRP and EAP (the target's comparison) before the other
#: methods, and mean, corrupted, zero ablation in that order
PRIORITY = {"mean": 0, "corrupted": 1, "zero": 2}

logger = logging.getLogger("benchmarks.circuits")


def config_for(variant: str, granularity: str, ablation: str, *, heldout: int = HELDOUT, seed: int = SEED) -> CircuitConfig:
    spec = VARIANTS[variant]
    return CircuitConfig(
        method=spec.method, granularity=granularity, target="task_logit_diff", ablation=ablation,
        params=spec.params(ablation), greedy=spec.greedy, sparsities=GRIDS[granularity], refine_steps=REFINE,
        retain=RETAIN, reference=spec.reference or REFERENCE, heldout=heldout, seed=seed,
    )


def method_scores(context, config: CircuitConfig, granularities: list[str], state: dict) -> Scores:
    """The scores of the config's method and resolved parameters for all `granularities`, cached beside the
    state (with their summary)."""
    name = "-".join([config.method, *(f"{k}={v}" for k, v in sorted(config.params.items()))])
    if config.reference != REFERENCE:
        name += f"-reference={config.reference}"
    if config.seed != SEED:  # other reference prompts (the held-out count does not change the scores)
        name += f"-seed={config.seed}"
    folder = STATE_DIR / f"scores-{name}"
    if (folder / "summary.json").is_file():
        state["scoring"][name] = json.loads((folder / "summary.json").read_text())
        return Scores.load(folder)
    scored = score_task(config, context, granularities=set(granularities))
    folder.mkdir(parents=True, exist_ok=True)
    scored.scores.save(folder)
    state["scoring"][name] = scored.summary()
    (folder / "summary.json").write_text(json.dumps(scored.summary()))
    return scored.scores


def run_row(context, scores: Scores, variant: str, config: CircuitConfig) -> dict:
    started = time.perf_counter()
    sweep = circuit_sweep(config, context, scores)
    curve = sweep.run(config.sparsities, RETAIN * context.search_dense.logit_diff, config.refine_steps)
    result = circuit_from_curve(config, context, sweep, curve, {}, report=(config.ablation,))
    return {
        "method": variant, "scorer": config.method, "params": config.params, "granularity": config.granularity,
        "scope": config.scope, "ablation": config.ablation, "found": result.found, "chosen": result.chosen.as_dict(),
        "heldout": result.faithfulness, "curve": [p.as_dict() for p in curve], "grid": config.sparsities,
        "greedy_tries": config.greedy, "greedy": result.greedy, "reference": config.reference,
        "dense": context.dense.logit_diff, "search_dense": context.search_dense.logit_diff,
        "wall_s": time.perf_counter() - started,
    }


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _params(params: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(params.items())) or "-"


def table(rows: list[dict]) -> list[str]:
    lines = [
        "| method | scorer parameters | granularity (scope) | search ablation | removed at >= 90% (reference) "
        "| weights removed | held-out retained ± 95% | held-out accuracy | held-out normalized |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        c, h = r["chosen"], r["heldout"][r["ablation"]]
        size = f"**{_pct(c['sparsity'])}** ({c['removed']} of {c['units']})"
        if r.get("greedy"):
            size += f"; the sweep's {_pct(r['greedy']['swept']['sparsity'])}"
        if not r["found"]:
            size = f"none passes; best {_pct(c['sparsity'])} ({c['logit_diff'] / r['search_dense']:.0%} kept)"
        interval = 1.96 * h["logit_diff_sem"] / r["dense"]
        lines.append(
            f"| {r['method']} | {_params(r['params'])} | {r['granularity']} ({r['scope']}) | {r['ablation']} | {size} | {_pct(c['weight_sparsity'])} "
            f"| {h['retained']:.0%} ± {interval:.0%} | {h['accuracy']:.2f} | {h.get('normalized', float('nan')):.2f} |"
        )
    return lines


def removed(rows: list[dict], method: str, granularity: str, ablation: str) -> dict | None:
    return next((r for r in rows if (r["method"], r["granularity"], r["ablation"]) == (method, granularity, ablation)), None)


def comparison(rows: list[dict]) -> list[str]:
    """Per granularity and ablation: every method's removed share (found circuits), largest first."""
    lines = []
    for granularity in GRIDS:
        for ablation in SEARCHES[granularity]:
            found = [r for r in rows if r["granularity"] == granularity and r["ablation"] == ablation and r["found"]]
            ranked = sorted(found, key=lambda r: -r["chosen"]["sparsity"])
            if ranked:
                text = ", ".join(f"{r['method']} {_pct(r['chosen']['sparsity'])}" for r in ranked)
                lines.append(f"- {granularity}, {ablation}: {text}")
    return lines


def target_check(rows: list[dict]) -> list[str]:
    """The issue's target: with mean or corrupted ablation, LRP's head circuit keeps >= 90% of the dense
    held-out logit difference with <= 10% of the heads, and is no larger than the EAP-style baseline's (the
    smallest circuit of the EAP rows run with that ablation and the same search: with or without the greedy
    pass)."""
    lines = []
    for ablation in ("mean", "corrupted"):
        for variant in ("lrp", "lrp + greedy", "lrp + greedy, 64 prompts"):
            greedy, prompts = VARIANTS[variant].greedy > 0, VARIANTS[variant].reference or REFERENCE
            eaps = [r for r in rows if r["scorer"] == "eap" and r["granularity"] == "head" and r["ablation"] == ablation
                    and (r.get("greedy_tries", 0) > 0) == greedy and r.get("reference", REFERENCE) == prompts]
            eap_kept = min((1 - r["chosen"]["sparsity"] for r in eaps if r["found"]), default=float("nan"))
            lrp = removed(rows, variant, "head", ablation)
            if lrp is None:
                continue
            kept, retained = 1 - lrp["chosen"]["sparsity"], lrp["heldout"][ablation]["retained"]
            small = lrp["found"] and kept <= 0.10 and retained >= 0.9
            verdict = "**met**" if small and not kept > eap_kept else "**not met**"
            if small and not eaps:
                verdict = "size and held-out met; EAP with the same search not run yet"
            lines.append(
                f"- {ablation}, {variant}: keeps {_pct(kept)} of heads ({lrp['chosen']['units'] - lrp['chosen']['removed']}), "
                f"held-out {retained:.0%} of the dense logit difference; the smallest EAP circuit{' + greedy' if greedy else ''}"
                f"{f', {prompts} prompts,' if prompts != REFERENCE else ''} keeps {_pct(eap_kept) if eaps else '(not run)'}: "
                f"target {verdict}"
            )
    return lines


def load_state() -> dict:
    """Finished rows of an earlier run with the same prompts and threshold (this machine's state, else the
    committed results, so a chunked run goes on from a fresh clone), else a fresh start (a row is reused
    only with its own grid, see `main`)."""
    key = {"reference": REFERENCE, "heldout": HELDOUT, "seed": SEED, "refine": REFINE, "retain": RETAIN}
    state = resumed_state((STATE, RESULTS / "circuits.json"), json.loads(json.dumps(key)))
    if isinstance(state["rows"], list):  # the results file lists its rows; the state names them
        state["rows"] = {f"{r['method']}/{r['granularity']}/{r['ablation']}": r for r in state["rows"]}
    state.setdefault("scoring", {})
    return state


def write_results(context, rows: list[dict], state: dict, load_start: float, missing: list[str]) -> None:
    """The table, JSON and PNGs of the finished rows (a chunked run rewrites them after each chunk and
    lists the rows still to run)."""
    record = {
        "command": COMMAND, "machine": platform.machine(), "key": state["key"], "search_dense": context.search_dense.as_dict(),
        "dense": context.dense.as_dict(), "corrupted": context.corrupted.as_dict(), "scoring": state["scoring"],
        "rows": rows, "not_run": missing,
    }
    (RESULTS / "circuits.json").write_text(json.dumps(record, indent=1) + "\n")
    for granularity in GRIDS:
        for ablation in SEARCHES[granularity]:
            curves = {  # a "+ greedy" row's sweep is its scorer's own curve, drawn once
                r["method"]: [CurvePoint(**p) for p in r["curve"]]
                for r in rows if r["granularity"] == granularity and r["ablation"] == ablation and not r.get("greedy_tries")
            }
            if not curves:
                continue
            plot_curves(curves, context.search_dense.logit_diff, RETAIN, RESULTS / f"circuits_{granularity}_{ablation}.png",
                        title=f"IOI on SmolLM2, {granularity}s, {ablation}-ablated (reference prompts)")
    wall_s = sum(r["wall_s"] for r in rows) + sum(s["wall_seconds"] for s in state["scoring"].values())
    dense, corrupted = context.dense, context.corrupted
    lines = [
        "# Circuit discovery: IOI on SmolLM2-135M-Instruct (Q4_1-rounded GGUF weights, dequantized to fp32)",
        "",
        f"Command: `{COMMAND}` (resumable: run in chunks with `--minutes N`; {wall_s:.0f} s of scoring, sweeps and "
        f"held-out evaluation on a 2-core CPU, {platform.processor() or platform.machine()}; load average "
        f"{load_start:.1f} at the start of the last chunk, so times are noisy).",
        "",
        f"Task: generated IOI (8 templates, ABBA/BABA, seed {SEED}). Scores, mean activations and the choice of the level "
        f"come from {REFERENCE} reference prompts (dense logit diff {context.search_dense.logit_diff:.3f}); the chosen "
        f"circuit is reported on {HELDOUT} held-out prompts (disjoint): dense logit diff **{dense.logit_diff:.3f}**, "
        f"accuracy {dense.accuracy:.3f}; corrupted prompts (names replaced) {corrupted.logit_diff:.3f}. Rows named "
        "'64 prompts' score and search on 64 reference prompts instead, and are reported on the 64 held-out prompts "
        "of that split (retained is relative to that split's dense model).",
        "",
        "Sizes are removed shares counted on the masks: of all 270 query heads (30 layers x 9) or of all 46,080 MLP "
        "neurons; 'weights removed' is the share of all decoder linear weights that goes with them. The search "
        "ablation is what removed units carry while the level is chosen and when the circuit is reported: zero, their mean over the reference prompts, or (corrupted) their activation "
        "on the prompt's corrupted counterpart. Levels: "
        + "; ".join(f"{g} {GRIDS[g]}" for g in GRIDS)
        + f", then {REFINE} bisections. Searches: "
        + "; ".join(f"{g} {', '.join(SEARCHES[g])}" for g in GRIDS)
        + " (neurons with `excise circuit`'s default only, and no weight granularity, to keep the run short: cutting "
        "one row-wise weight level takes up to ~27 s here); the activation scorer is left out (it found no head "
        "circuit before). Methods: `lrp` is `excise circuit`'s default: for heads, relevance measured from the "
        "activation the search ablates to (baseline = the ablation) and ranked by its net effect over the prompts "
        "(net_absolute); for neurons the paper's rule (|relevance| of each prompt, from zero), which `lrp-paper` is "
        "for heads and `lrp-net` the head default applied to neurons; `eap` attribution patching from the "
        "corrupted prompt, `eap-mean` to the mean (only with mean ablation); gradient (|gradient x activation|) and "
        f"wanda; `+ greedy` rows add `excise circuit --greedy {GREEDY}`: after the sweep every kept head is tried for "
        "removal, lowest score first, and stays removed if the reference logit difference still passes (the size "
        f"cell also gives the sweep's circuit it started from). The sparsest level keeping >= {RETAIN:.0%} of the reference logit difference is "
        "chosen. Held-out retained = circuit / dense logit difference (± 1.96 standard errors over the held-out prompts, "
        "relative to dense); normalized = (circuit - corrupted) / (dense - corrupted).",
        "",
        *table([{"dense": dense.logit_diff, "search_dense": context.search_dense.logit_diff} | r for r in rows]),
        "",
        *([f"**Partial run**: {len(missing)} rows not run yet ({', '.join(missing)}); rerun the command to finish.", ""]
          if missing else []),
        "## Target: LRP's head circuit with <= 10% of heads keeps >= 90% held-out, no larger than EAP's",
        "",
        *target_check(rows),
        "",
        "## Removed share of each method's circuit (larger = smaller circuit)",
        "",
        *comparison(rows),
        "",
        "Curves (reference prompts, logit difference / dense vs share removed; a `+ greedy` row starts from its "
        "scorer's curve): "
        + ", ".join(f"`circuits_{g}_{a}.png`" for g, a in dict.fromkeys((r["granularity"], r["ablation"]) for r in rows))
        + "; raw numbers: `circuits.json`.",
        "",
    ]
    (RESULTS / "circuits.md").write_text("\n".join(lines))
    print("\n".join(lines))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, help="stop after the row that passes this many minutes (resume later)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    load_start = os.getloadavg()[0]
    started = time.perf_counter()
    RESULTS.mkdir(parents=True, exist_ok=True)
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    contexts = {REFERENCE: prepare_task(config_for("lrp", "head", "corrupted"))}
    context = contexts[REFERENCE]
    state = load_state()
    plan = [
        (v, g, a) for g in GRIDS for v, spec in VARIANTS.items()
        if g in SCORERS[spec.method].supported_granularities and (spec.units is None or g in spec.units)
        for a in SEARCHES[g] if spec.ablations is None or a in spec.ablations
    ]
    order = sorted(plan, key=lambda row: (
        row[1] != "head", VARIANTS[row[0]].method not in ("lrp", "eap"), VARIANTS[row[0]].greedy > 0, PRIORITY[row[2]]))

    def done(variant: str, granularity: str, ablation: str) -> bool:
        row = state["rows"].get(f"{variant}/{granularity}/{ablation}", {})
        config = config_for(variant, granularity, ablation)
        same = (row.get("grid"), row.get("params"), row.get("greedy_tries", 0), row.get("reference", REFERENCE))
        return same == (config.sparsities, config.params, config.greedy, config.reference)

    for variant, granularity, ablation in order:
        if done(variant, granularity, ablation):
            continue
        if args.minutes is not None and time.perf_counter() - started > 60 * args.minutes:
            break
        config = config_for(variant, granularity, ablation)
        granularities = [g for g in GRIDS if g in SCORERS[config.method].supported_granularities]
        if config.reference not in contexts:  # the same held-out count and seed, other reference prompts
            contexts[config.reference] = prepare_task(config)
        scores = method_scores(contexts[config.reference], config, granularities, state)
        key = f"{variant}/{granularity}/{ablation}"
        state["rows"][key] = run_row(contexts[config.reference], scores, variant, config)
        STATE.write_text(json.dumps(state, indent=1))
        logger.info("%s done (%.0f s into this chunk)", key, time.perf_counter() - started)
    rows = [state["rows"][f"{v}/{g}/{a}"] for v, g, a in plan if done(v, g, a)]
    missing = [f"{v}/{g}/{a}" for v, g, a in order if not done(v, g, a)]
    write_results(context, rows, state, load_start, missing)
    if missing:
        print(f"stopped after {args.minutes} minutes; {len(missing)} rows left; run again to resume")
    return 0


if __name__ == "__main__":
    sys.exit(main())
