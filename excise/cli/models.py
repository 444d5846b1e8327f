"""`excise models prepare|list`: the embedded default models."""

from __future__ import annotations

import argparse

from excise.cli import Command
from excise.models.embedded import EMBEDDED_MODELS, embedded_path, is_prepared, prepare_embedded


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    prepare = actions.add_parser("prepare", help="convert an embedded model into a safetensors folder in the cache")
    prepare.add_argument("name", nargs="?", default="smollm2", help="embedded model name (default: smollm2)")
    prepare.add_argument("--force", action="store_true", help="convert again even if already prepared")
    actions.add_parser("list", help="list embedded models and whether they are prepared")


def run(args: argparse.Namespace) -> int:
    if args.action == "prepare":
        print(prepare_embedded(args.name, force=args.force))
        return 0
    for name, spec in sorted(EMBEDDED_MODELS.items()):
        state = f"prepared at {embedded_path(name)}" if is_prepared(name) else "not prepared"
        print(f"{name}\t{spec.description}\t{state}")
    return 0


COMMAND = Command(name="models", help="prepare or list the embedded default models", add_arguments=add_arguments, run=run)
