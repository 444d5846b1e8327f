"""Start the server: `serve(settings)`; CLI flags shared with `excise serve`.

`add_serve_arguments` + `settings_from_args` are what `excise serve` wires up;
`python -m server` runs the same without the rest of the CLI.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from excise.errors import ExciseError
from server.settings import ServerSettings

if TYPE_CHECKING:
    from server.config import ServingConfig

log = logging.getLogger(__name__)


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--config", type=Path, help="variants/experiments file (YAML or JSON)")
    source.add_argument("--artifacts", type=Path, help="serve every model and correction artifact in this folder")
    parser.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default 8000)")
    parser.add_argument("--api-key", action="append", dest="api_keys", metavar="KEY",
                        help="accepted API key; repeat for several (or EXCISE_API_KEYS=a,b)")
    parser.add_argument("--admin-key", help="key for POST/DELETE /v1/corrections (or EXCISE_ADMIN_KEY)")
    parser.add_argument("--corrections-root", type=Path,
                        help="runtime corrections load from under this folder only (default: --artifacts)")
    parser.add_argument("--allow-unauthenticated", action="store_true",
                        help="serve without API keys on a non-loopback --host (refused otherwise)")
    parser.add_argument("--docs", action="store_true", help="serve /docs and /openapi.json (off by default)")
    parser.add_argument("--no-toxicity", action="store_true", help="do not score outputs for toxicity")
    parser.add_argument("--max-in-flight", type=int, help="requests beyond this get 429 (default 256)")


def settings_from_args(args: argparse.Namespace) -> ServerSettings:
    """CLI values over EXCISE_* environment values over defaults."""
    given = {
        "config": args.config, "artifacts": args.artifacts, "host": args.host, "port": args.port,
        "api_keys": args.api_keys, "admin_key": args.admin_key, "max_in_flight": args.max_in_flight,
        "corrections_root": args.corrections_root,
    }
    if args.no_toxicity:
        given["toxicity"] = False
    for flag in ("allow_unauthenticated", "docs"):
        if getattr(args, flag):
            given[flag] = True
    try:
        return ServerSettings(**{k: v for k, v in given.items() if v is not None})
    except ValueError as exc:  # pydantic's ValidationError
        raise ExciseError(f"bad server settings: {_first_error(exc)}") from None


def _first_error(exc: Exception) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors) and errors():
        first = errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        return f"{where + ': ' if where else ''}{first.get('msg')}"
    return str(exc)


def serve(settings: ServerSettings, config: ServingConfig | None = None) -> None:
    """Validate the config (read from `settings` unless given) and artifacts (ExciseError on a
    problem, such as an embedded model not prepared yet), then serve until SIGINT/SIGTERM."""
    import uvicorn

    from server.app import build_app

    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = build_app(settings, config)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        timeout_graceful_shutdown=int(settings.drain_timeout_s) or None,
        access_log=False,
    )
    uvicorn.Server(config).run()
    if app.state.fatal:
        raise ExciseError(app.state.fatal)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m server", description="excise inference server")
    add_serve_arguments(parser)
    args = parser.parse_args(argv)
    try:
        serve(settings_from_args(args))
    except ExciseError as exc:
        print(f"excise: error: {exc}", file=sys.stderr)  # as `excise serve` says it
        return exc.exit_code
    return 0
