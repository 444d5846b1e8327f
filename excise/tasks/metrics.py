"""Task metrics: logit difference (correct - incorrect) and accuracy at each prompt's last position."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from excise.tasks.base import TaskBatch


@dataclass(frozen=True)
class TaskScore:
    logit_diff: float  # mean over prompts of logit(correct) - logit(incorrect)
    accuracy: float  # share of prompts where the correct continuation beats the incorrect one
    top1: float  # share of prompts where the correct continuation is the most likely next token
    count: int
    logit_diff_sem: float = 0.0  # standard error of that mean over the prompts

    def as_dict(self) -> dict[str, float]:
        return {
            "logit_diff": self.logit_diff, "logit_diff_sem": self.logit_diff_sem, "accuracy": self.accuracy,
            "top1": self.top1, "count": self.count,
        }


@torch.no_grad()
def task_logits(model, batch: TaskBatch, *, batch_size: int = 16) -> torch.Tensor:
    """Next-token logits at each prompt's last position: [n, vocab] fp32."""
    device = next(model.parameters()).device
    out = []
    for chunk in batch.chunks(batch_size):
        logits = model(
            input_ids=chunk.input_ids.to(device), attention_mask=chunk.attention_mask.to(device)
        ).logits  # [b, length, vocab]
        rows = torch.arange(len(chunk), device=device)
        out.append(logits[rows, chunk.positions.to(device)].float().cpu())
    return torch.cat(out)


def score_logits(logits: torch.Tensor, batch: TaskBatch) -> TaskScore:
    rows = torch.arange(len(batch))
    diff = logits[rows, batch.correct_ids] - logits[rows, batch.incorrect_ids]  # [n]
    return TaskScore(
        logit_diff=float(diff.mean()),
        accuracy=float((diff > 0).float().mean()),
        top1=float((logits.argmax(dim=-1) == batch.correct_ids).float().mean()),
        count=len(batch),
        logit_diff_sem=float(diff.std() / len(batch) ** 0.5) if len(batch) > 1 else 0.0,
    )


def evaluate_task(model, batch: TaskBatch, *, batch_size: int = 16) -> TaskScore:
    return score_logits(task_logits(model, batch, batch_size=batch_size), batch)
