"""The interface every export format implements, and the README card written next to each export."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from excise import __version__
from excise.export.source import ExportSource
from excise.artifacts.manifest import README_NAME, Manifest
from excise.artifacts.validation import MASK_KINDS


@dataclass(frozen=True)
class ExportOptions:
    dtype: str | None = None  # None: float32 from a mask, the stored dtype from a sparse checkpoint

    @property
    def weights_dtype(self) -> str:
        """The dtype to write weights made from a mask in."""
        return self.dtype or "float32"


@dataclass
class ExportResult:
    """What a format adds to the output manifest and card."""

    metrics: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


class Exporter(ABC):
    """One output format: checks its input before anything is written, then writes.

    What a written folder must satisfy is its kind's check in the artifact contract
    (`excise.artifacts.validation`), which the pipeline runs before the folder is renamed into place."""

    name: ClassVar[str]  # the `--to` value, also the output manifest's kind
    summary: ClassVar[str]  # one line for `--help` and the README card
    usage: ClassVar[str]  # how to load the result ({folder} is replaced), for the README card
    sources: ClassVar[frozenset[str]] = MASK_KINDS  # input artifact kinds this format exports from

    def check(self, source: ExportSource, options: ExportOptions) -> None:  # noqa: B027 - optional hook
        """Refuse an input this format cannot express, before any folder is made."""

    @abstractmethod
    def write(self, source: ExportSource, folder: Path, options: ExportOptions) -> ExportResult:
        """Write the export's files (not the manifest or card) into the empty `folder`."""


def write_card(folder: Path, exporter: Exporter, manifest: Manifest, command: str) -> None:
    method = manifest.method
    details = [f"{method.granularity} granularity" if method and method.granularity else ""]
    details += [f"sparsity {method.sparsity}" if method and method.sparsity is not None else ""]
    made_by = (method.name if method else "an unknown method") + "".join(f", {d}" for d in details if d)
    overall = manifest.sparsity.get("overall")
    lines = [
        f"# excise `{exporter.name}` export",
        "",
        exporter.summary,
        "",
        f"- base model: `{manifest.base_model.spec}` ({manifest.base_model.model_type}, "
        f"weights sha256 `{manifest.base_model.weights_sha256[:16]}…`)",
        f"- made from: `{manifest.parent}` by {made_by}"
        + (f", {overall:.1%} of prunable weights removed" if overall is not None else ""),
        *(f"- {note}" for note in (manifest.notes.split("; ") if manifest.notes else [])),
        "",
        "## Load",
        "",
        exporter.usage.format(folder="<this folder>"),
        "",
        f"Written by excise {__version__}: `{command}`. `manifest.json` holds provenance, metrics and file hashes;",
        "validate before loading with `excise.artifacts.validation.validate_artifact`.",
        "",
    ]
    (Path(folder) / README_NAME).write_text("\n".join(lines))
