"""`excise prune`: score a model and write a mask artifact at a sparsity.

The options are `PruneConfig`'s fields (`excise.cli.options`); `--selection` names how the
scores become a mask (`--granularity`, its older name, still works: in `correct` and
`circuit` that flag names a unit, here a selection of one).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from excise.cli import Command
from excise.cli.options import COMPUTE_OPTIONS, Option, add_options, option_values
from excise.data.windows import DataSpec
from excise.pruning.config import PruneConfig
from excise.pruning.run import prune

OPTIONS = (
    Option("model"),
    Option("method"),
    Option("sparsity"),
    Option("granularity", flags=("--selection", "--granularity"), metavar="SELECTION"),
    Option("save_scores"),
    Option("from_scores"),
    Option("seed", help="seed for drawing calibration windows and for scoring"),
    *COMPUTE_OPTIONS,
    Option("batch_size"),
    Option("params", flags=("--param",)),
    Option("selection_params", flags=("--selection-param",)),
    Option("reconstruct"),
    Option("reconstruction", flags=("--reconstruct-param",)),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_options(parser, PruneConfig, OPTIONS)
    # reference text as SOURCE[:COUNTxLENGTH]: a DataSpec whose split, order and seed the command sets
    parser.add_argument(
        "--calibration",
        default="wiki:64x512",
        help="reference text SOURCE[:COUNTxLENGTH]: wiki, news or a .txt/.jsonl file (default: wiki:64x512)",
    )
    parser.add_argument(
        "--eval", default="wiki:64x512", help="held-out perplexity windows SOURCE[:COUNTxLENGTH], or 'none' to skip"
    )
    parser.add_argument("--out", type=Path, required=True, help="artifact folder to create")
    parser.add_argument("--force", action="store_true", help="replace --out if it exists")


def make_config(args: argparse.Namespace) -> PruneConfig:
    evaluation = None
    if args.eval.lower() != "none":
        evaluation = DataSpec.parse(args.eval, split="evaluation", order="sequential")
    return PruneConfig(
        **option_values(args, PruneConfig, OPTIONS),
        calibration=DataSpec.parse(args.calibration, split="calibration", order="random", seed=args.seed),
        evaluation=evaluation,
    )


def run(args: argparse.Namespace) -> int:
    out = prune(make_config(args), args.out, force=args.force)
    print(out)
    return 0


COMMAND = Command(
    name="prune", help="score a model and write a pruning mask artifact", add_arguments=add_arguments, run=run
)
