"""Variants: the model names clients ask for, each bound to an engine and
optionally to a LoRA correction on it; plus runtime registration.

`plan` turns a config into engine specs and variants before any engine starts,
resolving and validating every model folder and correction first
(`server.adapters`, which goes through `excise.artifacts.validation`), so a bad
config or artifact fails at start-up with a clear message.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from vllm.lora.request import LoRARequest

from excise.errors import ExciseError
from excise.artifacts.manifest import Manifest
from excise.models.loading import resolve_model_path
from server.adapters import OUTSIDE_ROOT, ServedModel, confine, validate_correction, validate_model
from server.config import EngineOptions, ServingConfig, VariantConfig, safe_name
from server.engines import EnginePool, EngineSpec
from server.errors import BadRequest, Conflict, NotFound

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
    base = _resolve(vc.base)
    folder, of_base = (_resolve(vc.weights), base) if vc.weights is not None else (base, None)
    key = (folder.resolve(), of_base, vc.verify)
    if key not in seen:
        seen[key] = validate_model(folder, base=of_base, verify=vc.verify)
    return seen[key]


def _resolve(spec: str | Path) -> Path:
    return resolve_model_path(str(spec))


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
        self._lock = asyncio.Lock()

    def get(self, name: str) -> Variant | None:
        return self._variants.get(name)

    def all(self) -> list[Variant]:
        return list(self._variants.values())

    async def preload_corrections(self) -> None:
        """Load configured corrections into their engines so the first request pays nothing."""
        for variant in self.all():
            if variant.lora is not None:
                await self._pool.add_lora(variant.engine_key, variant.lora)

    async def register(self, name: str, base_name: str, path: str, root: Path | None, reserved: set[str]) -> Variant:
        async with self._lock:
            if name in self._variants or name in reserved:
                raise Conflict(f"model name {name!r} is taken; choose another or DELETE it first", param="name")
            base = self._variants.get(base_name)
            if base is None:
                raise NotFound(f"base variant {base_name!r} does not exist; see GET /v1/models", param="base")
            if base.lora is not None:
                raise BadRequest(f"{base_name!r} is itself a correction; register on its base {Path(base.base).name!r}", param="base")
            engine = self._pool.get(base.engine_key, retry_after_s=5)
            try:
                folder = confine(path, root)
            except ExciseError as exc:
                raise BadRequest(str(exc), param="path") from None
            try:
                correction = await asyncio.to_thread(
                    validate_correction, folder, engine.spec.model_path, engine.spec.options.max_lora_rank
                )
            except OSError:  # unreadable inside: the same answer as outside
                raise BadRequest(OUTSIDE_ROOT, param="path") from None
            except ExciseError as exc:
                # Say what is wrong with which file, in the caller's terms: no server path in the answer.
                message = str(exc).replace(str(folder), path).replace(str(engine.spec.model_path), f"base {base_name!r}")
                raise BadRequest(message, param="path") from None
            lora = LoRARequest(name, next_lora_id(), str(correction.path))
            await self._pool.add_lora(base.engine_key, lora)
            variant = Variant(
                name=name, engine_key=base.engine_key, base=base.base, lora=lora, correction=correction.path,
                manifest=correction.manifest, runtime=True,
            )
            self._variants[name] = variant
            return variant

    async def unregister(self, name: str, drain_s: float) -> Variant:
        async with self._lock:
            variant = self._variants.get(name)
            if variant is None or variant.lora is None:
                raise NotFound(f"no correction named {name!r}; see GET /v1/models", param="name", code="correction_not_found")
            # New requests stop finding it now; running ones finish before the adapter goes.
            del self._variants[name]
        deadline = time.monotonic() + drain_s
        while variant.in_flight > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await self._pool.remove_lora(variant.engine_key, variant.lora.lora_int_id)
        return variant
