"""Pin a dense model by the content of its weights, so artifacts cannot be applied to another."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from correction.atomic import sha256_file
from correction.manifest import BaseModelRef
from correction.models.embedded import MARKER, WEIGHTS
from correction.models.loading import read_config, resolve_model_path


def weights_sha256(folder: Path) -> str:
    """SHA-256 over the folder's safetensors files (name and hash of each, sorted)."""
    folder = Path(folder)
    marker = folder / MARKER
    if marker.is_file() and (folder / WEIGHTS).is_file():
        return json.loads(marker.read_text())["weights_sha256"]  # recorded when the model was prepared
    files = sorted(folder.glob("*.safetensors"))
    if len(files) == 1:
        return sha256_file(files[0])
    digest = hashlib.sha256()
    for path in files:
        digest.update(f"{path.name}:{sha256_file(path)}\n".encode())
    return digest.hexdigest()


def base_model_ref(spec: str | Path) -> BaseModelRef:
    folder = resolve_model_path(spec)
    return BaseModelRef(
        spec=str(spec),
        path=str(folder.resolve()),
        model_type=read_config(folder)["model_type"],
        weights_sha256=weights_sha256(folder),
    )
