"""vLLM engines, in-process: one `AsyncLLM` per distinct set of base weights.

Engines load one after the other in a background thread, so `/health` answers
while they load and `/ready` turns 200 once all of them have. Corrections are
LoRA adapters on their base's engine (`LoRARequest` per request).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from vllm import AsyncEngineArgs
from vllm.lora.request import LoRARequest
from vllm.v1.engine.async_llm import AsyncLLM

from excise.artifacts.model_folder import read_config
from server.config import EngineOptions
from server.errors import BadRequest, Unavailable
from server.metrics import Metrics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineSpec:
    key: str  # also vLLM's served model name, the `model_name` label of its metrics
    model_path: Path
    options: EngineOptions
    enable_lora: bool


@dataclass
class Engine:
    spec: EngineSpec
    llm: AsyncLLM
    max_model_len: int
    tokenizer: object = field(repr=False)

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))


def engine_args(spec: EngineSpec) -> AsyncEngineArgs:
    opts = spec.options
    kwargs = dict(
        model=str(spec.model_path),
        served_model_name=spec.key,
        dtype=engine_dtype(spec),
        max_model_len=opts.max_model_len,
        tensor_parallel_size=opts.tensor_parallel_size,
        pipeline_parallel_size=opts.pipeline_parallel_size,
        max_num_seqs=opts.max_num_seqs,
        enforce_eager=_enforce_eager(opts),
        enable_lora=spec.enable_lora,
        max_lora_rank=opts.max_lora_rank,
        max_loras=opts.max_loras,
        seed=opts.seed,
        trust_remote_code=False,
        disable_log_stats=False,
    )
    if opts.gpu_memory_utilization is not None:
        kwargs["gpu_memory_utilization"] = opts.gpu_memory_utilization
    return AsyncEngineArgs(**kwargs)


def engine_dtype(spec: EngineSpec) -> str:
    """The dtype to pass to vLLM: `model` is the folder's own dtype on CPU, vLLM's `auto` elsewhere."""
    if spec.options.dtype != "model":
        return spec.options.dtype
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return "auto"
    config = read_config(spec.model_path)
    return str(config.get("dtype") or config.get("torch_dtype") or "float32")


def _enforce_eager(opts: EngineOptions) -> bool:
    if opts.enforce_eager is not None:
        return opts.enforce_eager
    from vllm.platforms import current_platform

    # On CPU, graph capture doubles start-up time (52 s vs 16-25 s) for no gain here.
    return current_platform.is_cpu()


class EnginePool:
    def __init__(self, specs: list[EngineSpec], metrics: Metrics) -> None:
        self.specs = {s.key: s for s in specs}
        self.metrics = metrics
        self.engines: dict[str, Engine] = {}
        self.error: str | None = None
        self.ready = False
        self._closed = False

    async def load_all(self) -> None:
        """Start every engine in turn; on failure record a one-line reason and stop."""
        for spec in self.specs.values():
            if self._closed:
                return
            try:
                engine = await asyncio.to_thread(self._start, spec)
            except Exception as exc:  # any engine failure makes the server unusable
                self.error = f"engine {spec.key!r} ({spec.model_path}) failed to start: {type(exc).__name__}: {exc}"
                log.error("%s", self.error)
                return
            if self._closed:  # shut down while this engine was starting
                engine.llm.shutdown()
                return
            self.engines[spec.key] = engine
        self.ready = not self._closed
        self.metrics.engines_ready.set(1 if self.ready else 0)
        log.info("all %d engine(s) ready: %s", len(self.engines), ", ".join(self.engines))

    def _start(self, spec: EngineSpec) -> Engine:
        began = time.monotonic()
        log.info("starting engine %r on %s (lora=%s)", spec.key, spec.model_path, spec.enable_lora)
        llm = AsyncLLM.from_engine_args(engine_args(spec))
        # vLLM unregisters an engine's metric collectors when the next one starts; keep them.
        self.metrics.vllm.capture()
        log.info("engine %r ready in %.1f s", spec.key, time.monotonic() - began)
        return Engine(spec=spec, llm=llm, max_model_len=llm.model_config.max_model_len, tokenizer=llm.get_tokenizer())

    def get(self, key: str, retry_after_s: int) -> Engine:
        engine = self.engines.get(key)
        if engine is None:
            if self.error is not None:
                # The reason (paths, exception text) is in the log, not in an answer to a client.
                raise Unavailable("the server failed to start; its operator can see why in the log", retry_after_s=retry_after_s)
            raise Unavailable("the model engines are still loading; retry shortly", retry_after_s=retry_after_s)
        return engine

    async def add_lora(self, key: str, lora: LoRARequest) -> None:
        engine = self.get(key, retry_after_s=5)
        if not engine.spec.enable_lora:
            raise BadRequest(
                f"engine {key!r} was started without LoRA support; start the server with an admin key "
                "or set enable_lora in its engine options",
                param="base",
            )
        await engine.llm.add_lora(lora)

    async def remove_lora(self, key: str, lora_id: int) -> None:
        engine = self.engines.get(key)
        if engine is not None:
            await engine.llm.remove_lora(lora_id)

    def shutdown(self) -> None:
        self._closed = True
        self.ready = False
        self.metrics.engines_ready.set(0)
        for key, engine in self.engines.items():
            log.info("stopping engine %r", key)
            try:
                engine.llm.shutdown()
            except Exception:
                log.exception("engine %r did not shut down cleanly", key)
        self.engines.clear()
