"""Pruning benchmark: SmolLM2-135M pruned by magnitude, wanda, sparsegpt, gradient and LRP variants.

One run, the same windows for every row. Each scoring method is scored once (in a worker
process) and every level is cut from the same scores; SparseGPT and the reconstruction
rows re-fit the kept weights on the first 32 of the 64 x 512 reference windows.
- reference: `--calibration` windows of the wiki calibration split (4x rows: a superset);
- validation: 8 further windows of that split, never scored on, used only to choose the
  per-layer allocation's delta (nothing is tuned on the evaluation windows);
- report: perplexity on wiki 64 x 512 (the standard protocol) and news 16 x 512 (half the
  news evaluation split), and IOI accuracy on 128 held-out prompts.

    python benchmarks/pruning/run.py                # the full run (~60 min on an idle 2-core CPU)
    python benchmarks/pruning/run.py --budget-minutes 12   # the same in resumable pieces
    python benchmarks/pruning/run.py --quick        # a smoke run on small sizes (~3 min)

Writes benchmarks/results/pruning.{md,json,png} and pruning_reference.png. Finished
measurements are kept in `--work` and in the results JSON, so an interrupted run resumes where it
stopped, also from a fresh clone.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[2])]  # report, benchmarks
import report  # noqa: E402
from bench import LEVELS, PRIMARY, Bench, OutOfTime, variants  # noqa: E402

from benchmarks.results_files import resumed_state  # noqa: E402
from excise.home import excise_home  # noqa: E402

logger = logging.getLogger("benchmarks.pruning")

RESULTS = Path(__file__).resolve().parents[1] / "results"


def measure(args: argparse.Namespace) -> dict:
    key = {k: getattr(args, k) for k in ("model", "calibration", "eval", "news", "ioi", "seed", "factor", "validation",
                                         "reconstruction_windows")}
    state_path = Path(args.work) / "state.json"
    state = resumed_state((state_path, args.out / "pruning.json"), key)
    bench = Bench(args, state, state_path)
    state.setdefault("load_start", os.getloadavg()[0])
    state["specs"] = {"calibration": bench.calibration_spec.describe(), "draw": bench.draw_spec.describe(),
                      **{name: spec.describe() for name, (spec, _) in bench.evaluation.items()},
                      "ioi": f"{len(bench.ioi)} held-out IOI prompts (seed {args.seed})"}
    if "dense" not in state:
        bench.restore_dense()
        state["dense"] = bench.measure_model()
        bench.save()
    rows = variants(args.factor)
    try:
        for level in LEVELS:
            for variant in rows[:PRIMARY]:
                bench.run(variant, (level,))
        for variant in rows[PRIMARY:]:
            bench.run(variant)
    except OutOfTime:
        logger.info("budget spent; rerun the same command to continue")
        state["load_end"], state["complete"] = os.getloadavg()[0], False
        return state
    if "cost_per_token" not in state:
        state["cost_per_token"] = bench.cost_per_token()
        bench.save()
    state["load_end"], state["complete"] = os.getloadavg()[0], True
    bench.save()
    return state


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--calibration", default="wiki:64x512", help="reference windows (default: wiki:64x512)")
    parser.add_argument("--eval", default="wiki:64x512", help="wiki evaluation windows (default: wiki:64x512)")
    parser.add_argument("--news", default="news:16x512", help="news evaluation windows (default: news:16x512)")
    parser.add_argument("--reconstruction-windows", type=int, default=32,
                        help="reference windows SparseGPT's update re-fits on (the first of the 1x set; default: 32)")
    parser.add_argument("--budget-minutes", type=float, default=None,
                        help="stop (resumably) after the level that passes this many minutes")
    parser.add_argument("--ioi", type=int, default=128, help="held-out IOI prompts (default: 128)")
    parser.add_argument("--factor", type=int, default=4, help="the larger LRP reference set, as a multiple (default: 4)")
    parser.add_argument("--validation", type=int, default=8, help="validation windows for choosing delta (default: 8)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timing-windows", type=int, default=4, help="windows for the side-by-side cost timing")
    parser.add_argument("--timing-repeats", type=int, default=3, help="interleaved rounds of the cost timing")
    parser.add_argument("--quick", action="store_true", help="small sizes for a smoke run (results to --out still)")
    parser.add_argument("--work", default=None, help="resumable state and cached scores (default: EXCISE_HOME/bench/pruning)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    # the scores cache under EXCISE_HOME outlives the machine's /tmp, so a later session resumes without re-scoring
    args.work = args.work or str(excise_home() / "bench" / "pruning")
    if args.quick:
        args.calibration, args.eval, args.news, args.ioi = "wiki:4x128", "wiki:4x128", "news:4x128", 16
        args.factor, args.validation, args.timing_windows, args.timing_repeats = 2, 2, 1, 1
        args.reconstruction_windows = 4
        args.work = args.work + "-quick"
    return args


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    args = parse_args(argv)
    state = measure(args)
    command = ("python benchmarks/pruning/run.py " + " ".join(sys.argv[1:] if argv is None else argv)).strip()
    report.write(state, args.out, command=command, model=args.model, factor=args.factor)


if __name__ == "__main__":
    main()
