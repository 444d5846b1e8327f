"""`excise eval ppl`: perplexity on held-out windows; `excise eval task`: a task's metrics of a model or mask."""

from __future__ import annotations

import argparse
from pathlib import Path

from excise.cli import Command
from excise.cli.arguments import device, positive_int
from excise.data.windows import DataSpec, token_windows
from excise.errors import ExciseError
from excise.evaluation.perplexity import perplexity
from excise.models.loading import load_model


def add_arguments(parser: argparse.ArgumentParser) -> None:
    metrics = parser.add_subparsers(dest="metric", required=True, metavar="METRIC")
    ppl = metrics.add_parser("ppl", help="perplexity on held-out token windows")
    ppl.add_argument("--model", default="smollm2", help="HF model folder or embedded name (default: smollm2)")
    ppl.add_argument(
        "--data",
        default="wiki:64x512",
        help="SOURCE[:COUNTxLENGTH]: wiki, news or a .txt/.jsonl file (default: wiki:64x512, evaluation split)",
    )
    ppl.add_argument("--batch-size", type=positive_int, default=4)
    ppl.add_argument("--device", type=device, default="cpu", help="cpu (default), cuda, cuda:N or mps")
    ppl.set_defaults(evaluate=run_ppl)
    task = metrics.add_parser("task", help="logit difference, accuracy and top-1 on a task's held-out prompts")
    task.add_argument("--model", default="smollm2", help="HF model folder or embedded name (default: smollm2)")
    task.add_argument("--task", required=True, help="built-in task (ioi) or FILE.jsonl with prompt/correct/incorrect")
    task.add_argument("--mask", type=Path, help="artifact folder with masks.safetensors (a circuit or a pruning)")
    task.add_argument(
        "--ablation", choices=("zero", "mean", "corrupted"),
        help="what the mask's removed units carry (default: the circuit's own, zero for other masks)",
    )
    task.add_argument("--reference", type=int, default=32, help="prompts for mean-ablation only (default: 32)")
    task.add_argument("--heldout", type=int, default=64, help="prompts evaluated (default: 64; split as excise circuit)")
    task.add_argument("--seed", type=int, default=0)
    task.add_argument("--batch-size", type=positive_int, default=16)
    task.add_argument("--device", type=device, default="cpu", help="cpu (default), cuda, cuda:N or mps")
    task.set_defaults(evaluate=run_task)


def run(args: argparse.Namespace) -> int:
    return args.evaluate(args)


def run_ppl(args: argparse.Namespace) -> int:
    loaded = load_model(args.model, device=args.device)
    spec = DataSpec.parse(args.data, split="evaluation", order="sequential")
    windows = token_windows(loaded.tokenizer, spec, max_length=loaded.model.config.max_position_embeddings)
    result = perplexity(loaded.model, windows, batch_size=args.batch_size)
    print(f"perplexity {result.perplexity:.3f}")
    print(f"protocol: {spec.describe()}; {result.predictions} next-token predictions, windows scored independently")
    return 0


def run_task(args: argparse.Namespace) -> int:
    from excise.evaluation.task import evaluate_on_task, read_mask

    if min(args.reference, args.heldout) < 1:
        raise ExciseError("--reference and --heldout must be at least 1")
    mask = read_mask(args.mask, args.ablation) if args.mask else None
    result = evaluate_on_task(
        args.model, args.task, mask=mask, reference=args.reference, heldout=args.heldout, seed=args.seed,
        batch_size=args.batch_size, device=args.device,
    )
    print(f"model: {_metrics(result.model)} on {result.model.count} held-out prompts of {result.task} (seed {args.seed})")
    if result.masked is not None:
        share = result.masked.logit_diff / result.model.logit_diff if result.model.logit_diff else float("nan")
        print(f"with {args.mask} ({result.ablation}-ablated): {_metrics(result.masked)}; {share:.0%} of the model's logit difference")
    return 0


def _metrics(score) -> str:
    return f"logit diff {score.logit_diff:.4f}, accuracy {score.accuracy:.4f}, top-1 {score.top1:.4f}"


COMMAND = Command(
    name="eval", help="evaluate a model or mask (perplexity, task metrics)", add_arguments=add_arguments, run=run
)
