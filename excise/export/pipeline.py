"""`export_artifact`: validate the input, let the format check and write it, manifest, card, validate, rename."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from excise.artifacts.atomic import atomic_folder
from excise.errors import ExciseError
from excise.export import EXPORTERS, get_exporter
from excise.export.base import ExportOptions, write_card
from excise.export.source import open_source
from excise.artifacts.manifest import Manifest
from excise.artifacts.validation import validate_derived

logger = logging.getLogger(__name__)


def export_artifact(artifact: Path, to: str, out: Path, *, force: bool = False, dtype: str | None = None) -> Manifest:
    """Export `artifact` as format `to` into `out` (written atomically); returns the new manifest."""
    exporter = get_exporter(to)
    options = ExportOptions(dtype=dtype)
    source = open_source(artifact)
    if source.kind not in exporter.sources:
        possible = [name for name, other in EXPORTERS.items() if source.kind in other.sources]
        raise ExciseError(
            f"cannot export a {source.kind} artifact to {to}; from {source.kind} excise exports to: {', '.join(possible)}"
        )
    if Path(out).resolve() == source.folder.resolve():
        raise ExciseError(f"--out {out} is the input artifact itself; choose another folder")
    exporter.check(source, options)
    started = time.perf_counter()
    with atomic_folder(Path(out), force=force) as tmp:
        logger.info("exporting %s to %s in %s", source.folder, to, out)
        result = exporter.write(source, tmp, options)
        parent = source.manifest
        manifest = Manifest(
            kind=exporter.name,
            base_model=parent.base_model,
            method=parent.method,
            data=parent.data,
            sparsity=parent.sparsity,
            metrics={**parent.metrics, **result.metrics},
            timings={"export_s": round(time.perf_counter() - started, 3)},
            parent=str(source.folder.resolve()),
            notes="; ".join(result.notes) or None,
        )
        command = f"excise export {source.folder} --to {to} --out {out}" + (f" --dtype {dtype}" if dtype else "")
        write_card(tmp, exporter, manifest, command)
        manifest.save(tmp)
        validate_derived(tmp, source)  # what is renamed into place passes the checks every later load runs
    logger.info("wrote %s", out)
    return manifest
