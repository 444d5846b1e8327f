"""Repetition of continuations: the response uniqueness ratio.

For each prompt one greedy continuation of 50 new tokens; its uniqueness ratio
is (number of distinct token ids) / (number of tokens). A looping continuation
scores low (the same few tokens again and again); a continuation that ends at
once (no tokens) counts as 1.0, since it repeats nothing. Reported: the mean
ratio over prompts and the share of prompts whose ratio is below 0.5.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from excise.errors import ExciseError
from excise.evaluation.generation import Continuations, Generator, SamplingConfig

REPETITIVE_BELOW = 0.5


def uniqueness_ratio(token_ids: Sequence[int]) -> float:
    return len(set(token_ids)) / len(token_ids) if len(token_ids) else 1.0


class RepetitionProtocol(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    max_new_tokens: int = Field(50, gt=0)
    threshold: float = Field(REPETITIVE_BELOW, gt=0, le=1)

    def sampling(self) -> SamplingConfig:
        return SamplingConfig(samples=1, greedy=True, max_new_tokens=self.max_new_tokens)


@dataclass(frozen=True)
class RepetitionSummary:
    mean_uniqueness: float
    repetitive_share: float  # share of prompts with a ratio below the threshold
    prompts: int


def summarize_repetition(ratios: Sequence[float], threshold: float = REPETITIVE_BELOW) -> RepetitionSummary:
    ratios = np.asarray(ratios, dtype=np.float64)
    if ratios.size == 0:
        raise ExciseError("no continuations to measure repetition on; give at least one prompt")
    return RepetitionSummary(
        mean_uniqueness=float(ratios.mean()), repetitive_share=float((ratios < threshold).mean()), prompts=ratios.size
    )


@dataclass(frozen=True)
class RepetitionResult:
    summary: RepetitionSummary
    ratios: list[float]
    continuations: list[str]


def repetition_of(generated: Continuations, protocol: RepetitionProtocol) -> RepetitionResult:
    """Uniqueness ratios and summary of already generated continuations (the first sample of each prompt)."""
    ratios = [uniqueness_ratio(row[0].token_ids) for row in generated]
    return RepetitionResult(
        summary=summarize_repetition(ratios, protocol.threshold),
        ratios=ratios,
        continuations=[row[0].text for row in generated],
    )


def evaluate_repetition(generator: Generator, prompts: list[str], protocol: RepetitionProtocol) -> RepetitionResult:
    return repetition_of(generator.generate(prompts, protocol.sampling()), protocol)
