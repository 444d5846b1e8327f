"""`excise`: one command line over the library; each subcommand lives in `excise.cli`.

The CLI only parses arguments, calls one library entry point and prints the
result. User errors (a bad flag, `ExciseError`, invalid settings) become one
line on stderr and exit code 2, found while parsing or when the config is made,
before a model is loaded; Ctrl-C exits 130 without a traceback; anything else is
a bug: one line and exit 1, the traceback with `--debug`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from pydantic import ValidationError

from excise import __version__
from excise.cli import COMMANDS
from excise.cli.arguments import check_machine
from excise.errors import ExciseError


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad argument is one line naming it (no usage block), exit 2."""

    def error(self, message: str):
        self.exit(2, f"excise: error: {message}; see `{self.prog} --help`\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="excise",
        description="Prune, find circuits in, and correct language models with Layer-wise Relevance "
        "Propagation; serve the variants behind an OpenAI-compatible API.",
    )
    parser.add_argument("--version", action="version", version=f"excise {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an unexpected error")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        sub = subparsers.add_parser(command.name, help=command.help, description=command.help)
        command.add_arguments(sub)
        sub.set_defaults(handler=command.run)
    return parser


def format_validation_error(error: ValidationError) -> str:
    problems = []
    for e in error.errors():
        where, message = ".".join(str(p) for p in e["loc"]), e["msg"].removeprefix("Value error, ")
        problems.append(f"{where}: {message}" if where else message)
    return "invalid settings: " + "; ".join(problems)


def main(argv: Sequence[str] | None = None) -> int:
    debug = "--debug" in (sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(argv)
        logging.basicConfig(
            level=logging.DEBUG if args.verbose else logging.INFO,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
            datefmt="%H:%M:%S",
        )
        check_machine(args)
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
    except Exception as error:  # a bug, not a user error: say so in one line unless asked for more
        if debug:
            raise
        first = str(error).splitlines()[0] if str(error) else ""
        print(f"excise: error: unexpected {type(error).__name__}: {first}; run with --debug for the traceback",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
