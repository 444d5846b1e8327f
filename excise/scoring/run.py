"""`score_model`: run one scorer over reference data, single-process or data-parallel.

Under `torchrun` (torch.distributed initialised) each rank scores every world_size-th
batch, then the running sums and counts are all-reduced (sum of sums), so every rank ends
with the scores a single process would compute, within fp32 summation-order tolerance.
Each rank loads the model on its own device (`cuda:$LOCAL_RANK` with NCCL, cpu with gloo)
and passes the whole reference set; the sharding happens here.
A model spread over devices with an accelerate `device_map` scores the same way (the
buffers live beside their weights; `excise.lrp.lrp_patched` also reaches the modules
accelerate hooked).

Memory: `recompute=True` keeps only each decoder layer's input through the forward pass
and recomputes the layer in the backward pass (`excise.scoring.recompute`), so a
gradient-based scorer's activation memory stops growing with depth. The model may run in
bfloat16/float16 (load it so); every running sum is fp32 regardless (`Scorer.buffer`).
"""

from __future__ import annotations

import logging
import resource
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm import tqdm

from excise.errors import ExciseError
from excise.models.adapters import get_adapter
from excise.scoring.base import Scorer, ScorerConfig, scorer_class
from excise.scoring.batches import ReferenceBatch, ReferenceData, as_batches, shard
from excise.scoring.recompute import layer_recomputation
from excise.artifacts.scores import Scores
from excise.artifacts.units import UNITS
from excise.scoring.support import check_recompute
from excise.scoring.targets import Target, get_target

logger = logging.getLogger(__name__)


@dataclass
class ScoringResult:
    """Scores plus what it took to compute them (for the artifact's manifest)."""

    scores: Scores
    method: str
    params: dict
    granularities: list[str]
    target: str
    samples: int
    tokens: int
    wall_seconds: float
    #: peak resident memory of the scoring process over its lifetime (a worker: scoring alone)
    peak_rss_bytes: int
    peak_cuda_bytes: int | None
    world_size: int = 1
    device: str = "cpu"
    recompute: bool = False
    #: the model's dtype while scoring (the sums are fp32 whatever it is)
    dtype: str = "float32"

    def summary(self) -> dict:
        """Everything but the scores, JSON-ready."""
        return {k: v for k, v in asdict(self).items() if k != "scores"}


def peak_rss_bytes() -> int:
    """This process's peak resident memory.

    Linux's VmHWM starts afresh at exec, so a spawned worker reports its own peak;
    ru_maxrss survives exec and would include the parent's size when it forked.
    """
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _all_reduce(scorer: Scorer, samples: int, tokens: int) -> tuple[int, int]:
    """Sum every running sum and the counts over ranks (same key order everywhere)."""
    for key in sorted(scorer.sums):
        dist.all_reduce(scorer.sums[key])
    counts = torch.tensor([scorer.count, samples, tokens], dtype=torch.float64, device=scorer.device)
    dist.all_reduce(counts)
    scorer.count = counts[0].item()
    return int(counts[1].item()), int(counts[2].item())


def _check_granularities(granularities) -> set[str]:
    granularities = set(granularities)
    unknown = granularities - set(UNITS)
    if unknown or not granularities:
        raise ExciseError(
            f"unknown granularity {', '.join(sorted(unknown)) or '(none given)'}; choose from {', '.join(UNITS)}"
        )
    return granularities


def check_request(
    method: str, granularities, target: str, params: dict, recompute: bool = False
) -> tuple[type[Scorer], set[str], Target, ScorerConfig]:
    """Resolve and validate a scoring request before any model is touched."""
    cls = scorer_class(method)
    try:
        check_recompute(method, recompute)
    except ValueError as error:
        raise ExciseError(str(error)) from None
    return cls, _check_granularities(granularities), get_target(target), cls.config_class(**params)


def check_context(model, batches: list[ReferenceBatch]) -> None:
    """Refuse windows longer than the model's context before any of them is scored."""
    context = getattr(model.config, "max_position_embeddings", None)
    longest = max((batch.input_ids.shape[1] for batch in batches), default=0)
    if context is not None and longest > context:
        raise ExciseError(f"reference windows of {longest} tokens exceed the model's context of {context} tokens")


def score_model(
    model,
    data: ReferenceData | None,
    method: str,
    *,
    granularities=("weight",),
    target: str = "next_token",
    batch_size: int = 1,
    progress: bool = True,
    recompute: bool = False,
    **params,
) -> ScoringResult:
    """Score `model` (a transformers causal LM) with `method` over reference `data`.

    `data`: LM windows `LongTensor[count, length]` (cut into batches of `batch_size`) or a
    list of `ReferenceBatch` (task data); None only for methods that need no data.
    `params` are the method's config (e.g. `aggregation="signed"` for lrp/gradient).
    `recompute`: recompute each decoder layer in the backward pass instead of keeping its
    activations (same scores, about one more forward pass of time).
    The lrp method patches this process's model classes while it runs and restores them
    afterwards; use `score_in_worker` to keep even that out of the calling process.
    """
    cls, granularities, resolved_target, config = check_request(method, granularities, target, params, recompute)
    scorer = cls(get_adapter(model), granularities, resolved_target, config)
    rank, world_size = _world()
    device = scorer.device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    samples = tokens = 0
    if cls.needs_data:
        if data is None:
            raise ExciseError(f"method {method!r} needs reference data; pass windows or task batches")
        every_batch = as_batches(data, batch_size)
        check_context(model, every_batch)
        batches = shard(every_batch, rank, world_size)
        recomputation = layer_recomputation(scorer.adapter) if recompute else nullcontext()
        with scorer.session(), recomputation:
            scorer.prepare(every_batch)
            for batch in tqdm(batches, desc=f"scoring ({method})", unit="batch", disable=not progress or rank != 0):
                scorer.step(batch)
                samples += len(batch)
                tokens += batch.num_tokens()
        if world_size > 1:
            samples, tokens = _all_reduce(scorer, samples, tokens)
    scores = scorer.scores()
    wall = time.perf_counter() - started
    logger.info("%s scores from %d samples (%d tokens) in %.1f s on %d rank(s)", method, samples, tokens, wall, world_size)
    return ScoringResult(
        scores=scores,
        method=method,
        params=scorer.config.model_dump(),
        recompute=recompute,
        dtype=str(next(model.parameters()).dtype).removeprefix("torch."),
        granularities=sorted(scorer.granularities),
        target=target,
        samples=samples,
        tokens=tokens,
        wall_seconds=wall,
        peak_rss_bytes=peak_rss_bytes(),
        peak_cuda_bytes=torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None,
        world_size=world_size,
        device=str(device),
    )
