"""Corrections while serving: `POST /v1/corrections` adds a LoRA correction on a running base
engine, `DELETE /v1/corrections/{name}` removes one once its requests have finished.

Both need the admin key. A runtime correction is loaded from under the corrections root only
(`confine`), validated like a configured one (`server.validation`), and every refusal says
what is wrong in the caller's terms: no server path in the answer. A correction that is an
arm of an experiment is in use and cannot be removed. Additions and removals are audited.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path

from fastapi import APIRouter, Depends, Request
from vllm.lora.request import LoRARequest

from excise.errors import ExciseError
from server.config import check_name
from server.errors import BadRequest, Conflict, NotFound
from server.protocol import CorrectionRequest, CorrectionResponse
from server.security import check_admin_key
from server.serving import ServingContext
from server.validation import validate_correction
from server.variants import Variant, next_lora_id

audit = logging.getLogger("excise.audit")

#: the one answer to every refused runtime correction path, so it cannot probe the file system
OUTSIDE_ROOT = "path is not a readable correction folder under the server's corrections root; pass its name relative to that root"


def confine(path: str, root: Path | None) -> Path:
    """`path` (relative to `root`, or absolute) resolved through every link, if it is a readable folder
    inside `root`; any other path gets the same `OUTSIDE_ROOT` answer."""
    if root is None:
        raise ExciseError(OUTSIDE_ROOT)
    try:
        top = Path(root).resolve(strict=True)
        resolved = (top / path).resolve(strict=True)
    except (OSError, RuntimeError, ValueError):
        raise ExciseError(OUTSIDE_ROOT) from None
    if not (resolved.is_relative_to(top) and resolved.is_dir() and os.access(resolved, os.R_OK | os.X_OK)):
        raise ExciseError(OUTSIDE_ROOT)
    return resolved


class CorrectionServing:
    def __init__(self, ctx: ServingContext) -> None:
        self.ctx = ctx

    async def add(self, body: CorrectionRequest, client: str) -> CorrectionResponse:
        ctx, registry = self.ctx, self.ctx.registry
        try:
            check_name(body.name)
        except ValueError as exc:
            raise BadRequest(str(exc), param="name") from None
        async with registry.lock:
            registry.check_free(body.name, reserved=set(ctx.experiments))
            base = registry.get(body.base)
            if base is None:
                raise NotFound(f"base variant {body.base!r} does not exist; see GET /v1/models", param="base")
            if base.lora is not None:
                raise BadRequest(f"{body.base!r} is itself a correction; register on its base {Path(base.base).name!r}",
                                 param="base")
            engine = ctx.pool.get(base.engine_key, retry_after_s=5)
            try:
                folder = confine(body.path, ctx.settings.corrections_root or ctx.settings.artifacts)
            except ExciseError as exc:
                raise BadRequest(str(exc), param="path") from None
            weights = engine.spec.model_path
            try:
                correction = await asyncio.to_thread(
                    validate_correction, folder, weights, engine.spec.options.max_lora_rank
                )
            except OSError:  # unreadable inside: the same answer as outside
                raise BadRequest(OUTSIDE_ROOT, param="path") from None
            except ExciseError as exc:
                message = str(exc).replace(str(folder), body.path).replace(str(weights), f"base {body.base!r}")
                raise BadRequest(message, param="path") from None
            lora = LoRARequest(body.name, next_lora_id(), str(correction.path))
            await ctx.pool.add_lora(base.engine_key, lora)
            registry.add(Variant(
                name=body.name, engine_key=base.engine_key, base=base.base, lora=lora, correction=correction.path,
                manifest=correction.manifest, runtime=True,
            ))
        audit.info("correction added: name=%s base=%s path=%s client=%s", body.name, body.base, correction.path, client)
        return CorrectionResponse(name=body.name, base=body.base, path=body.path, lora_rank=correction.rank)

    async def remove(self, name: str, client: str) -> dict:
        ctx = self.ctx
        if self.in_use(name):
            raise Conflict(f"{name!r} is an arm of a running experiment; it cannot be removed", param="name",
                           code="in_use")
        async with ctx.registry.lock:
            # New requests stop finding it now; running ones finish before the adapter goes.
            variant = ctx.registry.remove(name)
        if variant is None:
            raise NotFound(f"no correction named {name!r}; see GET /v1/models", param="name", code="correction_not_found")
        deadline = time.monotonic() + ctx.settings.drain_timeout_s
        while variant.in_flight > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await ctx.pool.remove_lora(variant.engine_key, variant.lora.lora_int_id)
        audit.info("correction removed: name=%s path=%s client=%s", name, variant.correction, client)
        return {"name": name, "deleted": True}

    def in_use(self, name: str) -> bool:
        return any(name in [arm.variant for arm in e.arms] for e in self.ctx.experiments.values())


def corrections_router() -> APIRouter:
    router = APIRouter(dependencies=[Depends(check_admin_key)])

    @router.post("/v1/corrections", status_code=201)
    async def add_correction(body: CorrectionRequest, request: Request) -> CorrectionResponse:
        return await request.app.state.corrections.add(body, client_of(request))

    @router.delete("/v1/corrections/{name}")
    async def delete_correction(name: str, request: Request) -> dict:
        return await request.app.state.corrections.remove(name, client_of(request))

    return router


def client_of(request: Request) -> str:
    return request.client.host if request.client else "unknown"
