"""`sparse`: excise's compressed sparse checkpoint, and its way back to a dense folder.

The folder is the dense Hugging Face folder of the masked model, except that in
its safetensors files every pruned weight `W` (any mask entry False) is stored as
`W:values` (the kept values, 1-D, row-major order, same dtype) and `W:bitmask`
(the mask bit-packed, 8 per byte, `numpy.packbits` order). Everything else is
stored as is. Each file's metadata holds `excise_sparse` = JSON
`{"format_version": 1, "tensors": {W: shape}}`. Decoding puts the values back
at the mask's positions and +0.0 elsewhere, which restores the masked model bit
for bit (pruned weights are +0.0 there, see `load_masked`).

Size per pruned tensor of n weights at sparsity s: (1 - s)·n·bytes + n/8, so at
50% it is 0.531 of dense in fp32 and 0.5625 in bf16. Embeddings and norms are
not pruned and stay dense, so the whole-file ratio is higher (stated in the
manifest's `sparse_size`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from excise.errors import ExciseError
from excise.export.base import ExportOptions, Exporter, ExportResult
from excise.export.source import ExportSource, load_masked, save_model_folder
from excise.artifacts.manifest import MANIFEST_NAME
from excise.artifacts.masks import pack_bits, unpack_bits
from excise.models.loading import validate_model_folder
from excise.artifacts.validation import FLOAT_DTYPES, check_tensor, tensor_specs

logger = logging.getLogger(__name__)

SPARSE_FORMAT_VERSION = 1
METADATA_KEY = "excise_sparse"
VALUES, BITMASK = ":values", ":bitmask"
_STANDARD_METADATA = {"format": "pt"}  # what transformers writes and expects


def encode_file(path: Path, masks: dict[str, torch.Tensor]) -> tuple[int, int]:
    """Rewrite one safetensors file in sparse form; returns (dense, sparse) bytes of the pruned tensors."""
    dense = load_file(path)
    encoded: dict[str, torch.Tensor] = {}
    shapes: dict[str, list[int]] = {}
    dense_bytes = sparse_bytes = 0
    for name, tensor in dense.items():
        mask = masks.get(name)
        if mask is None or bool(mask.all()):
            encoded[name] = tensor
            continue
        encoded[name + VALUES] = tensor[mask].contiguous()  # [kept], row-major order
        encoded[name + BITMASK] = pack_bits(mask)  # [ceil(numel / 8)] uint8
        shapes[name] = list(tensor.shape)
        dense_bytes += tensor.numel() * tensor.element_size()
        sparse_bytes += sum(encoded[name + s].numel() * encoded[name + s].element_size() for s in (VALUES, BITMASK))
    header = json.dumps({"format_version": SPARSE_FORMAT_VERSION, "tensors": shapes}, sort_keys=True)
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(encoded, tmp, metadata={**_STANDARD_METADATA, METADATA_KEY: header})
    os.replace(tmp, path)
    return dense_bytes, sparse_bytes


def read_header(path: Path) -> dict[str, list[int]]:
    """The pruned tensors' shapes from a sparse file's metadata; refuses newer format versions."""
    with safe_open(path, framework="pt") as handle:
        raw = (handle.metadata() or {}).get(METADATA_KEY)
    if raw is None:
        raise ExciseError(f"{path} is not an excise sparse file (no {METADATA_KEY} metadata)")
    try:
        header = json.loads(raw)
        version, shapes = header["format_version"], header["tensors"]
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise ExciseError(f"{path} has a corrupt {METADATA_KEY} header ({error})") from error
    if version > SPARSE_FORMAT_VERSION:
        raise ExciseError(
            f"{path} is sparse format version {version}, newer than this excise reads ({SPARSE_FORMAT_VERSION}); "
            "upgrade excise"
        )
    return shapes


def decode_file(path: Path) -> dict[str, torch.Tensor]:
    """The dense tensors of one sparse safetensors file."""
    shapes = read_header(path)
    stored = load_file(path)
    dense = {name: tensor for name, tensor in stored.items() if not name.endswith((VALUES, BITMASK))}
    for name, shape in shapes.items():
        values = stored[name + VALUES]
        mask = unpack_bits(stored[name + BITMASK], shape)
        if int(mask.sum()) != values.numel():
            raise ExciseError(f"{path}: {name} has {values.numel()} values for {int(mask.sum())} kept positions")
        tensor = torch.zeros(shape, dtype=values.dtype)
        tensor[mask] = values
        dense[name] = tensor
    return dense


def densify(folder: Path, out: Path) -> None:
    """Write the dense Hugging Face folder a sparse checkpoint encodes (its own manifest and card excluded)."""
    for path in sorted(Path(folder).iterdir()):
        if path.suffix == ".safetensors":
            save_file(decode_file(path), out / path.name, metadata=_STANDARD_METADATA)
        elif path.name not in {MANIFEST_NAME, "README.md"}:
            shutil.copy2(path, out / path.name)


def stored_dtype(folder: Path) -> str:
    """The dtype of a sparse checkpoint's floating tensors, by torch name."""
    dtypes = {dtype for _, dtype in tensor_specs(folder).values() if dtype in FLOAT_DTYPES}
    names = {"F32": "float32", "BF16": "bfloat16", "F16": "float16"}
    return names[dtypes.pop()] if len(dtypes) == 1 else "mixed"


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

    def validate(self, folder: Path, base_path: Path) -> None:
        validate_model_folder(folder)
        base = tensor_specs(base_path)
        stored = tensor_specs(folder)
        shapes: dict[str, list[int]] = {}
        for path in sorted(folder.glob("*.safetensors")):
            shapes |= read_header(path)
        for name, shape in shapes.items():
            if name not in base:
                raise ExciseError(f"{folder}: sparse tensor {name} is not in the base model")
            values_shape, dtype = stored.get(name + VALUES, ((), ""))
            check_tensor(folder, name, tuple(shape), dtype, base[name])
            bitmask = stored.get(name + BITMASK, ((), ""))
            numel = torch.Size(shape).numel()
            if bitmask != (((numel + 7) // 8,), "U8") or len(values_shape) != 1 or values_shape[0] > numel:
                raise ExciseError(f"{folder}: sparse tensor {name} is not stored as values + bitmask of its shape")
        plain = {name: spec for name, spec in stored.items() if not name.endswith((VALUES, BITMASK))}
        if set(plain) | set(shapes) != set(base):
            raise ExciseError(f"{folder} does not hold the base model's tensors; it was made for another model")
        for name, (shape, dtype) in plain.items():
            check_tensor(folder, name, shape, dtype, base[name])
