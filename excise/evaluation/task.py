"""Task metrics of a model, or of a mask (a circuit or a pruning) applied to it.

The prompts are split as `excise circuit` splits them (`reference` / `heldout` counts and
`seed`), so with the same settings the held-out prompts are the circuit's own; the
reference prompts serve only as the mean activations of mean-ablation. A mask's removed
parts are ablated as the artifact was searched with (its manifest's `ablation`), zeroed
when it names none (a pruning's masks: the pruned model).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from excise.circuits.ablation import ABLATIONS, ablated_score, check_corrupted, input_means
from excise.errors import ExciseError
from excise.artifacts.manifest import MANIFEST_NAME, Manifest
from excise.artifacts.masks import MaskSet
from excise.models.adapters import get_adapter
from excise.models.loading import load_model
from excise.tasks import TaskScore, evaluate_task, load_task, split_task

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MaskSpec:
    folder: Path
    masks: MaskSet
    ablation: str


@dataclass(frozen=True)
class TaskEvaluation:
    task: str
    model: TaskScore  # the full model
    masked: TaskScore | None  # with the mask's removed parts ablated
    ablation: str | None


def read_mask(folder: Path, ablation: str | None) -> MaskSpec:
    """The mask of an artifact folder and the ablation to evaluate it with (checked, before any model loads)."""
    masks = MaskSet.load(folder)
    recorded = None
    if (Path(folder) / MANIFEST_NAME).is_file():
        manifest = Manifest.load(folder)
        recorded = (manifest.method.params.get("ablation") if manifest.method else None)
    chosen = ablation or recorded or "zero"
    if chosen not in ABLATIONS:
        raise ExciseError(f"unknown ablation {chosen!r}; choose one of {', '.join(ABLATIONS)}")
    return MaskSpec(Path(folder), masks, chosen)


def evaluate_on_task(
    model: str, task_spec: str, *, mask: MaskSpec | None = None, reference: int = 32, heldout: int = 64,
    seed: int = 0, batch_size: int = 16, device: str = "cpu",
) -> TaskEvaluation:
    task = load_task(task_spec)
    if mask is not None and mask.ablation == "corrupted" and not task.has_corrupted:
        raise ExciseError(f"corrupted ablation needs corrupted prompts, which task {task.name!r} does not have; pass --ablation mean or zero")
    loaded = load_model(model, device=device)
    split = split_task(task, loaded.tokenizer, reference=reference, heldout=heldout, seed=seed)
    prompts = split.encode(loaded.tokenizer, "heldout")
    dense = evaluate_task(loaded.model, prompts, batch_size=batch_size)
    if mask is None:
        return TaskEvaluation(split.task, dense, None, None)
    adapter = get_adapter(loaded.model)
    means = corrupted = None
    if mask.ablation == "mean":
        means = input_means(adapter, split.encode(loaded.tokenizer, "reference"), batch_size=batch_size)
    if mask.ablation == "corrupted":
        corrupted = split.encode(loaded.tokenizer, "heldout", corrupted=True)
        check_corrupted(prompts, corrupted)
    masked = ablated_score(adapter, mask.masks, prompts, mask.ablation, means=means, corrupted=corrupted, batch_size=batch_size)
    logger.info("%s on %d prompts: full %s, masked (%s) %s", split.task, len(prompts), dense, mask.ablation, masked)
    return TaskEvaluation(split.task, dense, masked, mask.ablation)
