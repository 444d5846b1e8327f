"""`excise serve`: the OpenAI-compatible server over vLLM engines (see `server/`).

The one place that joins the server and the library: the server loads only prepared model
folders, so the embedded models its config names are prepared here (once) before it starts.
"""

from __future__ import annotations

import argparse

from excise.cli import Command
from excise.errors import ExciseError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from server.main import add_serve_arguments

    add_serve_arguments(parser)
    parser.add_argument(
        "--default",
        action="store_true",
        help="build (once, a few minutes) and serve the embedded default: smollm2 dense, "
        "50%% LRP-pruned and toxicity-corrected",
    )


def run(args: argparse.Namespace) -> int:
    from excise.models.embedded import EMBEDDED_MODELS, prepare_embedded
    from server.app import load_serving_config
    from server.main import serve, settings_from_args

    if args.default:
        if args.config or args.artifacts:
            raise ExciseError("--default builds its own artifacts; drop --config/--artifacts or --default")
        from excise.defaults import build_default_artifacts

        args.artifacts = build_default_artifacts()
    settings = settings_from_args(args)
    config = load_serving_config(settings)
    for base in sorted({variant.base for variant in config.variants} & set(EMBEDDED_MODELS)):
        prepare_embedded(base)
    serve(settings, config)
    return 0


COMMAND = Command(
    name="serve",
    help="serve dense, pruned and corrected variants behind an OpenAI-compatible API on vLLM",
    add_arguments=add_arguments,
    run=run,
)
