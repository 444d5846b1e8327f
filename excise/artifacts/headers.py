"""What an artifact's files say without loading a tensor: safetensors headers and JSON objects.

Every check against a base model compares names, shapes and dtypes read from the
safetensors headers, so validation never loads a weight.
"""

from __future__ import annotations

import json
from pathlib import Path

from safetensors import SafetensorError, safe_open

from excise.errors import ExciseError

FLOAT_DTYPES = frozenset({"F32", "BF16", "F16"})

TensorSpecs = dict[str, tuple[tuple[int, ...], str]]  # name -> (shape, safetensors dtype)


def tensor_specs(folder: Path, pattern: str = "*.safetensors") -> TensorSpecs:
    """Names, shapes and dtypes of every tensor in the folder's safetensors files, from their headers."""
    specs: TensorSpecs = {}
    for path in sorted(Path(folder).glob(pattern)):
        try:
            with safe_open(path, framework="pt") as handle:
                for name in handle.keys():  # noqa: SIM118 - safe_open has no __iter__
                    piece = handle.get_slice(name)
                    specs[name] = (tuple(piece.get_shape()), piece.get_dtype())
        except (SafetensorError, OSError) as error:
            raise ExciseError(f"{path} is not a readable safetensors file ({error})") from error
    return specs


def check_tensor(
    folder: Path, name: str, shape: tuple[int, ...], dtype: str, base: tuple[tuple[int, ...], str], *, may_shrink: bool = False
) -> None:
    """`name` has the base's dtype kind (any float for a float) and shape (with `may_shrink`, each
    dimension at most the base's, as after structured removal)."""
    base_shape, base_dtype = base
    same_kind = dtype in FLOAT_DTYPES if base_dtype in FLOAT_DTYPES else dtype == base_dtype
    if not same_kind:
        raise ExciseError(f"{folder}: tensor {name} has dtype {dtype}, incompatible with the base model's {base_dtype}")
    fits = len(shape) == len(base_shape) and all(
        (0 < ours <= theirs) if may_shrink else ours == theirs for ours, theirs in zip(shape, base_shape, strict=True)
    )
    if not fits:
        raise ExciseError(f"{folder}: tensor {name} has shape {list(shape)} but the base model's is {list(base_shape)}")


def read_json(path: Path) -> dict:
    """A JSON object from `path`, or a one-line error naming the file."""
    try:
        data = json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ExciseError(f"{path} is not valid JSON ({error})") from error
    if not isinstance(data, dict):
        raise ExciseError(f"{path} is not a JSON object")
    return data
