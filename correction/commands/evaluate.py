"""`excise eval ppl`: perplexity on held-out windows."""

from __future__ import annotations

import argparse

from correction.commands import Command
from correction.commands.arguments import device, positive_int
from correction.data.windows import DataSpec, token_windows
from correction.evaluation.perplexity import perplexity
from correction.models.loading import load_model


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


def run(args: argparse.Namespace) -> int:
    loaded = load_model(args.model, device=args.device)
    spec = DataSpec.parse(args.data, split="evaluation", order="sequential")
    windows = token_windows(loaded.tokenizer, spec, max_length=loaded.model.config.max_position_embeddings)
    result = perplexity(loaded.model, windows, batch_size=args.batch_size)
    print(f"perplexity {result.perplexity:.3f}")
    print(f"protocol: {spec.describe()}; {result.predictions} next-token predictions, windows scored independently")
    return 0


COMMAND = Command(name="eval", help="evaluate a model (perplexity)", add_arguments=add_arguments, run=run)
