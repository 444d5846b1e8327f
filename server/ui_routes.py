"""The browser page at `GET /ui`: compare variants, watch experiments, read artifacts.

The page is static (HTML, CSS, vanilla JS shipped in `server/ui/`, nothing
fetched from elsewhere) and talks to the public API with the user's own key,
like any client. Two small read-only JSON endpoints fill what the public API
lacks, behind the same API key as /v1:

- `GET /ui/api/variants`: what each variant is, from the artifact manifest it was
  validated against at load (folder names only: no server path leaves the server).
- `POST /ui/api/toxicity`: scores for texts the page shows, from the server's
  own scorer (the one that scores outputs off the request path), so the page
  can put a score next to each output it streamed.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, RedirectResponse
from pydantic import BaseModel, ConfigDict, Field

from excise.artifacts.manifest import Manifest
from excise.artifacts.model_folder import EMBEDDED_MODELS, embedded_path
from server.errors import NotFound
from server.security import check_api_key
from server.serving import ServingContext
from server.variants import Variant

UI_DIR = Path(__file__).parent / "ui"
# The only files served: a fixed table, so no request path ever reaches the file system.
ASSETS = {
    **{name: "text/javascript" for name in (
        "app.js", "api.js", "dom.js", "compare.js", "diff.js", "experiments.js", "charts.js", "artifacts.js"
    )},
    "style.css": "text/css",
}
MAX_TEXTS = 16
MAX_TEXT_CHARS = 32_000
# The page changes with the package; a stale cached copy would talk to a newer API.
_NO_STORE = {"Cache-Control": "no-store"}


class ManifestSummary(BaseModel):
    """What the page shows of an artifact manifest (no file hashes, no per-tensor sparsity)."""

    kind: str
    created: str
    base_model: str
    model_type: str
    method: dict[str, Any] | None
    sparsity: float | None
    metrics: dict[str, Any]
    data: dict[str, Any]
    parent: str | None
    notes: str | None


class VariantInfo(BaseModel):
    name: str
    kind: Literal["base", "export", "correction"]
    base: str
    weights: str | None
    correction: str | None
    runtime: bool
    verified: bool  # False: served with `verify: false`; no manifest was checked, none is shown
    manifest: ManifestSummary | None


class ToxicityRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    texts: list[Annotated[str, Field(max_length=MAX_TEXT_CHARS)]] = Field(min_length=1, max_length=MAX_TEXTS)


class ToxicityResponse(BaseModel):
    # None when the server runs with --no-toxicity.
    scores: list[float] | None
    threshold: float


def ui_router() -> APIRouter:
    router = APIRouter()

    @router.get("/ui", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(UI_DIR / "index.html", media_type="text/html", headers=_NO_STORE)

    @router.get("/ui/", include_in_schema=False)
    async def page_slash() -> RedirectResponse:
        return RedirectResponse("/ui")

    @router.get("/ui/assets/{name}", include_in_schema=False)
    async def asset(name: str) -> FileResponse:
        media_type = ASSETS.get(name)
        if media_type is None:
            raise NotFound(f"no UI asset {name!r}", param="name", code="unknown_asset")
        return FileResponse(UI_DIR / name, media_type=media_type, headers=_NO_STORE)

    @router.get("/ui/api/variants", dependencies=[Depends(check_api_key)])
    async def variants(request: Request) -> list[VariantInfo]:
        ctx: ServingContext = request.app.state.ctx
        return [describe(ctx, v) for v in ctx.registry.all()]

    @router.post("/ui/api/toxicity", dependencies=[Depends(check_api_key)])
    async def toxicity(body: ToxicityRequest, request: Request) -> ToxicityResponse:
        ctx: ServingContext = request.app.state.ctx
        threshold = ctx.settings.toxicity_threshold
        if ctx.scorer is None:
            return ToxicityResponse(scores=None, threshold=threshold)
        scores = await asyncio.to_thread(ctx.scorer.score_now, body.texts)
        return ToxicityResponse(scores=scores, threshold=threshold)

    return router


def describe(ctx: ServingContext, variant: Variant) -> VariantInfo:
    """A variant and the manifest of the artifact behind it (its correction, or its exported weights)."""
    weights = _weights_path(ctx, variant)
    exported = weights is not None and _base_folder(variant.base).resolve() != weights.resolve()
    kind = "correction" if variant.correction is not None else "export" if exported or variant.manifest else "base"
    return VariantInfo(
        name=variant.name, kind=kind, base=Path(variant.base).name, weights=weights.name if weights else None,
        correction=variant.correction.name if variant.correction else None, runtime=variant.runtime,
        verified=variant.verified, manifest=_summary(variant.manifest),
    )


def _base_folder(base: str) -> Path:
    """The folder a variant's `base` names: an embedded model's prepared folder (`smollm2`, which `make serve`
    serves), else the path itself."""
    return embedded_path(base) if base in EMBEDDED_MODELS else Path(base).expanduser()


def _weights_path(ctx: ServingContext, variant: Variant) -> Path | None:
    spec = ctx.pool.specs.get(variant.engine_key)
    return spec.model_path if spec is not None else None


def _summary(manifest: Manifest | None) -> ManifestSummary | None:
    """The manifest the artifact was validated against when it was loaded (so it describes what is served)."""
    if manifest is None:
        return None
    return ManifestSummary(
        kind=manifest.kind,
        created=manifest.created,
        base_model=Path(manifest.base_model.spec).name,
        model_type=manifest.base_model.model_type,
        method=manifest.method.model_dump(mode="json") if manifest.method else None,
        sparsity=manifest.sparsity.get("overall"),
        metrics=manifest.metrics,
        data=manifest.data,
        parent=Path(manifest.parent).name if manifest.parent else None,
        notes=manifest.notes,
    )
