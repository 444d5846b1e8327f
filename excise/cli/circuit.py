"""`excise circuit`: find the sparsest sub-network that still does a task, and export it."""

from __future__ import annotations

import argparse
from pathlib import Path

from excise.cli import Command
from excise.cli.arguments import add_compute_arguments, compute_settings, positive_int
from excise.errors import ExciseError


def _sparsities(text: str) -> list[float]:
    try:
        return [float(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers, e.g. 0.5,0.8,0.9") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="smollm2", help="HF model folder or embedded name (default: smollm2)")
    parser.add_argument("--task", default="ioi", help="built-in task (ioi) or FILE.jsonl with prompt/correct/incorrect")
    parser.add_argument("--method", default="lrp", help="scorer: lrp, eap, gradient, wanda, activation, magnitude")
    parser.add_argument("--granularity", default="weight", help="weight, neuron or head")
    parser.add_argument(
        "--scope", choices=("row", "global"),
        help="global: one ranking over all layers (default for neuron and head, because per layer a level rounds to "
        "whole KV groups, 3 a layer on SmolLM2, and low levels to none); row: the same share in every row (default "
        "for weight) or layer",
    )
    parser.add_argument("--target", default="task_logit_diff", help="task_logit_diff (default) or task_correct")
    parser.add_argument(
        "--ablation", default="mean", choices=("zero", "mean", "corrupted"),
        help="what removed units carry during the search: their mean over the reference prompts (default), zero, "
        "or their activation on the corrupted prompt (tasks with corrupted prompts, e.g. ioi)",
    )
    parser.add_argument("--retain", type=float, default=0.9, help="share of the dense logit difference to keep")
    parser.add_argument(
        "--sparsities", type=_sparsities,
        help="levels in (0, 1): shares of units to remove, e.g. 0.1,0.5,0.9 (default: 0.05,0.1,0.2,...,0.95,0.98); "
        "results count the units actually removed",
    )
    parser.add_argument("--refine", type=int, default=3, help="bisection steps near the threshold (default: 3)")
    parser.add_argument("--reference", type=int, default=32, help="prompts to score and search on (default: 32)")
    parser.add_argument("--heldout", type=int, default=64, help="held-out prompts to report on (default: 64)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=positive_int, default=16)
    add_compute_arguments(parser)
    parser.add_argument("--out", type=Path, required=True, help="artifact folder to write")
    parser.add_argument("--force", action="store_true", help="replace an existing --out")


def run(args: argparse.Namespace) -> int:
    from excise.circuits import CircuitConfig, discover_circuit, write_circuit
    from excise.circuits.artifact import summary

    if args.out.exists() and not args.force:
        raise ExciseError(f"{args.out} already exists; choose another --out or pass --force to replace it")
    settings = {
        "model": args.model, "task": args.task, "method": args.method, "granularity": args.granularity,
        "scope": args.scope, "target": args.target, "ablation": args.ablation, "retain": args.retain,
        "refine_steps": args.refine,
        "reference": args.reference, "heldout": args.heldout, "seed": args.seed, "batch_size": args.batch_size,
        **compute_settings(args),
    }
    if args.sparsities:
        settings["sparsities"] = args.sparsities
    result = discover_circuit(CircuitConfig(**settings))
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
