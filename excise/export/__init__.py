"""Export formats: one module per format behind `Exporter`, in an explicit registry.

- `sparse`: excise's compressed sparse checkpoint (kept values + packed bitmask per pruned weight);
- `hf`: a dense Hugging Face folder with the mask applied (also from `sparse` back to dense);
- `shrunk`: structured removal made physical (fewer MLP neurons, heads where the config allows);
- `lora`: a neuron-only mask as an exact PEFT LoRA adapter on the base model.
"""

from __future__ import annotations

from excise.export.base import ExportOptions, Exporter, ExportResult
from excise.export.hf import HfExporter
from excise.export.lora import LoraExporter
from excise.export.shrunk import ShrunkExporter
from excise.export.sparse import SparseExporter
from excise.registry import Registry

EXPORTERS: Registry[Exporter] = Registry("export format")
for _exporter in (SparseExporter(), HfExporter(), ShrunkExporter(), LoraExporter()):
    EXPORTERS.add(_exporter.name, _exporter)


def get_exporter(name: str) -> Exporter:
    return EXPORTERS[name]


__all__ = ["EXPORTERS", "ExportOptions", "ExportResult", "Exporter", "get_exporter"]
