"""`excise correct`: remove the components behind an undesired behaviour (toxicity, repetition)."""

from __future__ import annotations

import argparse
from pathlib import Path

from correction.behaviours import BEHAVIOURS, EvaluationSettings
from correction.commands import Command
from correction.commands.arguments import device, positive_int
from correction.correcting import CorrectConfig, correct


def _budgets(text: str) -> list[int]:
    try:
        return [positive_int(part) for part in text.split(",") if part.strip()]
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"cannot read {text!r}; give positive budgets separated by commas, e.g. 25,50,100") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="smollm2", help="HF model folder or embedded name (default: smollm2)")
    parser.add_argument("--behaviour", required=True, help=f"what to remove: {', '.join(BEHAVIOURS)}")
    parser.add_argument("--method", default="lrp", help="relevance method: lrp, wanda or gradient (default: lrp)")
    parser.add_argument("--granularity", default="neuron", help="neuron, weight or head (default: neuron)")
    parser.add_argument("--budget", type=positive_int, default=100, help="components to remove (default: 100)")
    parser.add_argument("--sweep", type=_budgets, help="budgets to try, e.g. 25,50,100; keeps the best within --ppl-bound")
    parser.add_argument("--ppl-bound", type=float, default=0.02, help="largest perplexity increase in a sweep (0.02 = 2%%)")
    parser.add_argument(
        "--normalise", default="relative", help="contrastive rule: relative (default), overall or layer (see correcting.py)"
    )
    parser.add_argument("--general", default="wiki:32x128", help="general reference windows (default: wiki:32x128)")
    parser.add_argument("--evaluation", default="wiki:16x512", help="perplexity windows (default: wiki:16x512)")
    parser.add_argument("--samples", type=positive_int, default=25, help="sampled continuations per toxic prompt (default: 25)")
    parser.add_argument("--toxicity-scorer", default="profanity-check", help="toxicity classifier (default: profanity-check)")
    parser.add_argument("--max-prompts", type=int, help="use only the first N prompts of each half")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", type=device, default="cpu", help="cpu (default), cuda, cuda:N or mps")
    parser.add_argument("--out", type=Path, required=True, help="folder for the correction artifact")
    parser.add_argument("--force", action="store_true", help="replace --out if it exists")


def run(args: argparse.Namespace) -> int:
    config = CorrectConfig(
        model=args.model,
        behaviour=args.behaviour,
        method=args.method,
        granularity=args.granularity,
        budget=args.budget,
        sweep=args.sweep,
        ppl_bound=args.ppl_bound,
        normalise=args.normalise,
        general=args.general,
        evaluation=args.evaluation,
        settings=EvaluationSettings(
            samples=args.samples, max_prompts=args.max_prompts, seed=args.seed, toxicity_scorer=args.toxicity_scorer
        ),
        device=args.device,
    )
    out = correct(config, args.out, force=args.force)
    from correction.manifest import Manifest

    metrics = Manifest.load(out).metrics
    before, after = metrics[config.behaviour]["before"], metrics[config.behaviour]["after"]
    primary = metrics[config.behaviour]["primary"]
    print(f"removed {metrics['budget']} {config.granularity}s ({config.method}, contrastive general - undesired)")
    print(f"{primary} on held-out prompts: {before[primary]:.3f} -> {after[primary]:.3f}")
    print(f"perplexity: {metrics['perplexity']['before']:.3f} -> {metrics['perplexity']['after']:.3f}")
    print(f"wrote {out}")
    return 0


COMMAND = Command(
    name="correct",
    help="remove the components behind toxicity or repetition (contrastive relevance)",
    add_arguments=add_arguments,
    run=run,
)
