"""What a task is (`Task`): prompts, each with a correct and an incorrect next token, and its metrics.

A `TaskExample` holds text; `encode_examples` turns a list of them into a
`TaskBatch` of token ids for a given tokenizer, checking that every prompt
tokenizes as intended (the continuation is one token that follows the prompt's
tokens unchanged). The metric is the logit difference `logit(correct) -
logit(incorrect)` at the prompt's last position, and accuracy is the share of
prompts where it is positive.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import torch

from excise.errors import ExciseError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TaskExample:
    prompt: str
    correct: str  # continuation text, with its leading space (" Mary")
    incorrect: str
    corrupted: str | None = None  # the same prompt with the task-relevant words swapped out


@dataclass
class TaskBatch:
    """Right-padded prompts; the metric is read at `positions` (each prompt's last token)."""

    input_ids: torch.Tensor  # [n, length] long
    attention_mask: torch.Tensor  # [n, length] long, 1 = real token
    positions: torch.Tensor  # [n] long
    correct_ids: torch.Tensor  # [n] long
    incorrect_ids: torch.Tensor  # [n] long

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    def chunks(self, size: int) -> list[TaskBatch]:
        return [
            TaskBatch(
                input_ids=self.input_ids[i : i + size],
                attention_mask=self.attention_mask[i : i + size],
                positions=self.positions[i : i + size],
                correct_ids=self.correct_ids[i : i + size],
                incorrect_ids=self.incorrect_ids[i : i + size],
            )
            for i in range(0, len(self), size)
        ]


def continuation_token(tokenizer, continuation: str, *, where: str) -> tuple[int, bool]:
    """The first token id of `continuation` and whether the continuation is that one token."""
    alone = tokenizer.encode(continuation, add_special_tokens=False)
    if not alone:
        raise ExciseError(f"{where}: the continuation {continuation!r} is empty; give a non-empty string")
    return alone[0], len(alone) == 1


def encode_examples(tokenizer, examples: list[TaskExample], *, corrupted: bool = False, strict: bool = True) -> TaskBatch:
    """Tokenize prompts (or their corrupted counterparts) into one right-padded batch.

    With `strict`, a continuation that is not a single token is an error (generated
    tasks must tokenize as intended); otherwise its first token is used and a warning
    names the examples concerned.
    """
    if not examples:
        raise ExciseError("the task has no prompts; give at least one")
    rows, correct, incorrect, inexact = [], [], [], []
    for index, example in enumerate(examples):
        text = example.corrupted if corrupted else example.prompt
        if text is None:
            raise ExciseError(f"prompt {index} has no corrupted counterpart; this task cannot give a corrupted baseline")
        ids = tokenizer.encode(text, add_special_tokens=False)
        where = f"prompt {index} ({text[:40]!r})"
        good, exact_good = continuation_token(tokenizer, example.correct, where=where)
        bad, exact_bad = continuation_token(tokenizer, example.incorrect, where=where)
        whole = tokenizer.encode(text + example.correct, add_special_tokens=False)
        if not (exact_good and exact_bad and whole == ids + [good]):
            inexact.append(index)
        if good == bad:
            raise ExciseError(f"{where}: correct and incorrect continuations start with the same token; make them differ")
        rows.append(ids)
        correct.append(good)
        incorrect.append(bad)
    if inexact and strict:
        raise ExciseError(f"prompts {inexact[:5]} do not tokenize as intended (continuation not one separate token)")
    if inexact:
        logger.warning(
            "%d prompt(s) have a continuation that is not a single separate token; using its first token "
            "(prompts %s)", len(inexact), ", ".join(str(i) for i in inexact[:10])
        )
    return _pad(rows, correct, incorrect, pad_id=tokenizer.pad_token_id or 0)


def _pad(rows: list[list[int]], correct: list[int], incorrect: list[int], *, pad_id: int) -> TaskBatch:
    length = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), length), pad_id, dtype=torch.long)  # [n, length]
    attention_mask = torch.zeros((len(rows), length), dtype=torch.long)
    for i, row in enumerate(rows):
        input_ids[i, : len(row)] = torch.tensor(row)
        attention_mask[i, : len(row)] = 1
    return TaskBatch(
        input_ids=input_ids,
        attention_mask=attention_mask,
        positions=torch.tensor([len(r) - 1 for r in rows]),
        correct_ids=torch.tensor(correct),
        incorrect_ids=torch.tensor(incorrect),
    )


class Task(ABC):
    name: ClassVar[str]
    #: whether a continuation that is not one token is an error (else: first token, with a warning)
    strict_tokens: ClassVar[bool]
    #: whether every example has a corrupted counterpart (for corrupted ablation and EAP)
    has_corrupted: bool = False

    @abstractmethod
    def examples(self, tokenizer, count: int, seed: int) -> list[TaskExample]:
        """Up to `count` examples in a seeded order (a file task may have fewer)."""
