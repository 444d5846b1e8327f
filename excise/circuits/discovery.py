"""Circuit discovery: score on a task's reference prompts, sweep sparsity on them, keep the
sparsest mask that retains a share of the dense model's logit difference, and report it on
held-out prompts.

    result = discover_circuit(CircuitConfig(method="lrp", granularity="head", task="ioi"))
    write_circuit(result, Path("circuits/ioi-lrp-head"))

The reference prompts are scored, give the mean activations of mean-ablation, and choose
the level (the search runs with the configured ablation: zero, mean, or corrupted, which
patches each removed unit from the prompt's corrupted counterpart); the held-out prompts
(disjoint) are used only to report the chosen circuit. Faithfulness compares the circuit
with the full model on the held-out prompts under every ablation the task allows; with a
corrupted baseline (IOI) it is also normalised: (circuit - corrupted) / (full - corrupted).
Every scorer runs in this process (LRP's rules are undone when scoring ends).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from excise.circuits.ablation import ABLATIONS, ablated_score, check_corrupted, input_means
from excise.circuits.config import CircuitConfig
from excise.circuits.graph import circuit_graph
from excise.circuits.greedy import greedy_removal
from excise.circuits.scope import circuit_selection
from excise.circuits.sweep import CurvePoint, Sweep, pick
from excise.errors import ExciseError
from excise.artifacts.masks import MaskSet
from excise.models.adapters import ModelAdapter, get_adapter
from excise.models.loading import LoadedModel, load_job_model
from excise.scoring import ReferenceBatch, ScoringResult, TaskTarget, score_model
from excise.artifacts.scores import Scores
from excise.tasks import TaskBatch, TaskScore, evaluate_task, load_task, split_task
from excise.tasks.registry import Task

logger = logging.getLogger(__name__)

@dataclass
class CircuitResult:
    config: CircuitConfig
    loaded: LoadedModel
    adapter: ModelAdapter
    dense: TaskScore  # full model, held-out prompts
    corrupted: TaskScore | None  # full model, corrupted held-out prompts
    search_dense: TaskScore  # full model, reference prompts (the threshold's base)
    threshold: float
    curve: list[CurvePoint]  # reference prompts, the configured ablation
    chosen: CurvePoint
    found: bool  # whether `chosen` keeps the threshold (else it is the best level)
    masks: MaskSet
    faithfulness: dict[str, Any]  # held-out prompts, by ablation
    graph: dict[str, Any]
    scoring: dict[str, Any]
    #: the greedy pass (tries, removed, the sweep's circuit it started from), None without one
    greedy: dict[str, Any] | None = None
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def heldout(self) -> dict[str, Any]:
        """The chosen circuit on held-out prompts under the ablation it was searched with."""
        return self.faithfulness[self.config.ablation]


def reference_batches(batch: TaskBatch, batch_size: int, corrupted: TaskBatch | None = None) -> list[ReferenceBatch]:
    """Task prompts as scoring batches whose target is the logit at each prompt's last position."""
    corrupted_chunks = corrupted.chunks(batch_size) if corrupted is not None else [None] * len(batch.chunks(batch_size))
    return [
        ReferenceBatch(
            input_ids=chunk.input_ids,
            attention_mask=chunk.attention_mask,
            target=TaskTarget(position=chunk.positions, correct=chunk.correct_ids, incorrect=chunk.incorrect_ids),
            corrupted_input_ids=None if bad is None else bad.input_ids,
        )
        for chunk, bad in zip(batch.chunks(batch_size), corrupted_chunks)
    ]


@dataclass
class TaskContext:
    """The loaded model, the task's encoded prompts and the full model's performance on them."""

    task: str
    loaded: LoadedModel
    adapter: ModelAdapter
    #: reference, heldout and, for tasks with corrupted prompts, reference_corrupted, heldout_corrupted
    batches: dict[str, TaskBatch]
    dense: TaskScore
    corrupted: TaskScore | None
    search_dense: TaskScore
    batch_size: int
    _means: dict[str, Any] | None = None

    @property
    def has_corrupted(self) -> bool:
        return "heldout_corrupted" in self.batches

    def ablations(self) -> list[str]:
        return [mode for mode in ABLATIONS if mode != "corrupted" or self.has_corrupted]

    def means(self) -> dict[str, Any]:
        """Mean input of every prunable linear over the reference prompts (for mean-ablation)."""
        if self._means is None:
            self._means = input_means(self.adapter, self.batches["reference"], batch_size=self.batch_size)
        return self._means

    def score(self, masks: MaskSet, part: str, mode: str) -> TaskScore:
        """The task metrics of `part` ("reference" or "heldout") with `masks` ablated by `mode`."""
        return ablated_score(
            self.adapter, masks, self.batches[part], mode, means=self.means() if mode == "mean" else None,
            corrupted=self.batches.get(f"{part}_corrupted"), batch_size=self.batch_size,
        )


def check_task(config: CircuitConfig, task: Task) -> None:
    """Refuse a request the task cannot serve, before any model loads."""
    if config.needs_corrupted() and not task.has_corrupted:
        needs = "--ablation corrupted" if config.ablation == "corrupted" else f"method {config.method!r}"
        raise ExciseError(
            f"{needs} needs corrupted prompts, which task {task.name!r} does not have; use --ablation mean or zero, "
            "or give every line of the task file a \"corrupted\" prompt"
        )


def prepare_task(config: CircuitConfig) -> TaskContext:
    task = load_task(config.task)
    check_task(config, task)
    loaded = load_job_model(config.model, config, "circuit discovery")
    split = split_task(task, loaded.tokenizer, reference=config.reference, heldout=config.heldout, seed=config.seed)
    batches = {part: split.encode(loaded.tokenizer, part) for part in ("reference", "heldout")}
    if split.has_corrupted:
        for part in ("reference", "heldout"):
            batches[f"{part}_corrupted"] = split.encode(loaded.tokenizer, part, corrupted=True)
            check_corrupted(batches[part], batches[f"{part}_corrupted"])
    dense = evaluate_task(loaded.model, batches["heldout"], batch_size=config.batch_size)
    logger.info("full model on %d held-out prompts: %s", len(batches["heldout"]), dense)
    search_dense = evaluate_task(loaded.model, batches["reference"], batch_size=config.batch_size)
    if min(dense.logit_diff, search_dense.logit_diff) <= 0:
        raise ExciseError(
            f"the full model does not do task {split.task!r}: its mean logit difference is {search_dense.logit_diff:.3f} "
            f"on the reference and {dense.logit_diff:.3f} on the held-out prompts (<= 0), so there is no circuit to keep; "
            "check the task's correct/incorrect fields"
        )
    corrupted = None
    if "heldout_corrupted" in batches:
        corrupted = evaluate_task(loaded.model, batches["heldout_corrupted"], batch_size=config.batch_size)
    adapter = get_adapter(loaded.model)
    return TaskContext(split.task, loaded, adapter, batches, dense, corrupted, search_dense, config.batch_size)


def score_task(config: CircuitConfig, context: TaskContext, granularities: set[str] | None = None) -> ScoringResult:
    """Scores from the reference prompts, in this process (LRP restores its patches when it ends, as in
    `excise prune` and `excise correct`)."""
    options = {
        "granularities": granularities or {config.granularity},
        "target": config.target,
        "batch_size": config.batch_size,
        "recompute": config.recompute,
    }
    batches = reference_batches(context.batches["reference"], config.batch_size, context.batches.get("reference_corrupted"))
    return score_model(context.loaded.model, batches, config.method, **options, **config.params)


def faithfulness(context: TaskContext, masks: MaskSet, modes: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Circuit vs full model on held-out prompts, under `modes` (default: every ablation the task allows)."""
    dense, corrupted = context.dense.logit_diff, context.corrupted
    result: dict[str, Any] = {}
    for mode in modes or context.ablations():
        score = context.score(masks, "heldout", mode)
        entry = score.as_dict() | {"retained": score.logit_diff / dense}
        if corrupted is not None:
            entry["normalized"] = (score.logit_diff - corrupted.logit_diff) / (dense - corrupted.logit_diff)
        result[mode] = entry
    return result


def circuit_sweep(config: CircuitConfig, context: TaskContext, scores: Scores) -> Sweep:
    """The sweep over the reference prompts with the configured ablation."""
    selection = circuit_selection(config.granularity, config.scope)
    return Sweep(
        context.adapter, scores, selection, config.granularity,
        evaluate=lambda masks: context.score(masks, "reference", config.ablation),
    )


def circuit_from_curve(
    config: CircuitConfig, context: TaskContext, sweep: Sweep, curve: list[CurvePoint], scoring: dict[str, Any],
    *, report: tuple[str, ...] | None = None,
) -> CircuitResult:
    """The circuit at the sparsest level of `curve` that keeps the retained share, else at its best level,
    then (with `config.greedy`, when a level passes) thinned by the greedy pass; reported on the held-out
    prompts under the ablations `report` (default: all the task allows)."""
    if not curve:
        raise ExciseError(
            f"no level of the grid removes any {config.granularity} at scope {config.scope!r} (every count rounds "
            "to zero); give higher --sparsities or --scope global"
        )
    threshold = config.retain * context.search_dense.logit_diff
    chosen, found = pick(curve, threshold)
    if not found:
        logger.warning(
            "no level keeps %.0f%% of the dense logit difference; the best keeps %.0f%% removing %d of %d %ss",
            100 * config.retain, 100 * chosen.logit_diff / context.search_dense.logit_diff, chosen.removed,
            chosen.units, config.granularity,
        )
    masks = sweep.masks(chosen.level)
    greedy = None
    if config.greedy and found:
        masks, greedy = greedy_removal(
            context.adapter, masks, sweep.scores, config.granularity, config.greedy, threshold, sweep.evaluate
        )
        swept, chosen = chosen, sweep.point_of(masks, chosen.level)
        greedy["swept"] = swept.as_dict()
    return CircuitResult(
        config=config,
        loaded=context.loaded,
        adapter=context.adapter,
        dense=context.dense,
        corrupted=context.corrupted,
        search_dense=context.search_dense,
        threshold=threshold,
        curve=curve,
        chosen=chosen,
        found=found,
        masks=masks,
        faithfulness=faithfulness(context, masks, report),
        graph=circuit_graph(context.adapter, masks),
        scoring=scoring,
        greedy=greedy,
    )


def discover_circuit(config: CircuitConfig) -> CircuitResult:
    started = time.perf_counter()
    context = prepare_task(config)
    scored = score_task(config, context)
    scored_at = time.perf_counter()
    sweep = circuit_sweep(config, context, scored.scores)
    curve = sweep.run(config.sparsities, config.retain * context.search_dense.logit_diff, config.refine_steps)
    result = circuit_from_curve(config, context, sweep, curve, scored.summary())
    result.timings = {
        "scoring_s": scored.wall_seconds,
        "sweep_and_faithfulness_s": time.perf_counter() - scored_at,
        "total_s": time.perf_counter() - started,
    }
    return result
