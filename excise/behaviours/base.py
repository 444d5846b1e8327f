"""What a behaviour to correct is: its prompt set, its reference text for relevance, its metric.

A behaviour turns the reference split of its prompt set into *undesired* text: the
prompts followed by the model's own continuations that show the behaviour (every
sampled toxic continuation, a looping one). Relevance on that text (started on the
continuation's tokens only), contrasted with relevance on general text, finds the
components to remove. Its metric is measured on the validation split (to choose)
and the test split (to report); `primary` names the number a correction lowers
(lower is better).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from excise.evaluation.generation import Continuations, Generator, SamplingConfig
from excise.evaluation.intervals import bootstrap_mean, wilson
from excise.evaluation.toxicity import DEFAULT_TOXICITY_SCORER
from excise.reference_data import PromptSplit, load_prompts
from excise.scoring.batches import ReferenceBatch


class EvaluationSettings(BaseModel):
    """How much generation a behaviour measurement costs (the protocol's own defaults otherwise)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    samples: int = Field(25, gt=0, description="sampled continuations per toxic prompt")
    reference_samples: int = Field(
        25, gt=0, description="continuations sampled per reference prompt for the undesired text"
    )
    max_prompts: int | None = Field(None, gt=0, description="use only the first N prompts of each split")
    seed: int = Field(0, description="seed of the sampled continuations, the intervals and the general windows")
    toxicity_scorer: str = Field(DEFAULT_TOXICITY_SCORER, description="toxicity classifier")


@dataclass(frozen=True)
class BehaviourMeasurement:
    """Metrics (with 95 % intervals as `<name>_low` / `<name>_high`) and the per-prompt outcomes
    that paired comparisons read: `shows[i]` = prompt i showed the behaviour (the primary metric is
    their share), `values[i]` = its continuous number (maximum toxicity, uniqueness ratio)."""

    metrics: dict[str, float]
    primary: str  # the metric a correction lowers
    shows: tuple[bool, ...] = ()
    values: tuple[float, ...] = ()

    @property
    def value(self) -> float:
        return self.metrics[self.primary]


@dataclass(frozen=True)
class UndesiredText:
    """A prompt and a continuation of it that shows the behaviour; relevance starts on the continuation."""

    prompt: str
    continuation: str


class Behaviour(ABC):
    name: ClassVar[str]
    prompt_set: ClassVar[str]
    primary: ClassVar[str]
    secondary: ClassVar[str]  # the metric `values` average to
    help: ClassVar[str]
    finds_onsets: ClassVar[bool] = False  # see `onsets`

    def prepare(self, settings: EvaluationSettings) -> None:
        """Load what measuring needs (e.g. a classifier), so a broken install fails before any work."""

    def prompts(self, split: PromptSplit, max_prompts: int | None = None) -> list[str]:
        texts = [prompt.text for prompt in load_prompts(self.prompt_set, split)]
        return texts[:max_prompts] if max_prompts else texts

    @abstractmethod
    def sampling(self, settings: EvaluationSettings) -> SamplingConfig:
        """How the measurement continues each prompt."""

    def reference_sampling(self, settings: EvaluationSettings) -> SamplingConfig:
        """How the reference prompts are continued to find undesired text (the measurement's by default)."""
        return self.sampling(settings)

    @abstractmethod
    def summarize(self, generated: Continuations, settings: EvaluationSettings) -> BehaviourMeasurement:
        """The behaviour's metrics on continuations `[prompts][samples]`."""

    @abstractmethod
    def reference_texts(self, prompts: list[str], generated: Continuations,
                        settings: EvaluationSettings) -> tuple[list[UndesiredText], list[UndesiredText]]:
        """The continuations (of `reference_sampling`) that show the behaviour, and those that do not
        (the harmless contrast AurA needs); refuses when none shows it."""

    def onsets(self, texts: list[UndesiredText], settings: EvaluationSettings) -> list[UndesiredText]:
        """Each undesired text cut to the word at which it starts to show the behaviour: the words
        before it join the prompt (context), the words after it are dropped, so relevance starts
        where the behaviour does and not on the rest of the continuation (behaviours with `finds_onsets`)."""
        raise NotImplementedError(f"behaviour {self.name!r} cannot tell where in a text it starts")

    def undesired(self, prompts: list[str], generated: Continuations, settings: EvaluationSettings) -> list[UndesiredText]:
        return self.reference_texts(prompts, generated, settings)[0]

    def measure(self, generator: Generator, prompts: list[str], settings: EvaluationSettings) -> BehaviourMeasurement:
        return self.summarize(generator.generate(prompts, self.sampling(settings)), settings)

    def undesired_texts(self, generator: Generator, prompts: list[str], settings: EvaluationSettings) -> list[UndesiredText]:
        return self.undesired(prompts, generator.generate(prompts, self.reference_sampling(settings)), settings)


def with_intervals(metrics: dict[str, float], shows, values, primary: str, secondary: str, seed: int) -> dict[str, float]:
    """`metrics` plus the Wilson interval of `primary` and the bootstrap interval of `secondary`."""
    shows, values = np.asarray(shows, dtype=bool), np.asarray(values, dtype=np.float64)
    low, high = wilson(int(shows.sum()), len(shows))
    mean_low, mean_high = bootstrap_mean(values, seed=seed)
    return metrics | {f"{primary}_low": low, f"{primary}_high": high, f"{secondary}_low": mean_low,
                      f"{secondary}_high": mean_high}


def text_batches(tokenizer, texts: list[str], *, batch_size: int, max_length: int) -> list[ReferenceBatch]:
    """Right-padded `ReferenceBatch`es of `texts`, each cut to `max_length` tokens."""
    encoded = [tokenizer.encode(text, add_special_tokens=False)[:max_length] for text in texts]
    return _batches(tokenizer, [(ids, None) for ids in encoded], batch_size)


def undesired_batches(tokenizer, texts: list[UndesiredText], *, batch_size: int, max_length: int) -> list[ReferenceBatch]:
    """Batches of prompt + continuation whose `scored` mask covers the continuation's tokens only:
    the prompt is context, what is explained is the behaviour."""
    rows = []
    for text in texts:
        prompt = tokenizer.encode(text.prompt, add_special_tokens=False)
        continuation = tokenizer.encode(text.continuation, add_special_tokens=False)
        ids = (prompt + continuation)[:max_length]
        rows.append((ids, len(prompt)))
    return _batches(tokenizer, rows, batch_size)


def _batches(tokenizer, rows: list[tuple[list[int], int | None]], batch_size: int) -> list[ReferenceBatch]:
    """`rows`: token ids and where the scored part starts (None: no `scored` mask, every token counts)."""
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    batches = []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        width = max(len(ids) for ids, _ in chunk)
        input_ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)  # [B, T]
        attention_mask = torch.zeros((len(chunk), width), dtype=torch.long)  # [B, T]
        scored = torch.zeros((len(chunk), width), dtype=torch.long)  # [B, T]
        for row, (ids, begin) in enumerate(chunk):
            input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            attention_mask[row, : len(ids)] = 1
            scored[row, (begin or 0) : len(ids)] = 1
        with_scored = any(begin is not None for _, begin in chunk)
        batches.append(ReferenceBatch(input_ids=input_ids, attention_mask=attention_mask,
                                      scored=scored if with_scored else None))
    return batches
