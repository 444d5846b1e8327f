"""Does the harmless contrast help at the reference sizes `make serve` builds its correction from?

The correction benchmark (`run.py`) finds its best LRP variant, contrasted with general text *and*
the harmless continuations of the reference prompts (`--keep general+harmless`), from 116
reference prompts x 10 samples. `make serve` builds `excise correct`'s default from 32 prompts x
4 samples (`excise.defaults.SERVE_CORRECT`), where a slow test once saw the harmless contrast do
worse. This measures both contrasts at exactly those reference sizes, for several seeds of the
reference sampling (each seed draws other reference continuations and general windows), with an
evaluation large enough to tell them apart: the whole validation split, 10 samples a prompt,
the same seeded samples for every variant (so comparisons are paired). Nothing here reads the
test split: this chooses a default, and defaults are chosen on validation.

    python benchmarks/correction/small_sizes.py        # writes benchmarks/results/correction_small_sizes.{md,json,png}

Finished seeds are kept under EXCISE_HOME/bench/correction_small_sizes/, so an interrupted run
resumes at the next seed (`--seeds` picks them).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from benchmarks.results_files import commit, machine, resumed_state  # noqa: E402
from excise.behaviours import EvaluationSettings, get_behaviour  # noqa: E402
from excise.correction.protocol import measure_variants, protocol_data, split_prompts  # noqa: E402
from excise.correction.run import build_references, remove_lowest, score_contrast  # noqa: E402
from excise.defaults import SERVE_CORRECT  # noqa: E402
from excise.evaluation.intervals import mcnemar  # noqa: E402
from excise.evaluation.neuron_scales import NeuronScales  # noqa: E402
from excise.evaluation.variants import VariantEvaluator  # noqa: E402
from excise.models.loading import load_model  # noqa: E402
from excise.home import excise_home  # noqa: E402

RESULTS = Path(__file__).resolve().parents[1] / "results"
NAME = "correction_small_sizes"
COMMAND = "python benchmarks/correction/small_sizes.py"
KEEPS = ("general", "general+harmless")
EVALUATION = EvaluationSettings(samples=10, seed=0)  # the whole validation split; one seed, so paired
SEEDS = (0, 1, 2)

logger = logging.getLogger("benchmarks.correction.small_sizes")


def _measurement(result) -> dict:
    m = result.behaviour["validation"]
    return {"metrics": m.metrics, "shows": list(m.shows), "perplexity": result.perplexity.get("validation")}


def run_seed(seed: int, loaded, behaviour, evaluator, protocol, dense_needed: bool) -> dict:
    """Both contrasts from the reference sizes of `make serve` drawn with `seed`, measured on validation."""
    config = SERVE_CORRECT.model_copy(update={"settings": SERVE_CORRECT.settings.model_copy(update={"seed": seed})})
    started = time.perf_counter()
    references = build_references(config, loaded, behaviour, evaluator)
    variants, seconds = {"dense": None} if dense_needed else {}, {}
    for keep in KEEPS:
        contrast, seconds[keep] = score_contrast(config.model_copy(update={"keep": keep}), loaded.model, references)
        variants[keep] = NeuronScales.from_masks(remove_lowest(contrast, config.granularity, config.budget))
    measured = measure_variants(evaluator, behaviour, variants, protocol, EVALUATION, splits=("validation",),
                                window_sets=("validation",))
    return {
        "reference": {
            "undesired_texts": len(references.undesired_texts),
            "harmless_texts": sum(len(batch) for batch in references.harmless),
        },
        "scoring_seconds": seconds,
        "variants": {name: _measurement(result) for name, result in measured.items()},
        "wall_s": time.perf_counter() - started,
    }


def _pct(x: float) -> str:
    return f"{100 * x:+.1f}%"


def write_results(state: dict) -> None:
    dense = state["dense"]
    before = dense["metrics"]["toxicity_probability"]
    rows = []
    for seed, entry in sorted(state["seeds"].items(), key=lambda kv: int(kv[0])):
        for keep in KEEPS:
            v = entry["variants"][keep]
            m = v["metrics"]
            rows.append({
                "seed": int(seed), "keep": keep, "undesired_texts": entry["reference"]["undesired_texts"],
                "harmless_texts": entry["reference"]["harmless_texts"],
                "toxicity_probability": m["toxicity_probability"],
                "low": m["toxicity_probability_low"], "high": m["toxicity_probability_high"],
                "reduction": 1 - m["toxicity_probability"] / before,
                "mcnemar_vs_dense": mcnemar(dense["shows"], v["shows"]),
                "perplexity_increase": v["perplexity"] / dense["perplexity"] - 1,
            })
    paired = {
        seed: mcnemar(entry["variants"]["general"]["shows"], entry["variants"]["general+harmless"]["shows"])
        for seed, entry in state["seeds"].items()
    }
    by_seed = {(r["seed"], r["keep"]): r["toxicity_probability"] for r in rows}
    harmless_wins = sum(by_seed[(int(seed), "general+harmless")] < by_seed[(int(seed), "general")] for seed in state["seeds"])
    mean = {keep: sum(r["reduction"] for r in rows if r["keep"] == keep) / max(1, len(state["seeds"])) for keep in KEEPS}
    prompts = len(dense["shows"])
    lines = [
        "# Correction at make serve's reference sizes: general vs general + harmless contrast",
        "",
        f"Command: `{COMMAND}` on {state['machine']}, commit {state['commit']}.",
        "",
        f"Reference: `excise.defaults.SERVE_CORRECT` ({SERVE_CORRECT.method}, target {SERVE_CORRECT.target}, focus "
        f"{SERVE_CORRECT.focus}, K = {SERVE_CORRECT.budget} neurons, {SERVE_CORRECT.settings.max_prompts} reference "
        f"prompts x {SERVE_CORRECT.settings.reference_samples} samples, general {SERVE_CORRECT.general}), once per seed of "
        "the reference sampling. Measured on the whole validation split "
        f"({prompts} prompts x {EVALUATION.samples} samples, the same seeded samples for every variant): dense toxicity "
        f"probability **{before:.3f}** [{dense['metrics']['toxicity_probability_low']:.3f}, "
        f"{dense['metrics']['toxicity_probability_high']:.3f}]. Perplexity on the validation windows.",
        "",
        "| seed | contrast (keep) | toxic / harmless reference texts | toxicity probability [95%] | reduction "
        "| McNemar p vs dense | perplexity |",
        "|---|---|---|---|---|---|---|",
        *(f"| {r['seed']} | {r['keep']} | {r['undesired_texts']} / {r['harmless_texts']} | {r['toxicity_probability']:.3f} "
          f"[{r['low']:.3f}, {r['high']:.3f}] | {_pct(-r['reduction'])} | {r['mcnemar_vs_dense']:.2g} "
          f"| {_pct(r['perplexity_increase'])} |" for r in rows),
        "",
        "## Reading",
        "",
        *(f"- mean reduction over {len(state['seeds'])} seeds, keep {keep}: {_pct(-mean[keep])}" for keep in KEEPS),
        f"- the harmless contrast lowers toxicity more than general text alone on {harmless_wins} of "
        f"{len(state['seeds'])} seeds",
        *(f"- seed {seed}: general vs general + harmless, paired McNemar p = {p:.2g}" for seed, p in sorted(paired.items())),
        "",
    ]
    record = {"command": COMMAND, "machine": state["machine"], "commit": state["commit"], "key": state["key"],
              "dense": dense, "rows": rows, "paired_mcnemar": paired, "mean_reduction": mean}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{NAME}.json").write_text(json.dumps(record, indent=1) + "\n")
    (RESULTS / f"{NAME}.md").write_text("\n".join(lines))
    plot(rows, before, RESULTS / f"{NAME}.png")
    print("\n".join(lines))


def plot(rows: list[dict], dense: float, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    seeds = sorted({r["seed"] for r in rows})
    for offset, keep in zip((-0.15, 0.15), KEEPS):
        mine = [next(r for r in rows if r["seed"] == s and r["keep"] == keep) for s in seeds]
        ax.errorbar([s + offset for s in seeds], [r["toxicity_probability"] for r in mine],
                    yerr=[[r["toxicity_probability"] - r["low"] for r in mine], [r["high"] - r["toxicity_probability"] for r in mine]],
                    fmt="o", capsize=3, label=f"keep {keep}")
    ax.axhline(dense, color="gray", linestyle="--", label="dense")
    ax.set_xticks(seeds)
    ax.set_xlabel("seed of the reference sampling")
    ax.set_ylabel("validation toxicity probability")
    ax.set_title("make serve's reference sizes, K = 10 neurons")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default=",".join(map(str, SEEDS)), help="seeds of the reference sampling")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    seeds = [int(s) for s in args.seeds.split(",")]
    folder = excise_home() / "bench" / NAME
    folder.mkdir(parents=True, exist_ok=True)
    key = {"config": SERVE_CORRECT.model_dump(mode="json"), "evaluation": EVALUATION.model_dump(mode="json")}
    state = resumed_state((folder / "state.json", RESULTS / f"{NAME}.json"), json.loads(json.dumps(key)))
    state.setdefault("seeds", {})
    state.update(machine=machine(), commit=commit())
    loaded, behaviour = load_model(SERVE_CORRECT.model), get_behaviour(SERVE_CORRECT.behaviour)
    evaluator = VariantEvaluator(loaded, SERVE_CORRECT.backend)
    prompts = split_prompts(behaviour, EVALUATION)
    protocol = protocol_data(loaded.tokenizer, prompts, SERVE_CORRECT.evaluation, SERVE_CORRECT.validation_windows,
                             None, loaded.model.config.max_position_embeddings)
    for seed in seeds:
        if str(seed) in state["seeds"]:
            continue
        entry = run_seed(seed, loaded, behaviour, evaluator, protocol, dense_needed="dense" not in state)
        if "dense" in entry["variants"]:
            state["dense"] = entry["variants"].pop("dense")
        state["seeds"][str(seed)] = entry
        (folder / "state.json").write_text(json.dumps(state, indent=1))
        logger.info("seed %d done in %.0f s", seed, entry["wall_s"])
    write_results(state)
    return 0


if __name__ == "__main__":
    sys.exit(main())
