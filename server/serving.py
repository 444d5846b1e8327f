"""What the completion and chat endpoints share: model-name resolution (variant
or experiment arm), admission, prompt checks, engine calls, accounting.

One `Call` follows a request from admission to its last token; `finish` is
the one place that records its metrics, experiment stats and toxicity jobs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field

from vllm import SamplingParams
from vllm.exceptions import GracefulHTTPError, VLLMClientError, VLLMValidationError
from vllm.outputs import RequestOutput
from vllm.v1.engine.exceptions import EngineDeadError

from server.engines import Engine, EnginePool
from server.errors import ApiError, BadRequest, NotFound, PayloadTooLarge, ServerError, TooManyRequests, Unavailable
from server.experiments import Experiment
from server.metrics import NO_EXPERIMENT, Metrics
from server.protocol import Usage
from server.settings import ServerSettings
from server.toxicity import LiveToxicityScorer
from server.variants import Variant, VariantRegistry

log = logging.getLogger(__name__)

@dataclass
class Call:
    """One generation request, from admission to its last token."""

    endpoint: str
    model: str  # the name the client asked for
    variant: Variant
    engine: Engine
    experiment: Experiment | None
    started: float = field(default_factory=time.perf_counter)
    ttft: float | None = None
    prompt_tokens: int = 0
    output_tokens: int = 0
    texts: list[str] = field(default_factory=list)
    done: bool = False

    @property
    def model_name(self) -> str:
        """What the response's `model` field says: the variant that served (an experiment's arm)."""
        return self.variant.name

    def usage(self) -> Usage:
        return Usage(prompt_tokens=self.prompt_tokens, completion_tokens=self.output_tokens,
                     total_tokens=self.prompt_tokens + self.output_tokens)

    def first_token(self) -> None:
        if self.ttft is None:
            self.ttft = time.perf_counter() - self.started

    @property
    def labels(self) -> dict[str, str]:
        return {
            "variant": self.variant.name,
            "experiment": self.experiment.name if self.experiment else NO_EXPERIMENT,
            "endpoint": self.endpoint,
        }


class ServingContext:
    def __init__(
        self,
        settings: ServerSettings,
        pool: EnginePool,
        registry: VariantRegistry,
        experiments: dict[str, Experiment],
        metrics: Metrics,
        scorer: LiveToxicityScorer | None,
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.registry = registry
        self.experiments = experiments
        self.metrics = metrics
        self.scorer = scorer
        self.in_flight = 0
        self.draining = False

    # --- admission -------------------------------------------------------------

    def admit(self, endpoint: str, model: str, caller: str) -> Call:
        retry = self.settings.retry_after_s
        if self.draining:
            raise Unavailable("the server is shutting down; retry on another replica", retry_after_s=retry)
        variant, experiment = self.resolve(model, caller)
        engine = self.pool.get(variant.engine_key, retry_after_s=retry)
        if self.in_flight >= self.settings.max_in_flight:
            raise TooManyRequests(
                f"the server is at its limit of {self.settings.max_in_flight} requests in flight; retry later",
                retry_after_s=retry,
            )
        call = Call(endpoint=endpoint, model=model, variant=variant, engine=engine, experiment=experiment)
        self.in_flight += 1
        variant.in_flight += 1
        self.metrics.in_flight.labels(endpoint).inc()
        return call

    def resolve(self, model: str, caller: str) -> tuple[Variant, Experiment | None]:
        experiment = self.experiments.get(model)
        if experiment is not None:
            arm = experiment.assign(caller)
            variant = self.registry.get(arm)
            if variant is None:
                raise ServerError(f"experiment {model!r} names variant {arm!r}, which no longer exists")
            return variant, experiment
        variant = self.registry.get(model)
        if variant is None:
            raise NotFound(f"model {model!r} does not exist; see GET /v1/models for the names served", param="model")
        return variant, None

    def reject(self, endpoint: str, error: ApiError) -> None:
        self.metrics.rejected.labels(endpoint, str(error.status)).inc()

    # --- prompts ---------------------------------------------------------------

    def check_tokens(self, call: Call, ids: list[int]) -> None:
        vocab = len(call.engine.tokenizer)
        bad = [i for i in ids if i >= vocab]
        if bad:
            raise BadRequest(f"token ids {bad[:5]} are outside the vocabulary of size {vocab}", param="prompt")

    def max_tokens(self, call: Call, prompt_len: int, requested: int | None) -> int:
        limit = call.engine.max_model_len
        if prompt_len >= limit:
            raise PayloadTooLarge(
                f"the prompt has {prompt_len} tokens; this model's context holds {limit}. Shorten the prompt",
                param="prompt",
            )
        if requested is None:
            return limit - prompt_len
        if prompt_len + requested > limit:
            raise PayloadTooLarge(
                f"the prompt ({prompt_len} tokens) plus max_tokens ({requested}) exceeds this model's context of "
                f"{limit} tokens; lower max_tokens or shorten the prompt",
                param="max_tokens",
            )
        return requested

    # --- generation ------------------------------------------------------------

    def generate(self, call: Call, ids: list[int], params: SamplingParams, request_id: str) -> AsyncGenerator[RequestOutput]:
        return call.engine.llm.generate(
            {"prompt_token_ids": ids}, params, request_id, lora_request=call.variant.lora
        )

    @staticmethod
    def translate(exc: Exception) -> ApiError:
        """vLLM's exception family onto our HTTP errors."""
        if isinstance(exc, ApiError):
            return exc
        if isinstance(exc, GracefulHTTPError):
            return Unavailable(f"the engine's queue is full ({exc}); retry later", retry_after_s=1)
        if isinstance(exc, EngineDeadError):
            return Unavailable("the model engine stopped; the server needs a restart", retry_after_s=30)
        if isinstance(exc, VLLMValidationError | VLLMClientError | ValueError):
            return BadRequest(str(exc).split("\n")[0], param=getattr(exc, "parameter", None))
        log.error("generation failed: %s: %s", type(exc).__name__, exc, exc_info=exc)
        return ServerError("generation failed inside the engine; see the server log")

    # --- accounting ------------------------------------------------------------

    def finish(self, call: Call, status: str) -> None:
        if call.done:
            return
        call.done = True
        self.in_flight -= 1
        call.variant.in_flight -= 1
        labels = call.labels
        self.metrics.in_flight.labels(call.endpoint).dec()
        elapsed = time.perf_counter() - call.started
        self.metrics.requests.labels(**labels, status=status).inc()
        self.metrics.latency.labels(**labels, status=status).observe(elapsed)
        if status != "200":
            return
        if call.ttft is not None:
            self.metrics.ttft.labels(**labels).observe(call.ttft)
        self.metrics.prompt_tokens.labels(**labels).inc(call.prompt_tokens)
        self.metrics.output_tokens.labels(**labels).inc(call.output_tokens)
        if call.experiment is not None:
            call.experiment.record(call.variant.name, elapsed, call.ttft)
        self._score(call)

    def _score(self, call: Call) -> None:
        if self.scorer is None:
            return
        variant, experiment = call.variant.name, call.experiment
        hist = self.metrics.toxicity.labels(variant, labels_experiment := call.labels["experiment"])
        toxic = self.metrics.toxic_outputs.labels(variant, labels_experiment)
        threshold = self.settings.toxicity_threshold

        def sink(score: float) -> None:
            hist.observe(score)
            if score >= threshold:
                toxic.inc()
            if experiment is not None:
                experiment.record_toxicity(variant, score)

        for text in call.texts:
            self.scorer.submit(text, sink)


async def last_output(gen: AsyncGenerator[RequestOutput]) -> RequestOutput:
    """The final output of a non-streamed generation."""
    final = None
    async for out in gen:
        final = out
    return final


def decoded_token(tok, token_id: int, lp) -> str:
    """A generated token's text: vLLM's own decoding of it where it gave one."""
    if lp is not None and lp.decoded_token is not None:
        return lp.decoded_token
    return tok.decode([token_id])


async def run_until_disconnect(receive, coro):
    """Run `coro`; cancel it (aborting the generation) if the client disconnects first."""
    task = asyncio.ensure_future(coro)

    async def disconnected() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(disconnected())
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if task in done:
        return task.result()
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    raise ClientDisconnected()


class ClientDisconnected(Exception):
    """The client closed the connection before the response was ready."""
