"""What the server serves: variants (base weights + optional correction adapter)
and A/B experiments over them. Typed, `extra="forbid"`, YAML or JSON.

A variant names its weights (`base`, or `weights` for an exported pruned or
shrunk folder of that base) and optionally a `correction` (a LoRA adapter
folder). Variants with the same weights and engine options share one vLLM
engine; a correction is a LoRA on that engine, never a second weight copy.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from excise.artifacts.lora import VLLM_LORA_RANKS, adapter_rank, served_rank
from excise.artifacts.manifest import MANIFEST_NAME, Manifest
from excise.errors import ExciseError

log = logging.getLogger(__name__)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise ValueError(
            f"name {name!r} must be 1-64 characters of letters, digits, '.', '_', ':' or '-', "
            "starting with a letter or digit"
        )
    return name


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EngineOptions(_Strict):
    """Passed through to vLLM's engine arguments."""

    dtype: Literal["model", "auto", "float32", "bfloat16", "float16"] = Field(
        "model",
        description="model: on CPU the dtype the model folder's config.json records (what its manifest's metrics were "
        "measured in; vLLM's `auto` would serve an fp32 folder in bfloat16 there), vLLM's `auto` elsewhere.",
    )
    max_model_len: int | None = Field(None, gt=0)
    gpu_memory_utilization: float | None = Field(None, gt=0, le=1)
    tensor_parallel_size: int = Field(1, ge=1)
    pipeline_parallel_size: int = Field(1, ge=1)
    max_num_seqs: int | None = Field(None, ge=1)
    enforce_eager: bool | None = Field(None, description="None: True on CPU (starts ~2x faster), vLLM's default elsewhere.")
    enable_lora: bool | None = Field(None, description="None: on when a correction can be served on this engine.")
    max_lora_rank: int = 64
    max_loras: int = Field(4, ge=1)
    seed: int = 0

    @field_validator("max_lora_rank")
    @classmethod
    def _rank(cls, value: int) -> int:
        if value not in VLLM_LORA_RANKS:
            raise ValueError(f"max_lora_rank must be one of {VLLM_LORA_RANKS}, got {value}")
        return value


class VariantConfig(_Strict):
    name: str
    base: str = Field(description="HF folder or embedded model name (smollm2).")
    weights: Path | None = Field(None, description="Exported dense/shrunk folder of `base` to serve instead.")
    correction: Path | None = Field(None, description="LoRA adapter folder (PEFT format) served on the base engine.")
    verify: bool = Field(
        True,
        description="False serves `weights`/`correction` folders without an excise manifest (e.g. a third-party "
        "PEFT LoRA), unverified: no hashes, no base identity; shown as unverified.",
    )
    engine: EngineOptions | None = None

    _check_name = field_validator("name")(classmethod(lambda cls, v: check_name(v)))

    @model_validator(mode="after")
    def _not_both(self):
        if self.weights is not None and self.correction is not None:
            raise ValueError(f"variant {self.name!r}: give weights or correction, not both")
        return self


class ArmConfig(_Strict):
    variant: str
    weight: float = Field(1.0, gt=0)


class ExperimentConfig(_Strict):
    name: str
    arms: list[ArmConfig] = Field(min_length=2)

    _check_name = field_validator("name")(classmethod(lambda cls, v: check_name(v)))

    @model_validator(mode="after")
    def _distinct_arms(self):
        names = [a.variant for a in self.arms]
        if len(set(names)) != len(names):
            raise ValueError(f"experiment {self.name!r} lists a variant twice: {names}")
        return self


class ServingConfig(_Strict):
    engine_defaults: EngineOptions = EngineOptions()
    variants: list[VariantConfig] = Field(min_length=1)
    experiments: list[ExperimentConfig] = []

    @model_validator(mode="after")
    def _names(self):
        variants = [v.name for v in self.variants]
        dupes = sorted({n for n in variants if variants.count(n) > 1})
        if dupes:
            raise ValueError(f"variant names must be unique, repeated: {dupes}")
        for exp in self.experiments:
            if exp.name in variants:
                raise ValueError(f"experiment {exp.name!r} has the name of a variant; pick another")
            missing = [a.variant for a in exp.arms if a.variant not in variants]
            if missing:
                raise ValueError(f"experiment {exp.name!r} names unknown variants {missing}; known: {variants}")
        return self

    def engine_options(self, variant: VariantConfig) -> EngineOptions:
        if variant.engine is None:
            return self.engine_defaults
        merged = self.engine_defaults.model_dump() | variant.engine.model_dump(exclude_unset=True)
        return EngineOptions(**merged)


def load_config(path: Path) -> ServingConfig:
    """Read a YAML or JSON config; relative paths in it are relative to the file."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ExciseError(f"cannot read config {path}: {exc.strerror}; check the path") from None
    try:
        raw = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ExciseError(f"config {path} is not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {exc}") from None
    return parse_config(raw, origin=str(path), root=path.parent)


def parse_config(raw: object, *, origin: str, root: Path | None = None) -> ServingConfig:
    try:
        config = ServingConfig.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "top level"
        raise ExciseError(
            f"config {origin}: {where}: {first['msg']} ({exc.error_count()} problem(s) in all)"
        ) from None
    return _anchor_paths(config, root) if root is not None else config


def _anchor_paths(config: ServingConfig, root: Path) -> ServingConfig:
    def anchor(p: Path | None) -> Path | None:
        if p is None:
            return None
        p = p.expanduser()
        return p if p.is_absolute() else (root / p).resolve()

    def anchor_base(base: str) -> str:
        # A base is a folder (relative to the config file) or an embedded name.
        candidate = Path(base).expanduser()
        if candidate.is_absolute():
            return str(candidate)
        return str((root / candidate).resolve()) if (root / candidate).exists() else base

    variants = [
        v.model_copy(update={"base": anchor_base(v.base), "weights": anchor(v.weights), "correction": anchor(v.correction)})
        for v in config.variants
    ]
    return config.model_copy(update={"variants": variants})


MODEL_KINDS = ("hf", "shrunk")
CORRECTION_KINDS = ("lora",)


def discover_artifacts(folder: Path) -> ServingConfig:
    """Variants from the artifact folders directly under `folder`.

    An `hf` or `shrunk` export is served as a model of its own; a `lora`
    correction is served on its base model's engine, and that base is served
    dense too. Variants are named after their folders (two folders that would
    get one name are refused); `variants.plan` validates every artifact.
    """
    if not folder.is_dir():
        raise ExciseError(f"artifacts folder {folder} does not exist; run the pipeline first or fix the path")
    variants: dict[str, VariantConfig] = {}
    for sub in sorted(p for p in folder.iterdir() if (p / MANIFEST_NAME).is_file()):
        # Only the kind and base are read here; `plan` validates every artifact completely.
        for variant in _variants_of(sub, Manifest.load(sub, verify=False)):
            known = variants.setdefault(variant.name, variant)
            if known != variant:  # the same base named by two corrections is one variant; anything else is a clash
                raise ExciseError(
                    f"two artifacts under {folder} would both be served as {variant.name!r} "
                    f"({known.correction or known.base} and {variant.correction or variant.base}); rename one folder"
                )
    if not variants:
        raise ExciseError(
            f"no servable artifact ({', '.join(MODEL_KINDS + CORRECTION_KINDS)}) under {folder}; "
            "export one with `excise export`"
        )
    # No config file to set engine options in: size the LoRA slots to the largest correction found.
    ranks = [adapter_rank(v.correction) for v in variants.values() if v.correction is not None]
    defaults = {"max_lora_rank": served_rank(max(ranks))} if ranks else {}
    raw = {"engine_defaults": defaults, "variants": [v.model_dump() for v in variants.values()]}
    return parse_config(raw, origin=str(folder))


def _variants_of(artifact: Path, manifest) -> list[VariantConfig]:
    name = safe_name(artifact.name)
    if manifest.kind in MODEL_KINDS:
        return [VariantConfig(name=name, base=str(artifact))]
    if manifest.kind in CORRECTION_KINDS:
        base = manifest.base_model.spec
        base_name = safe_name(Path(base).name)
        return [VariantConfig(name=base_name, base=base), VariantConfig(name=name, base=base, correction=artifact)]
    log.info("not serving %s: a %r artifact is not a model or a correction", artifact, manifest.kind)
    return []


def safe_name(name: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9._:-]", "-", name).strip("-._:")[:64]
    return cleaned or "variant"
