"""`excise serve`: the OpenAI-compatible server over vLLM engines (see `server/`)."""

from __future__ import annotations

import argparse

from correction.commands import Command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from server.main import add_serve_arguments

    add_serve_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from server.main import serve, settings_from_args

    serve(settings_from_args(args))
    return 0


COMMAND = Command(
    name="serve",
    help="serve dense, pruned and corrected variants behind an OpenAI-compatible API on vLLM",
    add_arguments=add_arguments,
    run=run,
)
