"""`excise export ARTIFACT --to FORMAT --out DIR`: turn a mask artifact into something people deploy."""

from __future__ import annotations

import argparse
from pathlib import Path

from excise.cli import Command
from excise.export import EXPORTERS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("artifact", help="a mask artifact folder (from `excise prune`), or a sparse checkpoint for --to hf")
    parser.add_argument("--to", required=True, choices=list(EXPORTERS), help="output format (see excise.export)")
    parser.add_argument("--out", type=Path, required=True, help="folder to write (written atomically)")
    parser.add_argument("--force", action="store_true", help="replace --out if it exists")
    parser.add_argument(
        "--dtype",
        choices=["float32", "bfloat16"],
        default=None,
        help="dtype of the written weights (default: float32; a sparse checkpoint keeps its own)",
    )


def run(args: argparse.Namespace) -> int:
    from excise.export.pipeline import export_artifact

    manifest = export_artifact(args.artifact, args.to, args.out, force=args.force, dtype=args.dtype)
    print(args.out)
    for key, value in manifest.metrics.items():
        if key in ("sparse_size", "shrunk", "lora"):
            print(f"{key}: {value}")
    return 0


COMMAND = Command(name="export", help="export a mask artifact as sparse | hf | shrunk | lora", add_arguments=add_arguments, run=run)
