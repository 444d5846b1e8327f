"""Pin a dense model by the content of its weights, so artifacts cannot be applied to another."""

from __future__ import annotations

from pathlib import Path

from excise.artifacts.manifest import BaseModelRef
from excise.artifacts.model_folder import read_config, weights_sha256
from excise.models.loading import resolve_model_path

__all__ = ["base_model_ref"]


def base_model_ref(spec: str | Path) -> BaseModelRef:
    folder = resolve_model_path(spec)
    return BaseModelRef(
        spec=str(spec),
        path=str(folder.resolve()),
        model_type=read_config(folder)["model_type"],
        weights_sha256=weights_sha256(folder),
    )
