"""`hf`: a dense Hugging Face folder with the mask applied, loadable by transformers and vLLM.

Pruned weights are zeros; the config carries no sparsity or quantization
metadata (vLLM rejects `sparsity_config`). From a `sparse` checkpoint this is
the way back to dense, bit for bit.
"""

from __future__ import annotations

from pathlib import Path

from excise.errors import ExciseError
from excise.export.base import ExportOptions, Exporter, ExportResult
from excise.export.source import ExportSource, load_masked, save_model_folder
from excise.artifacts.sparse import densify, stored_dtype
from excise.artifacts.validation import MASK_KINDS


class HfExporter(Exporter):
    name = "hf"
    summary = "A dense Hugging Face folder with the mask applied (pruned weights are zeros), for transformers and vLLM."
    usage = (
        "`transformers.AutoModelForCausalLM.from_pretrained('{folder}')` or "
        "`vllm.LLM(model='{folder}')`; both match the masked model."
    )
    sources = MASK_KINDS | {"sparse"}

    def check(self, source: ExportSource, options: ExportOptions) -> None:
        if source.kind == "sparse" and options.dtype not in (None, stored_dtype(source.folder)):
            raise ExciseError(
                f"{source.folder} is stored in {stored_dtype(source.folder)} and is restored bit for bit; drop --dtype"
            )

    def write(self, source: ExportSource, folder: Path, options: ExportOptions) -> ExportResult:
        if source.kind == "sparse":
            densify(source.folder, folder)
            return ExportResult(notes=[f"restored from the sparse checkpoint {source.folder.name}"])
        loaded, _ = load_masked(source, self.name, dtype=options.weights_dtype)
        save_model_folder(loaded, folder)
        return ExportResult()
