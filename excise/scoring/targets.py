"""Targets: the per-sample scalar whose relevance (or gradient) a scorer propagates back.

`objective(logits, batch) -> [B]` is where LRP starts (a logit, a logit difference, or a
logit measured against the model's expectation: LRP explains a quantity linear in the
logits, so what it conserves is that quantity, not a loss). `loss(logits, batch) -> [B]` is what the gradient
scorer differentiates: the plain LM loss for language-model data, the task objective for
task targets (the sign does not matter for absolute scores).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import torch

from excise.errors import ExciseError
from excise.registry import Registry
from excise.scoring.batches import ReferenceBatch


class Target(ABC):
    name: ClassVar[str]
    needs_task: ClassVar[bool] = False

    @abstractmethod
    def objective(self, logits: torch.Tensor, batch: ReferenceBatch) -> torch.Tensor:
        """`logits [B, T, V]` -> `[B]`."""

    def loss(self, logits: torch.Tensor, batch: ReferenceBatch) -> torch.Tensor:
        return self.objective(logits, batch)

    def check(self, batch: ReferenceBatch) -> None:
        if self.needs_task and batch.target is None:
            raise ExciseError(f"target {self.name!r} needs task batches (position and correct token per sample)")


def _next_token_mask(batch: ReferenceBatch) -> torch.Tensor:
    """`[B, T-1]`: position t predicts token t+1; both must be real tokens, and t+1 a scored one
    (with a `scored` mask only the continuation's tokens are targets, the prompt is context)."""
    return batch.mask[:, :-1] * batch.scored_mask[:, 1:]


class NextToken(Target):
    """Logit of each position's actual next token, summed over the positions of a sample."""

    name = "next_token"

    def objective(self, logits, batch):
        chosen = logits[:, :-1].gather(-1, batch.input_ids[:, 1:, None]).squeeze(-1)  # [B, T-1]
        return (chosen * _next_token_mask(batch)).sum(-1)

    def loss(self, logits, batch):
        """Mean next-token negative log-likelihood of each sample."""
        log_probs = logits[:, :-1].float().log_softmax(-1)
        nll = -log_probs.gather(-1, batch.input_ids[:, 1:, None]).squeeze(-1)  # [B, T-1]
        mask = _next_token_mask(batch)
        return (nll * mask).sum(-1) / mask.sum(-1).clamp(min=1)


class NextTokenMargin(NextToken):
    """Each position's next-token logit minus the logit expected under the model's own
    distribution, `z_t - sum_v p_v z_v` with p held fixed, summed over a sample's positions.

    Its gradient is that of the log-probability of the next token (`onehot - p`), so LRP
    started here explains why the model prefers *this* token over what it would otherwise
    say (the softmax-gradient start of SGLRP, Iwana et al. 2019). The plain logit is mostly
    the part every token shares, so relevance for it lands on components that serve any
    next token; the gradient scorer, which differentiates the log-probability, never had
    that problem. The loss (for the gradient scorer) stays the next-token NLL, whose
    gradient this is.
    """

    name = "next_token_margin"

    def objective(self, logits, batch):
        logits = logits[:, :-1]
        expected = (logits.softmax(-1).detach() * logits).sum(-1)  # [B, T-1]
        chosen = logits.gather(-1, batch.input_ids[:, 1:, None]).squeeze(-1)
        return ((chosen - expected) * _next_token_mask(batch)).sum(-1)


class PredictedToken(Target):
    """Each position's largest logit (the model's own prediction), summed over positions."""

    name = "predicted_token"

    def objective(self, logits, batch):
        return (logits[:, :-1].max(-1).values * _next_token_mask(batch)).sum(-1)


def _task_logits(logits: torch.Tensor, batch: ReferenceBatch, tokens: torch.Tensor) -> torch.Tensor:
    rows = torch.arange(len(batch), device=logits.device)
    return logits[rows, batch.target.position, tokens]  # [B]


class TaskCorrect(Target):
    """Logit of the correct token at the task position."""

    name = "task_correct"
    needs_task = True

    def objective(self, logits, batch):
        return _task_logits(logits, batch, batch.target.correct)


class TaskLogitDiff(Target):
    """Correct minus incorrect logit at the task position (e.g. IOI: ' Mary' - ' John')."""

    name = "task_logit_diff"
    needs_task = True

    def check(self, batch):
        super().check(batch)
        if batch.target.incorrect is None:
            raise ExciseError("target 'task_logit_diff' needs an incorrect token per sample")

    def objective(self, logits, batch):
        return _task_logits(logits, batch, batch.target.correct) - _task_logits(logits, batch, batch.target.incorrect)


TARGETS: Registry[Target] = Registry("target")
for _target in (NextToken(), NextTokenMargin(), PredictedToken(), TaskCorrect(), TaskLogitDiff()):
    TARGETS.add(_target.name, _target)


def get_target(name: str) -> Target:
    return TARGETS[name]
