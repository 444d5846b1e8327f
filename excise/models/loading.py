"""Turn a `--model` value into a validated local folder and a loaded model.

A model is a local Hugging Face folder or the name of an embedded model, prepared
here on first use; the folder checks are the artifact contract's
(`excise.artifacts.model_folder`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from excise.artifacts.model_folder import EMBEDDED_MODELS, locate_model, read_config, validate_model_folder
from excise.errors import ExciseError
from excise.models.embedded import prepare_embedded
from excise.models.placement import DTYPES, ComputeSettings, check_placement, refuse_offload

logger = logging.getLogger(__name__)

__all__ = ["LoadedModel", "load_job_model", "load_model", "read_config", "resolve_model_path", "validate_model_folder"]


@dataclass
class LoadedModel:
    model: Any  # transformers PreTrainedModel
    tokenizer: Any
    path: Path


def resolve_model_path(spec: str | Path) -> Path:
    """A local folder (validated) or an embedded model name (prepared on first use)."""
    if str(spec) in EMBEDDED_MODELS:
        prepare_embedded(str(spec))
    return locate_model(spec)


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
