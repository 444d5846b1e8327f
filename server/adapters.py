"""What the server loads, checked before any engine sees it, through `excise.artifacts.validation`.

An excise artifact (an `hf`/`shrunk` export named as `weights`, a `lora` correction)
must carry its manifest and pass `validate_artifact` against the weights its engine
will actually load: every listed file hashed, the base model's weights hash compared.
Only a variant whose config says `verify: false` may serve a folder without one (a
third-party PEFT LoRA, say); it is still safetensors-only, code-free and shape-checked,
and is shown as unverified. On top, a correction must be a LoRA vLLM serves: a rank
the engine accepts and per-layer tensors whose shapes fit the base model's config.
Runtime corrections (`POST /v1/corrections`) must also lie under the corrections root.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from excise.errors import ExciseError
from excise.artifacts.manifest import MANIFEST_NAME, Manifest
from excise.models.loading import validate_model_folder
from excise.artifacts.headers import tensor_specs
from excise.artifacts.validation import check_dense_against_base, refuse_pickle, refuse_remote_code, validate_artifact
from server.config import CORRECTION_KINDS, MODEL_KINDS

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
_KEY = re.compile(r"layers\.(\d+)\.[a-z_]+\.([a-z0-9_]+)\.lora_([AB])\.weight$")
#: the one answer to every refused runtime correction path, so it cannot probe the file system
OUTSIDE_ROOT = "path is not a readable correction folder under the server's corrections root; pass its name relative to that root"


@dataclass(frozen=True)
class ServedModel:
    """An engine's weights folder: validated, with its manifest when it is an excise export."""

    path: Path
    manifest: Manifest | None
    verified: bool


@dataclass(frozen=True)
class Correction:
    path: Path
    rank: int
    manifest: Manifest | None
    verified: bool


def validate_model(folder: Path, *, base: Path | None, verify: bool) -> ServedModel:
    """The folder an engine loads. `base` is given when it is served as exported `weights` of that base:
    then it must be an excise export of exactly those base weights (unless `verify` is off)."""
    folder = Path(folder)
    if verify and (base is not None or (folder / MANIFEST_NAME).is_file()):
        if not (folder / MANIFEST_NAME).is_file():
            raise ExciseError(
                f"{folder} is not an excise artifact (no {MANIFEST_NAME}); serve an `excise export` folder, "
                "or set `verify: false` on this variant to serve it unverified"
            )
        validated = validate_artifact(folder, kinds=frozenset(MODEL_KINDS), base=base)
        return ServedModel(path=folder, manifest=validated.manifest, verified=True)
    validate_model_folder(folder)
    refuse_pickle(folder)
    refuse_remote_code(folder)
    if base is not None:
        check_dense_against_base(folder, base, may_shrink=True)
    return ServedModel(path=folder, manifest=None, verified=verify)


def validate_correction(folder: Path, engine_weights: Path, max_rank: int, *, verify: bool = True) -> Correction:
    """A LoRA correction for the engine that loads `engine_weights`."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ExciseError(f"correction {folder} is not a folder; pass a LoRA artifact folder")
    manifest = None
    if verify:
        if not (folder / MANIFEST_NAME).is_file():
            raise ExciseError(
                f"correction {folder} is not an excise artifact (no {MANIFEST_NAME}); export it with "
                "`excise export --to lora`, or set `verify: false` on this variant to serve it unverified"
            )
        manifest = validate_artifact(folder, kinds=frozenset(CORRECTION_KINDS), base=engine_weights).manifest
    else:
        refuse_pickle(folder)
        refuse_remote_code(folder)
    config = _read_json(folder / ADAPTER_CONFIG, "the correction has no adapter config; export it with `excise export --to lora`")
    rank = _check_config(folder, config, max_rank)
    if not (folder / ADAPTER_WEIGHTS).is_file():
        raise ExciseError(f"correction {folder} has no {ADAPTER_WEIGHTS}; export it with `excise export --to lora`")
    _check_shapes(folder, rank, _module_dims(_read_json(engine_weights / "config.json", "the base is not a model folder")))
    return Correction(path=folder, rank=rank, manifest=manifest, verified=verify)


def confine(path: str, root: Path | None) -> Path:
    """`path` (relative to `root`, or absolute) resolved through every link, if it is a readable folder
    inside `root`; any other path gets the same `OUTSIDE_ROOT` answer."""
    if root is None:
        raise ExciseError(OUTSIDE_ROOT)
    try:
        top = Path(root).resolve(strict=True)
        resolved = (top / path).resolve(strict=True)
    except (OSError, RuntimeError, ValueError):
        raise ExciseError(OUTSIDE_ROOT) from None
    if not (resolved.is_relative_to(top) and resolved.is_dir() and os.access(resolved, os.R_OK | os.X_OK)):
        raise ExciseError(OUTSIDE_ROOT)
    return resolved


def _check_config(folder: Path, config: dict, max_rank: int) -> int:
    if config.get("peft_type") != "LORA":
        raise ExciseError(f"correction {folder} is a {config.get('peft_type')!r} adapter; only LoRA is served")
    rank = config.get("r")
    if not isinstance(rank, int) or rank < 1:
        raise ExciseError(f"correction {folder} has no valid rank r in {ADAPTER_CONFIG}")
    if rank > max_rank:
        raise ExciseError(
            f"correction {folder} has rank {rank} > the engine's max_lora_rank {max_rank}; "
            "raise max_lora_rank in the engine options or serve the `hf` export instead"
        )
    if config.get("use_dora") or config.get("modules_to_save"):
        raise ExciseError(f"correction {folder} uses DoRA or modules_to_save, which vLLM does not serve")
    return rank


def _module_dims(base: dict) -> dict[str, tuple[int, int]]:
    """(in_features, out_features) per LoRA-targetable module of the base."""
    hidden = base.get("hidden_size")
    inter = base.get("intermediate_size") or base.get("ffn_dim")
    heads = base.get("num_attention_heads")
    kv_heads = base.get("num_key_value_heads") or heads
    head_dim = base.get("head_dim") or (hidden // heads if hidden and heads else None)
    return {
        "down_proj": (inter, hidden), "gate_proj": (hidden, inter), "up_proj": (hidden, inter),
        "fc1": (hidden, inter), "fc2": (inter, hidden),
        "q_proj": (hidden, heads * head_dim), "k_proj": (hidden, kv_heads * head_dim),
        "v_proj": (hidden, kv_heads * head_dim), "o_proj": (heads * head_dim, hidden),
        "_layers": (base.get("num_hidden_layers"), 0),
    }


def _check_shapes(folder: Path, rank: int, dims: dict[str, tuple[int, int]]) -> None:
    n_layers = dims["_layers"][0]
    tensors = tensor_specs(folder, ADAPTER_WEIGHTS)
    if not tensors:
        raise ExciseError(f"correction {folder} has no tensors")
    for key, (shape, _) in tensors.items():
        match = _KEY.search(key)
        if match is None:
            raise ExciseError(f"correction {folder}: tensor {key!r} is not a per-layer LoRA weight vLLM serves")
        layer, module, ab = int(match.group(1)), match.group(2), match.group(3)
        if module not in dims or module == "_layers":
            raise ExciseError(f"correction {folder}: module {module!r} is not in this base model")
        if n_layers is not None and layer >= n_layers:
            raise ExciseError(f"correction {folder}: layer {layer} does not exist in a {n_layers}-layer base; wrong base model?")
        in_f, out_f = dims[module]
        expected = (rank, in_f) if ab == "A" else (out_f, rank)
        if shape != expected:
            raise ExciseError(
                f"correction {folder}: {key} has shape {list(shape)}, expected {list(expected)} "
                "for this base model; was it made for another model?"
            )


def _read_json(path: Path, hint: str) -> dict:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ExciseError(f"{path} is missing; {hint}") from None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ExciseError(f"{path} is unreadable ({exc}); {hint}") from None
    if not isinstance(data, dict):
        raise ExciseError(f"{path} is not a JSON object; {hint}")
    return data
