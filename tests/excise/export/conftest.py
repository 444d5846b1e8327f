"""Fixtures for export tests: mask artifacts on the tiny models."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from export_helpers import write_mask_artifact

from excise.artifacts.masks import MaskSet


@pytest.fixture
def mask_artifact(tmp_path) -> Callable[..., Path]:
    """`mask_artifact(model_dir, masks, name="mask")` -> a mask artifact folder under tmp_path."""

    def make(model_dir: Path, masks: MaskSet, name: str = "mask", kind: str = "mask") -> Path:
        return write_mask_artifact(model_dir, masks, tmp_path / name, kind=kind)

    return make
