"""Variants: the model names clients ask for, each bound to an engine and
optionally to a LoRA correction on it; the registry of those served now (corrections
added and removed while serving go through `server.corrections`).

`plan` turns a config into engine specs and variants before any engine starts,
resolving and validating every model folder and correction first
(`server.validation`, which goes through the artifact contract), so a bad config
or artifact fails at start-up with a clear message. A base named by an embedded
model's name must have been prepared (`excise serve` does that; `python -m server`
refuses an unprepared one in one line).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from vllm.lora.request import LoRARequest

from excise.artifacts.manifest import Manifest
from excise.artifacts.model_folder import locate_model
from excise.errors import ExciseError
from server.config import EngineOptions, ServingConfig, VariantConfig, safe_name
from server.engines import EnginePool, EngineSpec
from server.errors import Conflict
from server.validation import ServedModel, validate_correction, validate_model

log = logging.getLogger(__name__)


@dataclass
class Variant:
    name: str
    engine_key: str
    base: str
    lora: LoRARequest | None = None
    correction: Path | None = None
    manifest: Manifest | None = None  # of the artifact behind it (its correction, else its exported weights)
    verified: bool = True  # False: served with `verify: false`, its artifact unchecked
    runtime: bool = False  # registered through POST /v1/corrections
    created: int = field(default_factory=lambda: int(time.time()))
    in_flight: int = 0


@dataclass
class Plan:
    specs: list[EngineSpec]
    variants: dict[str, Variant]


_lora_ids = itertools.count(1)


def next_lora_id() -> int:
    return next(_lora_ids)


def plan(config: ServingConfig, *, runtime_corrections: bool) -> Plan:
    """Engine specs (one per distinct weights + options) and the variants on them."""
    engines: dict[tuple[Path, EngineOptions], str] = {}
    paths: dict[tuple[Path, EngineOptions], Path] = {}
    has_lora: set[str] = set()
    variants: dict[str, Variant] = {}
    served: dict[tuple[Path, Path | None, bool], ServedModel] = {}
    for vc in config.variants:
        options = config.engine_options(vc)
        model = _served_model(vc, served)
        weights = model.path
        ident = (weights.resolve(), options)
        if ident not in engines:
            engines[ident] = _unique_key(safe_name(Path(vc.base).name if vc.weights is None else weights.name), engines.values())
            paths[ident] = weights
        key = engines[ident]
        variant = Variant(name=vc.name, engine_key=key, base=vc.base, manifest=model.manifest, verified=model.verified)
        if vc.correction is not None:
            correction = validate_correction(vc.correction, weights, options.max_lora_rank, verify=vc.verify)
            variant.correction = correction.path
            variant.manifest, variant.verified = correction.manifest, correction.verified and model.verified
            variant.lora = LoRARequest(vc.name, next_lora_id(), str(correction.path))
            has_lora.add(key)
        variants[vc.name] = variant
    specs = [
        EngineSpec(
            key=key,
            model_path=paths[ident],
            options=ident[1],
            enable_lora=ident[1].enable_lora if ident[1].enable_lora is not None else (key in has_lora or runtime_corrections),
        )
        for ident, key in engines.items()
    ]
    for spec in specs:
        if spec.key in has_lora and not spec.enable_lora:
            raise ExciseError(f"engine {spec.key!r} serves a correction but has enable_lora: false; remove that option")
    return Plan(specs=specs, variants=variants)


def _served_model(vc: VariantConfig, seen: dict[tuple[Path, Path | None, bool], ServedModel]) -> ServedModel:
    """The validated folder the variant's engine loads: its exported `weights` of `base`, else `base`."""
    base = locate_model(vc.base)
    folder, of_base = (locate_model(vc.weights), base) if vc.weights is not None else (base, None)
    key = (folder.resolve(), of_base, vc.verify)
    if key not in seen:
        seen[key] = validate_model(folder, base=of_base, verify=vc.verify)
    return seen[key]


def _unique_key(base: str, taken) -> str:
    taken = set(taken)
    if base not in taken:
        return base
    return next(f"{base}-{i}" for i in itertools.count(2) if f"{base}-{i}" not in taken)


class VariantRegistry:
    """Name -> variant, with corrections added and removed while serving."""

    def __init__(self, variants: dict[str, Variant], pool: EnginePool) -> None:
        self._variants = dict(variants)
        self._pool = pool
        self.lock = asyncio.Lock()  # held while a correction is added or removed

    def get(self, name: str) -> Variant | None:
        return self._variants.get(name)

    def all(self) -> list[Variant]:
        return list(self._variants.values())

    async def preload_corrections(self) -> None:
        """Load configured corrections into their engines so the first request pays nothing."""
        for variant in self.all():
            if variant.lora is not None:
                await self._pool.add_lora(variant.engine_key, variant.lora)

    def add(self, variant: Variant) -> None:
        """Serve `variant` under its name, checked free (`check_free`) under the same hold of `lock`."""
        self._variants[variant.name] = variant

    def check_free(self, name: str, reserved: set[str]) -> None:
        if name in self._variants or name in reserved:
            raise Conflict(f"model name {name!r} is taken; choose another or DELETE it first", param="name")

    def remove(self, name: str) -> Variant | None:
        """Stop serving the correction `name` (None if there is none); call while holding `lock`."""
        variant = self._variants.get(name)
        if variant is None or variant.lora is None:
            return None
        return self._variants.pop(name)
