"""`excise circuit`: find the sparsest sub-network that still does a task, and export it.

The options are `CircuitConfig`'s fields (`excise.cli.options`); `--unit` names what a
circuit keeps or removes (`--granularity`, its older name, still works).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from excise.circuits.config import CircuitConfig
from excise.cli import Command
from excise.cli.options import COMPUTE_OPTIONS, Option, add_options, option_values
from excise.errors import ExciseError


def _sparsities(text: str) -> list[float]:
    try:
        return [float(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers, e.g. 0.5,0.8,0.9") from None


OPTIONS = (
    Option("model"),
    Option("task"),
    Option("method"),
    Option("granularity", flags=("--unit", "--granularity")),
    Option("scope"),
    Option("target"),
    Option("ablation"),
    Option("retain"),
    Option("sparsities", type=_sparsities),
    Option("refine_steps", flags=("--refine",)),
    Option("greedy"),
    Option("reference"),
    Option("heldout"),
    Option("seed"),
    Option("batch_size"),
    Option("params", flags=("--param",)),
    *COMPUTE_OPTIONS,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_options(parser, CircuitConfig, OPTIONS)
    parser.add_argument("--out", type=Path, required=True, help="artifact folder to write")
    parser.add_argument("--force", action="store_true", help="replace an existing --out")


def make_config(args: argparse.Namespace) -> CircuitConfig:
    return CircuitConfig(**option_values(args, CircuitConfig, OPTIONS))


def run(args: argparse.Namespace) -> int:
    from excise.circuits import discover_circuit, write_circuit
    from excise.circuits.artifact import summary

    if args.out.exists() and not args.force:
        raise ExciseError(f"{args.out} already exists; choose another --out or pass --force to replace it")
    result = discover_circuit(make_config(args))
    write_circuit(result, args.out, force=args.force)
    print(f"dense: logit diff {result.dense.logit_diff:.3f}, accuracy {result.dense.accuracy:.3f} "
          f"on {result.dense.count} held-out prompts")
    print(f"circuit: {summary(result)}")
    print("held-out faithfulness: " + ", ".join(
        f"{mode} {entry['retained']:.0%}" for mode, entry in result.faithfulness.items()))
    if result.found and result.heldout["retained"] < args.retain:
        print(f"note: on the held-out prompts it keeps {result.heldout['retained']:.0%}, less than the {args.retain:.0%} "
              "it keeps on the reference prompts it was chosen on; more --reference prompts choose a level that "
              "generalises better")
    print(f"wrote {args.out}")
    return 0


COMMAND = Command(name="circuit", help="find a task circuit (sparsest mask keeping task performance)", add_arguments=add_arguments, run=run)
