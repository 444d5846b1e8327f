"""The `excise` subcommands, listed explicitly (no discovery)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int | None]


def _commands() -> list[Command]:
    from excise.cli import circuit, correct, evaluate, export, models, prune, serve

    return [models.COMMAND, evaluate.COMMAND, prune.COMMAND, correct.COMMAND, export.COMMAND, circuit.COMMAND, serve.COMMAND]


COMMANDS: list[Command] = _commands()
