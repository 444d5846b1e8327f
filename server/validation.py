"""What the server loads, checked before any engine sees it, through the artifact contract.

An excise artifact (an `hf`/`shrunk` export named as `weights`, a `lora` correction)
must carry its manifest and pass `validate_artifact` against the weights its engine
will actually load: every listed file hashed, the base model's weights hash compared.
Only a variant whose config says `verify: false` may serve a folder without one (a
third-party PEFT LoRA, say); it is still safetensors-only, code-free and shape-checked,
and is shown as unverified. Either way a correction is checked once as a LoRA vLLM
serves (`excise.artifacts.lora`: per-layer tensors whose shapes fit the base model's
config), and on top its rank must fit the engine's `max_lora_rank`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from excise.artifacts.lora import adapter_rank, check_lora
from excise.artifacts.manifest import MANIFEST_NAME, Manifest
from excise.artifacts.model_folder import validate_model_folder
from excise.artifacts.validation import check_dense_against_base, refuse_pickle, refuse_remote_code, validate_artifact
from excise.errors import ExciseError
from server.config import CORRECTION_KINDS, MODEL_KINDS


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
    """A LoRA correction for the engine that loads `engine_weights`: the contract's checks
    (`excise.artifacts.lora`, through `validate_artifact` when verified) plus this engine's rank limit."""
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
        rank = adapter_rank(folder)
    else:
        refuse_pickle(folder)
        refuse_remote_code(folder)
        rank = check_lora(folder, engine_weights, excise_made=False)
    if rank > max_rank:
        raise ExciseError(
            f"correction {folder} has rank {rank} > the engine's max_lora_rank {max_rank}; "
            "raise max_lora_rank in the engine options or serve the `hf` export instead"
        )
    return Correction(path=folder, rank=rank, manifest=manifest, verified=verify)
