"""`excise correct`: remove the components behind an undesired behaviour (toxicity, repetition)."""

from __future__ import annotations

import argparse
from pathlib import Path

from excise.behaviours import BEHAVIOURS, EvaluationSettings
from excise.cli import Command
from excise.cli.arguments import add_compute_arguments, compute_settings, positive_int
from excise.cli.prune import parse_params
from excise.correction.run import CorrectConfig, correct


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


#: CorrectConfig's defaults (see its comments for what they rest on)
CORRECT = CorrectConfig()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="smollm2", help="HF model folder or embedded name (default: smollm2)")
    parser.add_argument("--behaviour", required=True, help=f"what to remove: {', '.join(BEHAVIOURS)}")
    parser.add_argument("--method", default=CORRECT.method, help=f"relevance method (default: {CORRECT.method})")
    parser.add_argument("--param", action="append", default=None, metavar="KEY=VALUE",
                        help="scorer parameter (repeatable), e.g. aggregation=token_absolute")
    parser.add_argument("--granularity", default=CORRECT.granularity, help="neuron, weight or head (default: neuron)")
    parser.add_argument("--budget", type=positive_int, help="remove exactly this many components (instead of a sweep)")
    default_sweep = ",".join(map(str, CORRECT.budgets()))
    parser.add_argument("--sweep", type=parse_budgets, help=f"budgets to try: the best on the validation prompts within --ppl-bound is "
                        f"kept (default without --budget: {default_sweep})")
    parser.add_argument("--ppl-bound", type=float, default=CORRECT.ppl_bound,
                        help="largest validation perplexity increase (0.01 = 1%%, the default)")
    parser.add_argument(
        "--normalise", default=CORRECT.normalise, help="contrastive rule: relative (default), overall or layer (see correcting.py)"
    )
    parser.add_argument("--general", default=CORRECT.general, help=f"general reference windows (default: {CORRECT.general})")
    parser.add_argument("--evaluation", default=CORRECT.evaluation, help=f"test perplexity windows (default: {CORRECT.evaluation})")
    parser.add_argument("--samples", type=positive_int, default=CORRECT.settings.samples,
                        help=f"sampled continuations per toxic prompt (default: {CORRECT.settings.samples})")
    parser.add_argument("--reference-samples", type=positive_int, default=CORRECT.settings.reference_samples,
                        help="continuations sampled per reference prompt for the undesired text")
    parser.add_argument("--toxicity-scorer", default="profanity-check", help="toxicity classifier (default: profanity-check)")
    parser.add_argument("--max-prompts", type=int, help="use only the first N prompts of each split")
    parser.add_argument("--backend", default="auto", help="generation: auto (vLLM where installed), vllm or transformers")
    parser.add_argument("--seed", type=int, default=0)
    add_compute_arguments(parser)
    parser.add_argument("--out", type=Path, required=True, help="folder for the correction artifact")
    parser.add_argument("--force", action="store_true", help="replace --out if it exists")


def run(args: argparse.Namespace) -> int:
    config = CorrectConfig(
        model=args.model,
        behaviour=args.behaviour,
        method=args.method,
        params=parse_params(args.param or []),
        granularity=args.granularity,
        budget=args.budget if args.budget is not None else CORRECT.budget,
        sweep=args.sweep if args.sweep is not None else (None if args.budget is not None else CORRECT.sweep),
        ppl_bound=args.ppl_bound,
        normalise=args.normalise,
        general=args.general,
        evaluation=args.evaluation,
        settings=EvaluationSettings(
            samples=args.samples, reference_samples=args.reference_samples, max_prompts=args.max_prompts,
            seed=args.seed, toxicity_scorer=args.toxicity_scorer,
        ),
        backend=args.backend,
        **compute_settings(args),
    )
    out = correct(config, args.out, force=args.force)
    from excise.artifacts.manifest import Manifest

    metrics = Manifest.load(out).metrics
    before, after = metrics[config.behaviour]["before"], metrics[config.behaviour]["after"]
    primary = metrics[config.behaviour]["primary"]
    print(f"removed {metrics['budget']} {config.granularity}s ({config.method}, contrastive general - undesired)")
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
