"""The LoRA artifact: a PEFT adapter folder on a dense base model, as vLLM serves it.

`adapter_config.json` (peft_type LORA, rank `r`) and `adapter_model.safetensors` with an
A ([r, in]) and a B ([out, r]) factor per adapted module. vLLM serves a LoRA on the linear
modules of the decoder layers, of rank at most its engine's `max_lora_rank`, which must be one
of `VLLM_LORA_RANKS`; it serves neither DoRA nor `modules_to_save`. An excise LoRA (what
`excise export --to lora` writes) also has its rank padded to one of those ranks and
`lora_alpha = r` (scaling 1, the exact low-rank change). `check_lora` is the one check, for the
exporter's validation of its output and for the server, which adds only its engine's rank
limit. Light: no torch, no peft; tensors are read from the safetensors headers.
"""

from __future__ import annotations

from pathlib import Path

from excise.artifacts.families import family_of
from excise.artifacts.model_folder import read_config
from excise.artifacts.headers import FLOAT_DTYPES, read_json, tensor_specs
from excise.errors import ExciseError

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
PEFT_PREFIX = "base_model.model."
#: ranks vLLM's LoRA kernels accept as `max_lora_rank`; excise pads its adapters up to one of these
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
_EXPORT_HINT = "export it with `excise export --to lora`"


def served_rank(needed: int) -> int | None:
    """The smallest rank vLLM accepts that holds `needed`; None above the largest."""
    return next((rank for rank in VLLM_LORA_RANKS if rank >= needed), None)


def adapter_config(folder: Path) -> dict:
    path = Path(folder) / ADAPTER_CONFIG
    if not path.is_file():
        raise ExciseError(f"{path} is missing; the correction has no adapter config; {_EXPORT_HINT}")
    return read_json(path)


def adapter_rank(folder: Path, config: dict | None = None) -> int:
    """The adapter's rank `r`, if it is one vLLM can serve at all (1 to its largest rank)."""
    rank = (config if config is not None else adapter_config(folder)).get("r")
    if not isinstance(rank, int) or isinstance(rank, bool) or not 1 <= rank <= VLLM_LORA_RANKS[-1]:
        raise ExciseError(
            f"correction {folder}: LoRA rank r={rank!r} in {ADAPTER_CONFIG} is outside what vLLM serves "
            f"(1-{VLLM_LORA_RANKS[-1]}); serve the `hf` export instead"
        )
    return rank


def check_lora(folder: Path, base_path: Path, *, excise_made: bool) -> int:
    """Check a LoRA folder against the dense base it will be applied to; return its rank.

    `excise_made`: also the properties every excise export has (a padded rank, scaling 1)."""
    folder = Path(folder)
    config = adapter_config(folder)
    if config.get("peft_type") != "LORA":
        raise ExciseError(f"correction {folder} is a {config.get('peft_type')!r} adapter; only LoRA is served")
    rank = adapter_rank(folder, config)
    if config.get("use_dora") or config.get("modules_to_save"):
        raise ExciseError(f"correction {folder} uses DoRA or modules_to_save, which vLLM does not serve")
    if excise_made and (rank not in VLLM_LORA_RANKS or config.get("lora_alpha") != rank or config.get("use_rslora")):
        raise ExciseError(
            f"{folder}/{ADAPTER_CONFIG} is not an excise LoRA (peft_type LORA, r in {VLLM_LORA_RANKS}, "
            "lora_alpha = r, no rsLoRA)"
        )
    check_lora_tensors(folder, rank, base_path)
    return rank


def lora_targets(base_config: dict) -> dict[str, tuple[int, int]]:
    """(in_features, out_features) of every module a LoRA may adapt in this base, by module name."""
    family = family_of(base_config["model_type"])
    dims = family.linear_dims(base_config)
    return {
        f"{family.layers}.{layer}.{path}": shape
        for layer in range(base_config["num_hidden_layers"])
        for path, shape in dims.items()
    }


def check_lora_tensors(folder: Path, rank: int, base_path: Path) -> None:
    """Every tensor is an A or B factor of rank `rank` of a decoder-layer linear of the base."""
    if not (folder / ADAPTER_WEIGHTS).is_file():
        raise ExciseError(f"correction {folder} has no {ADAPTER_WEIGHTS}; {_EXPORT_HINT}")
    tensors = tensor_specs(folder, ADAPTER_WEIGHTS)
    if not tensors:
        raise ExciseError(f"correction {folder} has no tensors in {ADAPTER_WEIGHTS}")
    targets = lora_targets(read_config(base_path))
    for key, (shape, dtype) in tensors.items():
        module, _, part = key.removeprefix(PEFT_PREFIX).rpartition(".lora_")
        if part not in ("A.weight", "B.weight") or module not in targets:
            raise ExciseError(
                f"correction {folder}: tensor {key!r} is not a LoRA factor of a decoder-layer module of this "
                "base model; was it made for another model?"
            )
        in_features, out_features = targets[module]
        expected = (rank, in_features) if part == "A.weight" else (out_features, rank)
        if shape != expected:
            raise ExciseError(
                f"correction {folder}: {key} has shape {list(shape)}, expected {list(expected)} "
                "for this base model; was it made for another model?"
            )
        if dtype not in FLOAT_DTYPES:
            raise ExciseError(f"correction {folder}: {key} has dtype {dtype}; a LoRA factor is a float tensor")
