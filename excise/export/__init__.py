"""Export formats: one module per format behind `Exporter`, in an explicit registry.

- `sparse`: excise's compressed sparse checkpoint (kept values + packed bitmask per pruned weight);
- `hf`: a dense Hugging Face folder with the mask applied (also from `sparse` back to dense);
- `shrunk`: structured removal made physical (fewer MLP neurons, heads where the config allows);
- `lora`: a neuron-only mask as an exact PEFT LoRA adapter on the base model.
"""

from __future__ import annotations

from excise.errors import ExciseError
from excise.export.base import ExportOptions, Exporter, ExportResult
from excise.export.hf import HfExporter
from excise.export.lora import LoraExporter
from excise.export.shrunk import ShrunkExporter
from excise.export.sparse import SparseExporter

EXPORTERS: dict[str, Exporter] = {}


def register_exporter(exporter: Exporter) -> Exporter:
    if exporter.name in EXPORTERS:
        raise ValueError(f"export format {exporter.name!r} is already registered")
    EXPORTERS[exporter.name] = exporter
    return exporter


for _exporter in (SparseExporter(), HfExporter(), ShrunkExporter(), LoraExporter()):
    register_exporter(_exporter)


def get_exporter(name: str) -> Exporter:
    try:
        return EXPORTERS[name]
    except KeyError:
        raise ExciseError(f"unknown export format {name!r}; choose one of: {', '.join(EXPORTERS)}") from None


__all__ = ["EXPORTERS", "ExportOptions", "ExportResult", "Exporter", "get_exporter", "register_exporter"]
