"""The `sparse` artifact: excise's compressed sparse checkpoint, its encoding, decoding and check.

The folder is the dense Hugging Face folder of the masked model, except that in
its safetensors files every pruned weight `W` (any mask entry False) is stored as
`W:values` (the kept values, 1-D, row-major order, same dtype) and `W:bitmask`
(the mask bit-packed, 8 per byte, `numpy.packbits` order). Everything else is
stored as is. Each file's metadata holds `excise_sparse` = JSON
`{"format_version": 1, "tensors": {W: shape}}`. Decoding puts the values back
at the mask's positions and +0.0 elsewhere, which restores the masked model bit
for bit (pruned weights are +0.0 there, see `excise.export.source.load_masked`).

Size per pruned tensor of n weights at sparsity s: (1 - s)·n·bytes + n/8, so at
50% it is 0.531 of dense in fp32 and 0.5625 in bf16. Embeddings and norms are
not pruned and stay dense, so the whole-file ratio is higher (stated in the
manifest's `sparse_size`).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from excise.artifacts.headers import FLOAT_DTYPES, check_tensor, tensor_specs
from excise.artifacts.manifest import MANIFEST_NAME, README_NAME
from excise.artifacts.masks import pack_bits, unpack_bits
from excise.artifacts.model_folder import validate_model_folder
from excise.errors import ExciseError

SPARSE_FORMAT_VERSION = 1
METADATA_KEY = "excise_sparse"
VALUES, BITMASK = ":values", ":bitmask"
_STANDARD_METADATA = {"format": "pt"}  # what transformers writes and expects
#: files of the dense folder that are not the checkpoint's own (copied back by `densify` without them)
_OWN_FILES = frozenset({MANIFEST_NAME, README_NAME})


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
        elif path.name not in _OWN_FILES:
            shutil.copy2(path, out / path.name)


def stored_dtype(folder: Path) -> str:
    """The dtype of a sparse checkpoint's floating tensors, by torch name."""
    dtypes = {dtype for _, dtype in tensor_specs(folder).values() if dtype in FLOAT_DTYPES}
    names = {"F32": "float32", "BF16": "bfloat16", "F16": "float16"}
    return names[dtypes.pop()] if len(dtypes) == 1 else "mixed"


def check_sparse(folder: Path, base_path: Path) -> None:
    """Every tensor of the base, dense or as values + bitmask of its shape, from the headers alone."""
    validate_model_folder(folder)
    base = tensor_specs(base_path)
    stored = tensor_specs(folder)
    shapes: dict[str, list[int]] = {}
    for path in sorted(Path(folder).glob("*.safetensors")):
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
