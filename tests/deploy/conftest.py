"""Fixtures of the deploy tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def routes(tiny_llama_dir) -> dict[str, set[str]]:
    """Path -> methods of the server's routes, from the app itself (built, engines not started)."""
    from server.app import build_app
    from server.config import parse_config
    from server.settings import ServerSettings

    settings = ServerSettings(config=Path("unused.yaml"), toxicity=False)
    config = parse_config({"variants": [{"name": "m", "base": str(tiny_llama_dir)}]}, origin="test")
    found: dict[str, set[str]] = {}
    for route in build_app(settings, config).routes:
        found.setdefault(route.path, set()).update(getattr(route, "methods", set()))
    return found
