"""Where excise keeps converted models, scores and artifacts it builds for itself."""

from __future__ import annotations

import os
from pathlib import Path


def excise_home() -> Path:
    """`EXCISE_HOME`, default `~/.cache/excise`; created on first use."""
    home = Path(os.environ.get("EXCISE_HOME", Path.home() / ".cache" / "excise")).expanduser()
    home.mkdir(parents=True, exist_ok=True)
    return home
