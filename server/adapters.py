"""Validation of a correction (LoRA adapter folder) before any engine sees it.

Safetensors only, PEFT LoRA format, a rank the engine accepts, and every
tensor's shape checked against the base model's config, so a correction made
for another model is refused with a clear message instead of failing inside
vLLM.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from safetensors import safe_open

from correction.errors import ExciseError

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
PICKLE_SUFFIXES = {".bin", ".pt", ".pth", ".ckpt", ".pkl"}
_KEY = re.compile(r"layers\.(\d+)\.[a-z_]+\.([a-z0-9_]+)\.lora_([AB])\.weight$")


@dataclass(frozen=True)
class Correction:
    path: Path
    rank: int
    base_hint: str | None  # base_model_name_or_path as written by the exporter


def validate_correction(folder: Path, base_dir: Path, max_rank: int) -> Correction:
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise ExciseError(f"correction {folder} is not a folder; pass a LoRA artifact folder")
    _verify_manifest(folder)
    pickled = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickled:
        raise ExciseError(f"correction {folder} contains pickle files {pickled}; excise loads safetensors only")
    config = _read_json(folder / ADAPTER_CONFIG, "the correction has no adapter config; export it with `excise export --to lora`")
    rank = _check_config(folder, config, max_rank)
    if not (folder / ADAPTER_WEIGHTS).is_file():
        raise ExciseError(f"correction {folder} has no {ADAPTER_WEIGHTS}; export it with `excise export --to lora`")
    _check_shapes(folder, rank, _module_dims(_read_json(base_dir / "config.json", "the base is not a model folder")))
    return Correction(path=folder, rank=rank, base_hint=config.get("base_model_name_or_path"))


def _verify_manifest(folder: Path) -> None:
    from correction.manifest import MANIFEST_NAME, Manifest

    if (folder / MANIFEST_NAME).is_file():
        manifest = Manifest.load(folder, verify=True)
        if manifest.kind != "lora":
            raise ExciseError(f"{folder} is a {manifest.kind!r} artifact, not a correction; export it with --to lora")


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
    with safe_open(folder / ADAPTER_WEIGHTS, framework="pt") as weights:
        keys = list(weights.keys())
        if not keys:
            raise ExciseError(f"correction {folder} has no tensors")
        for key in keys:
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
            shape = tuple(weights.get_slice(key).get_shape())
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
