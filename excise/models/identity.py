"""Pin a dense model by the content of its weights, so artifacts cannot be applied to another."""

from __future__ import annotations

import hashlib
from pathlib import Path

from excise.artifacts.hashing import cached_sha256
from excise.artifacts.manifest import BaseModelRef
from excise.models.loading import read_config, resolve_model_path


def weights_sha256(folder: Path) -> str:
    """SHA-256 over the folder's safetensors files as they are now (one file: its hash; several:
    the hash of their sorted names and hashes). Always computed from the files, never taken from a
    record, so modified weights never match; `cached_sha256` keeps this cheap on repeated loads."""
    files = sorted(Path(folder).glob("*.safetensors"))
    if len(files) == 1:
        return cached_sha256(files[0])
    digest = hashlib.sha256()
    for path in files:
        digest.update(f"{path.name}:{cached_sha256(path)}\n".encode())
    return digest.hexdigest()


def base_model_ref(spec: str | Path) -> BaseModelRef:
    folder = resolve_model_path(spec)
    return BaseModelRef(
        spec=str(spec),
        path=str(folder.resolve()),
        model_type=read_config(folder)["model_type"],
        weights_sha256=weights_sha256(folder),
    )
