"""Circuit discovery: score on a task's reference prompts, sweep sparsity, keep the sparsest
mask that retains a share of the dense model's logit difference on held-out prompts.

    result = discover_circuit(CircuitConfig(method="lrp", granularity="head", task="ioi"))
    write_circuit(result, Path("circuits/ioi-lrp-head"))

Every scorer runs in this process (LRP's rules are undone when scoring ends). Every evaluation uses
the held-out prompts only; the reference prompts are used for scoring and for the
mean activations of mean-ablation.
Faithfulness compares the circuit with the full model with the removed parts zeroed
and with them set to their mean over the reference activations; with a corrupted
baseline (IOI) it is also normalised: (circuit - corrupted) / (full - corrupted).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from correction.circuits.ablation import ABLATIONS, ablated, input_means
from correction.circuits.graph import circuit_graph
from correction.circuits.scope import circuit_selection
from correction.circuits.sweep import CurvePoint, Sweep, pick_sparsest
from correction.errors import ExciseError
from correction.masks import MaskSet
from correction.models.adapters import ModelAdapter, get_adapter
from correction.models.loading import LoadedModel, load_model
from correction.scoring import SCORERS, ReferenceBatch, ScoringResult, TaskTarget, score_model
from correction.scoring.scores import Scores
from correction.scoring.support import check_method_unit
from correction.tasks import TaskBatch, TaskScore, evaluate_task, load_task, split_task

logger = logging.getLogger(__name__)

DEFAULT_GRID = (0.5, 0.7, 0.8, 0.9, 0.95, 0.98)


class CircuitConfig(BaseModel):
    """Everything that determines a circuit; saved (resolved) into its manifest."""

    model_config = ConfigDict(extra="forbid")

    model: str = "smollm2"
    task: str = "ioi"
    method: str = "lrp"
    granularity: Literal["weight", "neuron", "head"] = "weight"
    scope: Literal["row", "global"] = "row"
    target: Literal["task_correct", "task_logit_diff"] = "task_logit_diff"
    sparsities: list[float] = Field(default_factory=lambda: list(DEFAULT_GRID), min_length=1)
    refine_steps: int = Field(3, ge=0, description="bisections between the last passing and first failing level")
    retain: float = Field(0.9, gt=0, description="share of the dense held-out logit difference to keep")
    reference: int = Field(32, ge=1, description="prompts scored")
    heldout: int = Field(64, ge=1, description="prompts evaluated")
    seed: int = 0
    batch_size: int = Field(16, ge=1)
    device: str = "cpu"
    params: dict[str, Any] = Field(default_factory=dict, description="scorer parameters")

    @field_validator("method")
    @classmethod
    def _known_method(cls, method: str) -> str:
        if method not in SCORERS:
            raise ValueError(f"unknown method {method!r}; choose one of: {', '.join(sorted(SCORERS))}")
        return method

    @field_validator("sparsities")
    @classmethod
    def _in_range(cls, grid: list[float]) -> list[float]:
        bad = [s for s in grid if not 0.0 <= s < 1.0]
        if bad:
            raise ValueError(f"sparsities {bad} are outside [0, 1)")
        return sorted(set(grid))

    @model_validator(mode="after")
    def _method_scores_granularity(self) -> CircuitConfig:
        check_method_unit(self.method, self.granularity)
        return self


@dataclass
class CircuitResult:
    config: CircuitConfig
    loaded: LoadedModel
    adapter: ModelAdapter
    dense: TaskScore
    corrupted: TaskScore | None
    threshold: float
    curve: list[CurvePoint]
    chosen: CurvePoint
    masks: MaskSet
    faithfulness: dict[str, Any]
    graph: dict[str, Any]
    scoring: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)


def reference_batches(batch: TaskBatch, batch_size: int) -> list[ReferenceBatch]:
    """Task prompts as scoring batches whose target is the logit at each prompt's last position."""
    return [
        ReferenceBatch(
            input_ids=chunk.input_ids,
            attention_mask=chunk.attention_mask,
            target=TaskTarget(position=chunk.positions, correct=chunk.correct_ids, incorrect=chunk.incorrect_ids),
        )
        for chunk in batch.chunks(batch_size)
    ]


def score_task(config: CircuitConfig, model, reference: TaskBatch, granularities: set[str] | None = None) -> ScoringResult:
    """Scores from the reference prompts, in this process (LRP restores its patches when it ends, as in
    `excise prune` and `excise correct`)."""
    options = {
        "granularities": granularities or {config.granularity},
        "target": config.target,
        "batch_size": config.batch_size,
    }
    batches = reference_batches(reference, config.batch_size)
    return score_model(model, batches, config.method, **options, **config.params)


@dataclass
class TaskContext:
    """The loaded model, the task's encoded prompts and the full model's performance on them."""

    task: str
    loaded: LoadedModel
    adapter: ModelAdapter
    batches: dict[str, TaskBatch]  # reference, heldout (and corrupted: held-out prompts, names replaced)
    dense: TaskScore
    corrupted: TaskScore | None
    batch_size: int
    _means: dict[str, Any] | None = None

    def means(self) -> dict[str, Any]:
        """Mean input of every prunable linear over the reference prompts (for mean-ablation)."""
        if self._means is None:
            self._means = input_means(self.adapter, self.batches["reference"], batch_size=self.batch_size)
        return self._means


def prepare_task(config: CircuitConfig) -> TaskContext:
    task = load_task(config.task)
    loaded = load_model(config.model, device=config.device)
    split = split_task(task, loaded.tokenizer, reference=config.reference, heldout=config.heldout, seed=config.seed)
    batches = {part: split.encode(loaded.tokenizer, part) for part in ("reference", "heldout")}
    if split.has_corrupted:
        batches["corrupted"] = split.encode(loaded.tokenizer, "heldout", corrupted=True)
    dense = evaluate_task(loaded.model, batches["heldout"], batch_size=config.batch_size)
    logger.info("full model on %d held-out prompts: %s", len(batches["heldout"]), dense)
    if dense.logit_diff <= 0:
        raise ExciseError(
            f"the full model does not do task {split.task!r}: its mean held-out logit difference is "
            f"{dense.logit_diff:.3f} <= 0, so there is no circuit to keep; check the task's correct/incorrect fields"
        )
    corrupted = None
    if "corrupted" in batches:
        corrupted = evaluate_task(loaded.model, batches["corrupted"], batch_size=config.batch_size)
    return TaskContext(split.task, loaded, get_adapter(loaded.model), batches, dense, corrupted, config.batch_size)


def faithfulness(context: TaskContext, masks: MaskSet) -> dict[str, Any]:
    """Circuit vs full model on held-out prompts, removed parts zero- and mean-ablated."""
    dense, corrupted = context.dense.logit_diff, context.corrupted
    result: dict[str, Any] = {}
    for mode in ABLATIONS:
        with ablated(context.adapter, masks, mode, context.means()):
            score = evaluate_task(context.adapter.model, context.batches["heldout"], batch_size=context.batch_size)
        entry = score.as_dict() | {"retained": score.logit_diff / dense}
        if corrupted is not None:
            entry["normalized"] = (score.logit_diff - corrupted.logit_diff) / (dense - corrupted.logit_diff)
        result[mode] = entry
    return result


def circuit_sweep(config: CircuitConfig, context: TaskContext, scores: Scores) -> Sweep:
    selection = circuit_selection(config.granularity, config.scope)
    return Sweep(context.adapter, scores, selection, context.batches["heldout"], batch_size=config.batch_size)


def circuit_from_curve(
    config: CircuitConfig, context: TaskContext, sweep: Sweep, curve: list[CurvePoint], scoring: dict[str, Any]
) -> CircuitResult:
    """The circuit at the sparsest level of `curve` that keeps the retained share (error if none does)."""
    threshold = config.retain * context.dense.logit_diff
    chosen = pick_sparsest(curve, threshold, dense=context.dense.logit_diff)
    masks = sweep.masks(chosen.sparsity)
    return CircuitResult(
        config=config,
        loaded=context.loaded,
        adapter=context.adapter,
        dense=context.dense,
        corrupted=context.corrupted,
        threshold=threshold,
        curve=curve,
        chosen=chosen,
        masks=masks,
        faithfulness=faithfulness(context, masks),
        graph=circuit_graph(context.adapter, masks),
        scoring=scoring,
    )


def discover_circuit(config: CircuitConfig) -> CircuitResult:
    started = time.perf_counter()
    context = prepare_task(config)
    scored = score_task(config, context.loaded.model, context.batches["reference"])
    scored_at = time.perf_counter()
    sweep = circuit_sweep(config, context, scored.scores)
    curve = sweep.run(config.sparsities, config.retain * context.dense.logit_diff, config.refine_steps)
    result = circuit_from_curve(config, context, sweep, curve, scored.summary())
    result.timings = {
        "scoring_s": scored.wall_seconds,
        "sweep_and_faithfulness_s": time.perf_counter() - scored_at,
        "total_s": time.perf_counter() - started,
    }
    return result
