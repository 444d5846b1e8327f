"""`sparse`: excise's compressed sparse checkpoint (the format: `excise.artifacts.sparse`)."""

from __future__ import annotations

import logging
from pathlib import Path

from excise.artifacts.sparse import encode_file
from excise.export.base import ExportOptions, Exporter, ExportResult
from excise.export.source import ExportSource, load_masked, save_model_folder

logger = logging.getLogger(__name__)


class SparseExporter(Exporter):
    name = "sparse"
    summary = (
        "excise's compressed sparse checkpoint: each pruned weight as its kept values plus a packed bitmask, "
        "everything else as is (safetensors). For storage and transfer; vLLM does not load it."
    )
    usage = "Back to a dense folder vLLM and transformers load: `excise export {folder} --to hf --out DENSE_DIR`."

    def write(self, source: ExportSource, folder: Path, options: ExportOptions) -> ExportResult:
        loaded, weight_masks = load_masked(source, self.name, dtype=options.weights_dtype)
        save_model_folder(loaded, folder)
        files = sorted(folder.glob("*.safetensors"))
        dense_total = sum(path.stat().st_size for path in files)
        pruned_dense = pruned_sparse = 0
        for path in files:
            dense_bytes, sparse_bytes = encode_file(path, weight_masks)
            pruned_dense += dense_bytes
            pruned_sparse += sparse_bytes
        sparse_total = sum(path.stat().st_size for path in files)
        size = {
            "dtype": options.weights_dtype,
            "dense_bytes": dense_total,
            "sparse_bytes": sparse_total,
            "ratio": round(sparse_total / dense_total, 4),
            "pruned_tensors_dense_bytes": pruned_dense,
            "pruned_tensors_sparse_bytes": pruned_sparse,
            "pruned_tensors_ratio": round(pruned_sparse / pruned_dense, 4) if pruned_dense else None,
        }
        logger.info("sparse checkpoint: %.3f of dense overall, %s over pruned tensors", size["ratio"], size["pruned_tensors_ratio"])
        return ExportResult(metrics={"sparse_size": size})
