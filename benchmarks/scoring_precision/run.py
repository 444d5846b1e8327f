"""Scores from a reduced-precision model: how far bfloat16 LRP scores and masks are from float32 ones.

    python benchmarks/scoring_precision/run.py [--calibration wiki:2x512] [--eval wiki:16x512] [--dtypes bfloat16]

SmolLM2-135M scores the same calibration windows with lrp (its pruning aggregation,
token_absolute) once with the model in float32 and once in each other dtype (a spawned
worker each, as `excise prune --dtype` would; the running sums are float32 in every dtype).
Reported per dtype: Spearman rank correlation of each weight tensor's scores with the
float32 ones (median and worst tensor), agreement of the 50 % row-wise masks (share of
weights with the same keep/remove decision, and the share of the float32 mask's removed
weights that the other mask also removes), and the perplexity of each mask applied to the
float32 model on held-out windows. Writes benchmarks/results/scoring_precision.{md,json,png}.

On CPUs without bfloat16 arithmetic (no AVX512-BF16 / AMX, as here) bfloat16 scoring is an
order of magnitude slower than float32 (the table's "scoring s"), which is why the calibration
set is small: the comparison needs the same windows in both precisions, not many of them.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root: benchmarks.results_files
from benchmarks.results_files import CpuWatch, figure, machine, save_figure, sharing, write_json  # noqa: E402
from excise.data.windows import DataSpec, token_windows
from excise.evaluation.perplexity import perplexity
from excise.models.adapters import get_adapter
from excise.models.loading import load_model
from excise.pruning.config import PRUNE_SCORER_DEFAULTS
from excise.scoring import score_in_worker
from excise.selection import get_selection

logger = logging.getLogger("benchmarks.scoring_precision")
RESULTS = Path(__file__).resolve().parents[1] / "results"
SPARSITY = 0.5


def _ranks(values: torch.Tensor) -> torch.Tensor:
    return values.flatten().argsort().argsort().double()


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    return torch.corrcoef(torch.stack([_ranks(a), _ranks(b)]))[0, 1].item()


def compare(reference, other, model) -> dict:
    """Rank correlation per tensor and agreement of the 50 % row-wise masks."""
    correlations = {key: spearman(reference.weights[key], other.weights[key]) for key in reference.weights}
    adapter = get_adapter(model)
    select = get_selection("row")
    kept_ref, kept_other = select(reference, adapter, SPARSITY).weights, select(other, adapter, SPARSITY).weights
    same = sum(int((kept_ref[k] == kept_other[k]).sum()) for k in kept_ref)
    total = sum(kept_ref[k].numel() for k in kept_ref)
    removed_ref = sum(int((~kept_ref[k]).sum()) for k in kept_ref)
    removed_both = sum(int((~kept_ref[k] & ~kept_other[k]).sum()) for k in kept_ref)
    values = sorted(correlations.values())
    return {
        "spearman_median": values[len(values) // 2],
        "spearman_min": values[0],
        "spearman_min_tensor": min(correlations, key=correlations.get),
        "spearman": correlations,
        "mask_agreement": same / total,
        "removed_overlap": removed_both / removed_ref,
    }


def masked_perplexity(scores, windows: torch.Tensor) -> float:
    loaded = load_model("smollm2")
    adapter = get_adapter(loaded.model)
    get_selection("row")(scores, adapter, SPARSITY).apply(adapter)
    return perplexity(loaded.model, windows, progress=False).perplexity


def markdown(result: dict) -> str:
    lines = [
        "# LRP scores from a reduced-precision model (SmolLM2-135M)",
        "",
        f"Command: `{result['command']}`. Machine: {result['machine']}; {sharing(result['cpu'])}. lrp (token_absolute), granularity weight, "
        f"{result['calibration']} calibration windows; masks {SPARSITY:.0%} row-wise; perplexity of each mask on the "
        f"float32 model, {result['evaluation']} (evaluation split). Dense perplexity {result['dense_perplexity']:.2f}.",
        "",
        "| model dtype while scoring | scoring s | Spearman per tensor: median | worst (tensor) | same keep/remove "
        "decision | float32's removed weights also removed | perplexity of its 50% mask |",
        "|---|---|---|---|---|---|---|",
    ]
    for dtype in sorted(result["dtypes"], key=lambda name: name != "float32"):  # float32, the reference, first
        row = result["dtypes"][dtype]
        if dtype == "float32":
            lines.append(f"| float32 | {row['seconds']:.0f} | 1 | 1 | 1 | 1 | {row['perplexity']:.2f} |")
            continue
        lines.append(
            f"| {dtype} | {row['seconds']:.0f} | {row['spearman_median']:.6f} | {row['spearman_min']:.6f} "
            f"({row['spearman_min_tensor']}) | {row['mask_agreement']:.4f} | {row['removed_overlap']:.4f} | "
            f"{row['perplexity']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path) -> None:
    others = {d: r for d, r in result["dtypes"].items() if d != "float32"}
    fig, (ax,) = figure()
    for dtype, row in others.items():
        ax.hist(list(row["spearman"].values()), bins=30, alpha=0.6, label=dtype)
    ax.set_xlabel("Spearman correlation with float32 scores, per weight tensor")
    ax.set_ylabel("tensors")
    ax.set_title("LRP scores in reduced precision vs float32 (SmolLM2)")
    ax.legend()
    save_figure(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calibration", default="wiki:2x512")
    parser.add_argument("--eval", default="wiki:16x512")
    parser.add_argument("--dtypes", nargs="+", default=["bfloat16"], choices=["bfloat16", "float16"])
    parser.add_argument("--render", action="store_true", help="measure nothing: rewrite md and png from the json")
    args = parser.parse_args()
    if args.render:
        result = json.loads((RESULTS / "scoring_precision.json").read_text())
        (RESULTS / "scoring_precision.md").write_text(markdown(result))
        plot(result, RESULTS / "scoring_precision.png")
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    watch = CpuWatch()
    loaded = load_model("smollm2")
    calibration = token_windows(loaded.tokenizer, DataSpec.parse(args.calibration, split="calibration", order="random"))
    evaluation = token_windows(loaded.tokenizer, DataSpec.parse(args.eval, split="evaluation", order="sequential"))
    dense = perplexity(loaded.model, evaluation, progress=False).perplexity
    rows, scores = {}, {}
    for dtype in ["float32", *args.dtypes]:
        started = time.perf_counter()
        scores[dtype] = score_in_worker("smollm2", calibration, "lrp", dtype=dtype, **PRUNE_SCORER_DEFAULTS["lrp"]).scores
        rows[dtype] = {"seconds": time.perf_counter() - started}
        if dtype != "float32":
            rows[dtype] |= compare(scores["float32"], scores[dtype], loaded.model)
        rows[dtype]["perplexity"] = masked_perplexity(scores[dtype], evaluation)
        logger.info("%s: %s", dtype, {k: v for k, v in rows[dtype].items() if k != "spearman"})
    command = (f"python benchmarks/scoring_precision/run.py --calibration {args.calibration} --eval {args.eval} "
               f"--dtypes {' '.join(args.dtypes)}")
    result = {"command": command, "machine": machine(), "calibration": args.calibration, "evaluation": args.eval,
              "sparsity": SPARSITY, "dense_perplexity": dense, "dtypes": rows, "cpu": watch.close()}
    write_json(RESULTS / "scoring_precision.json", result)
    (RESULTS / "scoring_precision.md").write_text(markdown(result))
    plot(result, RESULTS / "scoring_precision.png")
    logger.info("wrote %s", RESULTS / "scoring_precision.md")


if __name__ == "__main__":
    main()
