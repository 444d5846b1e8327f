"""`excise prune`: score a model and write a mask artifact at a sparsity."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from excise.cli import Command
from excise.cli.arguments import add_compute_arguments, compute_settings, positive_int
from excise.data.windows import DataSpec
from excise.errors import ExciseError
from excise.pruning.run import PruneConfig, prune


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="smollm2", help="HF model folder or embedded name (default: smollm2)")
    parser.add_argument(
        "--method",
        help="scorer: lrp, wanda, magnitude, gradient, ...; or sparsegpt, which chooses the mask and re-fits the kept "
        "weights itself (not needed with --from-scores)",
    )
    parser.add_argument("--sparsity", type=float, required=True, help="share of weights/units to remove, in [0, 1)")
    parser.add_argument(
        "--granularity", default="row", help="row (default), layer, global, neuron, head or nm (N:M, e.g. 0.5 -> 2:4)"
    )
    parser.add_argument(
        "--calibration",
        default="wiki:64x512",
        help="reference text SOURCE[:COUNTxLENGTH]: wiki, news or a .txt/.jsonl file (default: wiki:64x512)",
    )
    parser.add_argument(
        "--eval", default="wiki:64x512", help="held-out perplexity windows SOURCE[:COUNTxLENGTH], or 'none' to skip"
    )
    parser.add_argument("--save-scores", action="store_true", help="keep the raw scores in the artifact")
    parser.add_argument("--from-scores", type=Path, help="cut the mask from a saved scores artifact instead of scoring")
    parser.add_argument("--seed", type=int, default=0, help="seed for drawing calibration windows (default: 0)")
    add_compute_arguments(parser)
    parser.add_argument("--batch-size", type=positive_int, default=1, help="calibration windows per scoring step")
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="scorer parameter (repeatable): e.g. target=predicted_token, aggregation=signed|token_absolute",
    )
    parser.add_argument(
        "--selection-param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="selection parameter (repeatable): e.g. m=8 for nm; allocation=relevance delta=0.05 for row "
        "(per-layer sparsity from the scores, within ±delta)",
    )
    parser.add_argument(
        "--reconstruct",
        action="store_true",
        help="after the method chooses the mask, re-fit the kept weights with SparseGPT's update (needs calibration "
        "data; the artifact then carries the updated weights)",
    )
    parser.add_argument(
        "--reconstruct-param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="reconstruction parameter (repeatable): damping=0.01 (share of mean diag H), block_size=128",
    )
    parser.add_argument("--out", type=Path, required=True, help="artifact folder to create")
    parser.add_argument("--force", action="store_true", help="replace --out if it exists")


def parse_params(pairs: list[str]) -> dict:
    """`KEY=VALUE` pairs; a VALUE that reads as JSON (numbers, true/false) is taken as such."""
    params = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ExciseError(f"parameter {pair!r} is not KEY=VALUE")
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value
    return params


def run(args: argparse.Namespace) -> int:
    evaluation = None
    if args.eval.lower() != "none":
        evaluation = DataSpec.parse(args.eval, split="evaluation", order="sequential")
    config = PruneConfig(
        model=args.model,
        method=args.method,
        sparsity=args.sparsity,
        granularity=args.granularity,
        calibration=DataSpec.parse(args.calibration, split="calibration", order="random", seed=args.seed),
        evaluation=evaluation,
        save_scores=args.save_scores,
        from_scores=args.from_scores,
        seed=args.seed,
        **compute_settings(args),
        batch_size=args.batch_size,
        params=parse_params(args.param),
        selection_params=parse_params(args.selection_param),
        reconstruct=args.reconstruct,
        reconstruction=parse_params(args.reconstruct_param),
    )
    out = prune(config, args.out, force=args.force)
    print(out)
    return 0


COMMAND = Command(
    name="prune", help="score a model and write a pruning mask artifact", add_arguments=add_arguments, run=run
)
