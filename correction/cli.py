"""`excise`: one command line over the library; each subcommand lives in `correction.commands`.

The CLI only parses arguments, calls one library entry point and prints the
result. User errors (`ExciseError`, invalid settings) become one line on
stderr and exit code 2; Ctrl-C exits 130 without a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from pydantic import ValidationError

from correction import __version__
from correction.commands import COMMANDS
from correction.errors import ExciseError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="excise",
        description="Prune, find circuits in, and correct language models with Layer-wise Relevance "
        "Propagation; serve the variants behind an OpenAI-compatible API.",
    )
    parser.add_argument("--version", action="version", version=f"excise {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        sub = subparsers.add_parser(command.name, help=command.help, description=command.help)
        command.add_arguments(sub)
        sub.set_defaults(handler=command.run)
    return parser


def format_validation_error(error: ValidationError) -> str:
    problems = [f"{'.'.join(str(p) for p in e['loc']) or 'value'}: {e['msg']}" for e in error.errors()]
    return "invalid settings: " + "; ".join(problems)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        return args.handler(args) or 0
    except ExciseError as error:
        print(f"excise: error: {error}", file=sys.stderr)
        return error.exit_code
    except ValidationError as error:
        print(f"excise: error: {format_validation_error(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("excise: interrupted; nothing half-written was kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
