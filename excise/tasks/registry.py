"""The registry of built-in tasks, and the reference / held-out split.

`load_task(spec)` takes a built-in name ("ioi") or a path to a JSONL file of user
prompts. `split_task` draws the examples once (seeded) and cuts them into a
reference part (used for scoring) and a held-out part (used for every
evaluation), which never share a prompt.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from excise.errors import ExciseError
from excise.registry import Registry
from excise.tasks.base import Task, TaskBatch, TaskExample, encode_examples
from excise.tasks.jsonl import JsonlTask

#: the built-in tasks, listed in `excise.tasks`' `__init__`
TASKS: Registry[type[Task]] = Registry("task", unknown="unknown task {name!r}; choose one of {choices} or give a FILE.jsonl")


def load_task(spec: str) -> Task:
    if spec in TASKS:
        return TASKS[spec]()
    if spec.endswith(".jsonl"):
        return JsonlTask(Path(spec))
    raise ExciseError(TASKS.unknown_message(spec))


@dataclass
class TaskSplit:
    task: str
    reference: list[TaskExample]
    heldout: list[TaskExample]
    strict_tokens: bool = True

    def encode(self, tokenizer, part: str, *, corrupted: bool = False) -> TaskBatch:
        """Token ids of the "reference" or "heldout" prompts (or their corrupted counterparts)."""
        return encode_examples(tokenizer, getattr(self, part), corrupted=corrupted, strict=self.strict_tokens)

    @property
    def has_corrupted(self) -> bool:
        return all(e.corrupted is not None for e in self.reference + self.heldout)


def split_task(task: Task, tokenizer, *, reference: int, heldout: int, seed: int = 0) -> TaskSplit:
    """Reference and held-out examples; a short file is cut in the same proportion."""
    if reference < 1 or heldout < 1:
        raise ExciseError("reference and held-out prompt counts must be at least 1")
    examples = task.examples(tokenizer, reference + heldout, seed)
    if len(examples) < 2:
        raise ExciseError(f"task {task.name!r} has {len(examples)} prompt(s); it needs at least 2 to hold some out")
    cut = reference if len(examples) >= reference + heldout else round(len(examples) * reference / (reference + heldout))
    cut = min(max(cut, 1), len(examples) - 1)
    return TaskSplit(
        task=task.name,
        reference=examples[:cut],
        heldout=examples[cut : reference + heldout],
        strict_tokens=task.strict_tokens,
    )
