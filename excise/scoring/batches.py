"""Reference data for scoring: LM windows or task prompts with a target token.

A scorer consumes `ReferenceBatch`es. Plain LM windows (`LongTensor[count, length]` from
`excise.data.token_windows`) are cut into batches by `as_batches`; task data (IOI
prompts, toxic continuations) comes as batches carrying a `TaskTarget`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from excise.errors import ExciseError


@dataclass(frozen=True)
class TaskTarget:
    """Where relevance starts for each sample: the logit at `position` of token `correct`
    (minus that of `incorrect` for a logit-difference target). All `[B]` long tensors."""

    position: torch.Tensor
    correct: torch.Tensor
    incorrect: torch.Tensor | None = None


@dataclass(frozen=True)
class ReferenceBatch:
    input_ids: torch.Tensor  # [B, T]
    attention_mask: torch.Tensor | None = None  # [B, T], 1 = real token
    target: TaskTarget | None = None
    #: [B, T] the same prompts with the task's key words swapped (IOI: names), for EAP
    corrupted_input_ids: torch.Tensor | None = None
    #: [B, T], 1 = a token of the behaviour to explain (a continuation after its prompt); None = every real token
    scored: torch.Tensor | None = None

    def __post_init__(self):
        if self.input_ids.dim() != 2:
            raise ExciseError(f"reference input_ids must be [batch, tokens]; got shape {tuple(self.input_ids.shape)}")
        if self.attention_mask is not None and self.attention_mask.shape != self.input_ids.shape:
            raise ExciseError("reference attention_mask must have the shape of input_ids")
        if self.corrupted_input_ids is not None and self.corrupted_input_ids.shape != self.input_ids.shape:
            raise ExciseError("reference corrupted_input_ids must have the shape of input_ids (same token lengths)")
        if self.scored is not None and self.scored.shape != self.input_ids.shape:
            raise ExciseError("reference scored mask must have the shape of input_ids")
        if self.target is not None and self.target.position.shape != (len(self),):
            raise ExciseError("a task target needs one position, correct (and incorrect) token per sample")

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    @property
    def mask(self) -> torch.Tensor:
        """`[B, T]` float mask of real tokens (all ones without an attention mask)."""
        if self.attention_mask is None:
            return torch.ones(self.input_ids.shape, device=self.input_ids.device)
        return self.attention_mask.float()

    @property
    def scored_mask(self) -> torch.Tensor:
        """`[B, T]` float mask of the tokens whose statistics and targets count (real and scored)."""
        return self.mask if self.scored is None else self.mask * self.scored.float()

    def num_tokens(self) -> int:
        return int(self.mask.sum().item())

    def num_scored_tokens(self) -> int:
        return int(self.scored_mask.sum().item())

    def to(self, device: torch.device | str) -> ReferenceBatch:
        def move(t):
            return None if t is None else t.to(device)

        target = self.target
        if target is not None:
            target = TaskTarget(move(target.position), move(target.correct), move(target.incorrect))
        return ReferenceBatch(
            move(self.input_ids), move(self.attention_mask), target,
            corrupted_input_ids=move(self.corrupted_input_ids), scored=move(self.scored),
        )


ReferenceData = torch.Tensor | Sequence[ReferenceBatch]


def as_batches(data: ReferenceData, batch_size: int = 1) -> list[ReferenceBatch]:
    """LM windows `[count, length]` cut into batches of `batch_size`; batches pass through."""
    if isinstance(data, torch.Tensor):
        if data.dim() != 2 or data.dtype != torch.long:
            raise ExciseError(
                f"reference windows must be a LongTensor [count, length]; got {data.dtype} {tuple(data.shape)}"
            )
        if batch_size < 1:
            raise ExciseError(f"batch size must be at least 1; got {batch_size}")
        return [ReferenceBatch(chunk) for chunk in data.split(batch_size)]
    batches = list(data)
    if not all(isinstance(b, ReferenceBatch) for b in batches):
        raise ExciseError("reference data must be a LongTensor of windows or a list of ReferenceBatch")
    return batches


def shard(batches: Sequence[ReferenceBatch], rank: int, world_size: int) -> list[ReferenceBatch]:
    """This rank's share of the batches (round robin, so shards differ by at most one batch)."""
    return list(batches[rank::world_size])
