"""The FastAPI application: `build_app(settings)`.

Everything a request needs hangs off `app.state`; routes stay thin and hand
over to the serving classes (generation in `serving_*.py`, corrections added and
removed while serving in `corrections.py`). Engines load in the background at
start-up, so `/health` answers at once and `/ready` turns 200 when every engine is up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from pathlib import Path

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException as StarletteHTTPException
from vllm.utils.gc_utils import freeze_gc_heap

from excise.errors import ExciseError
from server.config import ServingConfig, discover_artifacts, load_config
from server.corrections import CorrectionServing, client_of, corrections_router
from server.engines import EnginePool
from server.errors import (CLIENT_CLOSED, ApiError, BadRequest, NotFound, ServerError, Unavailable, error_response,
                           schema_problem)
from server.experiments import Experiment
from server.metrics import Metrics
from server.protocol import (
    ChatCompletionRequest,
    ChatCompletionResponse,
    CompletionRequest,
    CompletionResponse,
    ExperimentReport,
    ModelCard,
    ModelList,
)
from server.security import BodySizeLimit, check_api_key
from server.serving import ClientDisconnected, ServingContext, run_until_disconnect
from server.serving_chat import ChatServing
from server.serving_completion import CompletionServing
from server.settings import ServerSettings
from server.streaming import Stream
from server.toxicity import LiveToxicityScorer
from server.ui_routes import ui_router
from server.variants import VariantRegistry, plan

log = logging.getLogger(__name__)

STATS_INTERVAL_S = 10.0
ENDPOINTS = {"/v1/completions": "completions", "/v1/chat/completions": "chat", "/v1/corrections": "corrections"}
_ERRORS = {
    status: {"description": desc, "content": {"application/json": {}}}
    for status, desc in [(400, "Bad parameters"), (401, "Missing or wrong API key"), (404, "Unknown model"),
                         (413, "Prompt over the context or body too large"), (422, "Schema violation"),
                         (429, "Too many requests in flight"), (503, "Not ready or overloaded")]
}


def endpoint_of(path: str) -> str:
    if path.startswith("/v1/corrections"):
        return "corrections"
    return ENDPOINTS.get(path, "other")


def load_serving_config(settings: ServerSettings) -> ServingConfig:
    if settings.config is not None:
        return load_config(settings.config)
    return discover_artifacts(settings.artifacts)


def build_app(settings: ServerSettings, config: ServingConfig | None = None) -> FastAPI:
    """Validate everything (fails fast with ExciseError), then assemble the app."""
    config = config or load_serving_config(settings)
    runtime_corrections = settings.admin_key is not None
    the_plan = plan(config, runtime_corrections=runtime_corrections)
    metrics = Metrics()
    pool = EnginePool(the_plan.specs, metrics)
    registry = VariantRegistry(the_plan.variants, pool)
    experiments = {e.name: Experiment(e, settings.toxicity_threshold) for e in config.experiments}
    scorer = LiveToxicityScorer(settings.toxicity_queue_size, metrics.toxicity_skipped.inc) if settings.toxicity else None
    ctx = ServingContext(settings, pool, registry, experiments, metrics, scorer)

    # The API's schema and its pages tell a stranger what the server can do: off unless asked for.
    docs = {} if settings.docs else {"openapi_url": None, "docs_url": None, "redoc_url": None}
    app = FastAPI(title="excise", version="0.1.0", lifespan=_lifespan, responses=_ERRORS, **docs)
    app.state.settings = settings
    app.state.ctx = ctx
    app.state.api_keys = [k.get_secret_value() for k in settings.api_keys]
    app.state.admin_key = settings.admin_key.get_secret_value() if settings.admin_key else None
    app.state.fatal = None
    app.state.completions = CompletionServing(ctx)
    app.state.chat = ChatServing(ctx)
    app.state.corrections = CorrectionServing(ctx)
    _install_error_handlers(app)
    app.add_middleware(
        BodySizeLimit, limit=settings.max_body_bytes,
        on_reject=lambda path, error: ctx.reject(endpoint_of(path), error),
    )
    app.include_router(_routes())
    app.include_router(corrections_router())
    app.include_router(ui_router())
    log.info(
        "serving %d variant(s) on %d engine(s): %s; experiments: %s",
        len(the_plan.variants), len(the_plan.specs), ", ".join(the_plan.variants), ", ".join(experiments) or "none",
    )
    return app


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI):
    ctx: ServingContext = app.state.ctx
    loader = asyncio.create_task(_load(app))
    try:
        yield
    finally:
        ctx.draining = True
        await _drain(ctx, app.state.settings.drain_timeout_s)
        loader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loader
        ctx.pool.shutdown()
        if ctx.scorer is not None:
            ctx.scorer.close()
        log.info("shut down")


async def _load(app: FastAPI) -> None:
    ctx: ServingContext = app.state.ctx
    await ctx.pool.load_all()
    if ctx.pool.ready:
        try:
            await ctx.registry.preload_corrections()
            # As vLLM's own server does: the start-up heap is static, so keep it
            # out of the collector's way (shorter GC pauses while serving).
            freeze_gc_heap()
            await _log_engine_stats(ctx)
            return
        except Exception as exc:
            ctx.pool.error = f"loading a correction failed: {exc}"
            ctx.pool.ready = False
    if ctx.pool.error and not ctx.draining:
        # Fail fast: a server that cannot serve should not sit there "alive".
        app.state.fatal = ctx.pool.error
        log.error("stopping: %s", ctx.pool.error)
        os.kill(os.getpid(), signal.SIGTERM)


async def _log_engine_stats(ctx: ServingContext) -> None:
    """vLLM's periodic throughput/cache log lines, as its own server writes them."""
    while not ctx.draining:
        await asyncio.sleep(STATS_INTERVAL_S)
        for engine in list(ctx.pool.engines.values()):
            try:
                await engine.llm.do_log_stats()
            except Exception as exc:  # logging must never stop the server
                log.warning("engine %r stats: %s", engine.spec.key, exc)


async def _drain(ctx: ServingContext, timeout_s: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    if ctx.in_flight:
        log.info("draining %d in-flight request(s)", ctx.in_flight)
    while ctx.in_flight > 0 and loop.time() < deadline:
        await asyncio.sleep(0.05)


def _install_error_handlers(app: FastAPI) -> None:
    def rejected(request: Request, error: ApiError) -> JSONResponse:
        app.state.ctx.reject(endpoint_of(request.url.path), error)
        return error_response(error)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError):
        return rejected(request, exc)

    @app.exception_handler(ExciseError)
    async def excise_error(request: Request, exc: ExciseError):
        return rejected(request, BadRequest(str(exc)))

    @app.exception_handler(RequestValidationError)
    async def schema_error(request: Request, exc: RequestValidationError):
        where, message = schema_problem(exc.errors())
        error = BadRequest(f"{where}: {message}", param=where, code="invalid_schema")
        error.status = 422
        return rejected(request, error)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        error = NotFound(f"no route {request.method} {request.url.path}", code="unknown_route") if exc.status_code == 404 \
            else BadRequest(str(exc.detail), code="http_error")
        error.status = exc.status_code
        return rejected(request, error)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return rejected(request, ServerError("internal error; see the server log"))


def _routes():
    from fastapi import APIRouter

    router = APIRouter()

    @router.get("/health")
    async def health() -> dict:
        return {"status": "ok"}

    @router.get("/ready", responses={503: _ERRORS[503]})
    async def ready(request: Request) -> dict:
        # Unauthenticated: ready or not, nothing more (why an engine failed is in the log).
        ctx: ServingContext = request.app.state.ctx
        if ctx.draining or not ctx.pool.ready:
            raise Unavailable("not ready", retry_after_s=ctx.settings.retry_after_s, code="not_ready")
        return {"status": "ready"}

    @router.get("/metrics")
    async def metrics(request: Request) -> Response:
        return Response(request.app.state.ctx.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @router.get("/v1/models", dependencies=[Depends(check_api_key)])
    async def models(request: Request) -> ModelList:
        return ModelList(data=_model_cards(request.app.state.ctx))

    @router.get("/v1/models/{model}", dependencies=[Depends(check_api_key)])
    async def model(model: str, request: Request) -> ModelCard:
        for card in _model_cards(request.app.state.ctx):
            if card.id == model:
                return card
        raise NotFound(f"model {model!r} does not exist; see GET /v1/models", param="model")

    @router.post("/v1/completions", response_model=CompletionResponse)
    async def completions(body: CompletionRequest, request: Request, key: str | None = Depends(check_api_key)):
        return await _generate(request, request.app.state.completions, body, key)

    @router.post("/v1/chat/completions", response_model=ChatCompletionResponse)
    async def chat(body: ChatCompletionRequest, request: Request, key: str | None = Depends(check_api_key)):
        return await _generate(request, request.app.state.chat, body, key)

    @router.get("/v1/experiments", dependencies=[Depends(check_api_key)])
    async def experiments(request: Request) -> list[ExperimentReport]:
        return [e.report() for e in request.app.state.ctx.experiments.values()]

    @router.get("/v1/experiments/{name}", dependencies=[Depends(check_api_key)])
    async def experiment(name: str, request: Request) -> ExperimentReport:
        exp = request.app.state.ctx.experiments.get(name)
        if exp is None:
            raise NotFound(f"experiment {name!r} does not exist; see GET /v1/models", param="name",
                           code="experiment_not_found")
        return exp.report()

    return router


async def _generate(request: Request, serving, body, api_key: str | None):
    ctx: ServingContext = request.app.state.ctx
    caller = body.user or request.headers.get("x-user-id") or api_key or client_of(request)
    call = ctx.admit(serving.endpoint, body.model, caller)
    headers = {"X-Excise-Variant": call.variant.name}
    if call.experiment is not None:
        headers["X-Excise-Experiment"] = call.experiment.name
    try:
        result = await run_until_disconnect(request.receive, serving.create(call, body))
    except ClientDisconnected:
        ctx.finish(call, CLIENT_CLOSED)
        return Response(status_code=int(CLIENT_CLOSED))
    except Exception as exc:
        error = ctx.translate(exc)
        ctx.finish(call, str(error.status))
        raise error from None
    if isinstance(result, Stream):
        events = result.events(ctx.translate, lambda status: ctx.finish(call, status))
        return StreamingResponse(events, media_type="text/event-stream", headers=headers)
    ctx.finish(call, "200")
    return JSONResponse(result.model_dump(), headers=headers)


def _model_cards(ctx: ServingContext) -> list[ModelCard]:
    cards = [
        ModelCard(id=v.name, created=v.created, kind="variant", base=Path(v.base).name,
                  correction=v.correction is not None, verified=v.verified)
        for v in ctx.registry.all()
    ]
    cards += [
        ModelCard(id=name, created=0, kind="experiment", arms=[a.variant for a in e.arms])
        for name, e in ctx.experiments.items()
    ]
    return cards

