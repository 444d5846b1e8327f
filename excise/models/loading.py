"""Turn a `--model` value into a validated local folder and a loaded model.

A model is a local Hugging Face folder or the name of an embedded model. Before
anything loads it is checked: config readable, an architecture excise knows,
no remote code, safetensors weights only (never pickle), no sparsity or
quantization metadata (vLLM rejects them, and they mean the weights are not
plain dense tensors).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from excise.errors import ExciseError
from excise.models.adapters import adapter_class
from excise.models.embedded import EMBEDDED_MODELS, prepare_embedded
from excise.models.placement import DTYPES, ComputeSettings, check_placement, refuse_offload

logger = logging.getLogger(__name__)



@dataclass
class LoadedModel:
    model: Any  # transformers PreTrainedModel
    tokenizer: Any
    path: Path


def resolve_model_path(spec: str | Path) -> Path:
    """A local folder (validated) or an embedded model name (prepared on first use)."""
    if str(spec) in EMBEDDED_MODELS:
        return validate_model_folder(prepare_embedded(str(spec)))
    path = Path(spec).expanduser()
    if not path.exists():
        raise ExciseError(
            f"model {str(spec)!r} is neither a folder nor a known name; "
            f"pass a Hugging Face model folder or one of: {', '.join(sorted(EMBEDDED_MODELS))}"
        )
    return validate_model_folder(path)


def read_config(folder: Path) -> dict:
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise ExciseError(f"{folder} has no config.json; pass a Hugging Face model folder")
    try:
        return json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ExciseError(f"{config_path} is not valid JSON ({error}); the folder is corrupt") from error


def validate_model_folder(folder: Path) -> Path:
    folder = Path(folder)
    if not folder.is_dir():
        raise ExciseError(f"{folder} is not a folder; pass a Hugging Face model folder")
    config = read_config(folder)
    if "auto_map" in config:
        raise ExciseError(
            f"{folder} needs custom code (auto_map in config.json); excise never runs remote code — "
            "use a model of a supported architecture"
        )
    adapter_class(config.get("model_type", "<missing>"))
    if "sparsity_config" in config or "sparsity_config" in config.get("quantization_config", {}):
        raise ExciseError(
            f"{folder}/config.json carries a sparsity_config, which vLLM rejects; "
            "export a dense folder with `excise export --to hf`"
        )
    if "quantization_config" in config:
        raise ExciseError(f"{folder}/config.json has a quantization_config; excise needs dense weights")
    weights = sorted(folder.glob("*.safetensors"))
    if not weights:
        pickled = [p.name for p in folder.iterdir() if p.suffix in {".bin", ".pt", ".pth", ".ckpt"}]
        hint = f" (found pickle files {pickled}, which excise never loads)" if pickled else ""
        raise ExciseError(f"{folder} has no .safetensors weights{hint}; convert the model to safetensors")
    return folder


def load_model(
    spec: str | Path, *, dtype: str = "float32", device: str = "cpu", device_map: str | dict | None = None
) -> LoadedModel:
    """`device_map` (e.g. "auto") spreads a model larger than one device over several through
    accelerate, and then takes the place of `device`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if dtype not in DTYPES:
        raise ExciseError(f"dtype {dtype!r} is not supported; choose one of {', '.join(DTYPES)}")
    path = resolve_model_path(spec)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
        model = AutoModelForCausalLM.from_pretrained(
            path, dtype=DTYPES[dtype], trust_remote_code=False, use_safetensors=True, device_map=device_map
        )
    except (OSError, ValueError, RuntimeError) as error:
        raise ExciseError(f"cannot load the model in {path}: {error}") from error
    if device_map is None:
        model.to(device)
    else:
        check_placement(model)
    model.eval()
    return LoadedModel(model=model, tokenizer=tokenizer, path=path)


def load_job_model(spec: str | Path, settings: ComputeSettings, job: str) -> LoadedModel:
    """The model a prune, correct or circuit job works on, loaded as its settings say; refused
    when its device map offloads weights, which the job's masks would have to change."""
    loaded = load_model(spec, **settings.load_options())
    if settings.device_map is not None:
        refuse_offload(loaded.model, job)
    return loaded
