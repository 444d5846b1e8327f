"""The browser page at `GET /ui`: compare variants, watch experiments, read artifacts.

The page is static (HTML, CSS, vanilla JS shipped in `server/ui/`, nothing
fetched from elsewhere) and talks to the public API with the user's own key,
like any client. Two small read-only JSON endpoints fill what the public API
lacks, behind the same API key as /v1:

- `GET /ui/api/variants`: what each variant is, from its artifact manifest.
- `POST /ui/api/toxicity`: scores for texts the page shows, from the server's
  own scorer (the one that scores outputs off the request path), so the page
  can put a score next to each output it streamed.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, RedirectResponse
from pydantic import BaseModel, ConfigDict, Field

from correction.errors import ExciseError
from correction.manifest import MANIFEST_NAME, Manifest
from server.errors import NotFound
from server.security import check_api_key
from server.serving import ServingContext
from server.variants import Variant

log = logging.getLogger(__name__)

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
    manifest: ManifestSummary | None
    manifest_error: str | None = None


class ToxicityRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    texts: list[Annotated[str, Field(max_length=MAX_TEXT_CHARS)]] = Field(min_length=1, max_length=MAX_TEXTS)


class ToxicityResponse(BaseModel):
    # None when the server runs with --no-toxicity.
    scores: list[float] | None
    threshold: float


def ui_router() -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get("/ui")
    async def page() -> FileResponse:
        return FileResponse(UI_DIR / "index.html", media_type="text/html", headers=_NO_STORE)

    @router.get("/ui/")
    async def page_slash() -> RedirectResponse:
        return RedirectResponse("/ui")

    @router.get("/ui/assets/{name}")
    async def asset(name: str) -> FileResponse:
        media_type = ASSETS.get(name)
        if media_type is None:
            raise NotFound(f"no UI asset {name!r}", param="name", code="unknown_asset")
        return FileResponse(UI_DIR / name, media_type=media_type, headers=_NO_STORE)

    @router.get("/ui/api/variants", dependencies=[Depends(check_api_key)])
    async def variants(request: Request) -> list[VariantInfo]:
        ctx: ServingContext = request.app.state.ctx
        return await asyncio.to_thread(lambda: [describe(ctx, v) for v in ctx.registry.all()])

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
    exported = weights is not None and Path(variant.base).expanduser().resolve() != weights.resolve()
    if variant.correction is not None:
        kind, folder = "correction", variant.correction
    else:
        kind, folder = ("export" if exported else "base"), weights
    summary, error = _manifest(folder)
    return VariantInfo(
        name=variant.name, kind=kind, base=variant.base, weights=str(weights) if weights else None,
        correction=str(variant.correction) if variant.correction else None, runtime=variant.runtime,
        manifest=summary, manifest_error=error,
    )


def _weights_path(ctx: ServingContext, variant: Variant) -> Path | None:
    spec = ctx.pool.specs.get(variant.engine_key)
    return spec.model_path if spec is not None else None


def _manifest(folder: Path | None) -> tuple[ManifestSummary | None, str | None]:
    if folder is None or not (folder / MANIFEST_NAME).is_file():
        return None, None
    try:
        # Hashes were verified when the server loaded the artifact; re-hashing weights per page view is waste.
        manifest = Manifest.load(folder, verify=False)
    except ExciseError as exc:
        log.warning("cannot describe %s: %s", folder, exc)
        return None, str(exc)
    return ManifestSummary(
        kind=manifest.kind,
        created=manifest.created,
        base_model=manifest.base_model.spec,
        model_type=manifest.base_model.model_type,
        method=manifest.method.model_dump(mode="json") if manifest.method else None,
        sparsity=manifest.sparsity.get("overall"),
        metrics=manifest.metrics,
        data=manifest.data,
        parent=manifest.parent,
        notes=manifest.notes,
    ), None
