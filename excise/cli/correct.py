"""`excise correct`: remove the components behind an undesired behaviour (toxicity, repetition).

The options are `CorrectConfig`'s fields (`excise.cli.options`); `--unit` names what is
removed (`--granularity`, its older name, still works).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from excise.cli import Command
from excise.cli.options import COMPUTE_OPTIONS, Option, add_options, option_values
from excise.correction.config import CorrectConfig
from excise.correction.run import correct


def parse_budgets(text: str) -> list[int]:
    """`--sweep`'s value: positive budgets separated by commas (an argparse type: a bad value is one
    line naming the flag, before any model is looked at)."""
    try:
        budgets = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"cannot read {text!r}; give budgets separated by commas, e.g. 25,50,100") from None
    if not budgets or min(budgets) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} needs positive budgets separated by commas, e.g. 25,50,100")
    return budgets


SWEEP = CorrectConfig.model_fields["sweep"].default
OPTIONS = (
    Option("model"),
    Option("behaviour", required=True),
    Option("method"),
    Option("params", flags=("--param",)),
    Option("target"),
    Option("granularity", flags=("--unit", "--granularity")),
    Option("budget", default=None),  # a budget alone replaces the sweep
    Option("sweep", type=parse_budgets, default=None, help=f"{CorrectConfig.model_fields['sweep'].description} "
           f"(default without --budget: {','.join(map(str, SWEEP))})"),
    Option("ppl_bound"),
    Option("normalise"),
    Option("keep"),
    Option("focus"),
    Option("general"),
    Option("evaluation"),
    Option("settings.samples"),
    Option("settings.reference_samples"),
    Option("settings.toxicity_scorer"),
    Option("settings.max_prompts"),
    Option("backend"),
    Option("settings.seed"),
    *COMPUTE_OPTIONS,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_options(parser, CorrectConfig, OPTIONS)
    parser.add_argument("--out", type=Path, required=True, help="folder for the correction artifact")
    parser.add_argument("--force", action="store_true", help="replace --out if it exists")


def make_config(args: argparse.Namespace) -> CorrectConfig:
    values = option_values(args, CorrectConfig, OPTIONS)
    if values["budget"] is None:
        del values["budget"]
    if values["sweep"] is None:
        values["sweep"] = None if "budget" in values else SWEEP
    return CorrectConfig(**values)


def run(args: argparse.Namespace) -> int:
    config = make_config(args)
    out = correct(config, args.out, force=args.force)
    from excise.artifacts.manifest import Manifest

    metrics = Manifest.load(out).metrics
    before, after = metrics[config.behaviour]["before"], metrics[config.behaviour]["after"]
    primary = metrics[config.behaviour]["primary"]
    print(f"removed {metrics['budget']} {config.granularity}s ({config.method}, contrastive {config.keep} - undesired)")
    if not metrics["validation_reduced"]:
        print(f"warning: no budget lowered {config.behaviour} on the validation prompts; this is the least harmful one")
    print(f"{primary} on test prompts: {before[primary]:.3f} [{before[primary + '_low']:.3f}, "
          f"{before[primary + '_high']:.3f}] -> {after[primary]:.3f} [{after[primary + '_low']:.3f}, "
          f"{after[primary + '_high']:.3f}] (paired p = {metrics[config.behaviour]['paired']['paired_p']:.3g})")
    print(f"perplexity (test windows): {metrics['perplexity']['before']:.3f} -> {metrics['perplexity']['after']:.3f}")
    print(f"generation: {', '.join(sorted({c['backend'] for c in metrics['generation']['calls']}))}")
    print(f"wrote {out}")
    return 0


COMMAND = Command(
    name="correct",
    help="remove the components behind toxicity or repetition (contrastive relevance)",
    add_arguments=add_arguments,
    run=run,
)
