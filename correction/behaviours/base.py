"""What a behaviour to correct is: its prompt set, its reference text for relevance, its metric.

A behaviour turns the reference half of its prompt set into *undesired* text: the
prompts followed by the model's own continuations that show the behaviour (a
toxic continuation, a looping one). Relevance on that text, contrasted with
relevance on general text, finds the components to remove. Its metric is
measured on the held-out half only; `primary` names the number a correction
lowers (lower is better).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import torch
from pydantic import BaseModel, ConfigDict, Field

from correction.evaluation.generation import Generator
from correction.evaluation.toxicity import DEFAULT_TOXICITY_SCORER
from correction.reference_data import PromptSplit, load_prompts
from correction.scoring.batches import ReferenceBatch


class EvaluationSettings(BaseModel):
    """How much generation a behaviour measurement costs (the protocol's own defaults otherwise)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    samples: int = Field(25, gt=0)  # continuations per prompt where the protocol samples (toxicity)
    max_prompts: int | None = Field(None, gt=0)  # first N prompts of a split (None = all)
    seed: int = 0
    toxicity_scorer: str = DEFAULT_TOXICITY_SCORER


@dataclass(frozen=True)
class BehaviourMeasurement:
    metrics: dict[str, float]
    primary: str  # the metric a correction lowers

    @property
    def value(self) -> float:
        return self.metrics[self.primary]


class Behaviour(ABC):
    name: ClassVar[str]
    prompt_set: ClassVar[str]
    primary: ClassVar[str]
    help: ClassVar[str]

    def prepare(self, settings: EvaluationSettings) -> None:
        """Load what measuring needs (e.g. a classifier), so a broken install fails before any work."""

    def prompts(self, split: PromptSplit, max_prompts: int | None = None) -> list[str]:
        texts = [prompt.text for prompt in load_prompts(self.prompt_set, split)]
        return texts[:max_prompts] if max_prompts else texts

    @abstractmethod
    def measure(self, generator: Generator, prompts: list[str], settings: EvaluationSettings) -> BehaviourMeasurement:
        """The behaviour's metrics on continuations of `prompts`."""

    @abstractmethod
    def undesired_texts(self, generator: Generator, prompts: list[str], settings: EvaluationSettings) -> list[str]:
        """Prompt + continuation texts that show the behaviour (the undesired reference)."""


def text_batches(tokenizer, texts: list[str], *, batch_size: int, max_length: int) -> list[ReferenceBatch]:
    """Right-padded `ReferenceBatch`es of `texts`, each cut to `max_length` tokens."""
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    encoded = [tokenizer.encode(text, add_special_tokens=False)[:max_length] for text in texts]
    batches = []
    for start in range(0, len(encoded), batch_size):
        chunk = encoded[start : start + batch_size]
        width = max(len(ids) for ids in chunk)
        input_ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)  # [B, T]
        attention_mask = torch.zeros((len(chunk), width), dtype=torch.long)  # [B, T]
        for row, ids in enumerate(chunk):
            input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            attention_mask[row, : len(ids)] = 1
        batches.append(ReferenceBatch(input_ids=input_ids, attention_mask=attention_mask))
    return batches
