"""Toxicity: insults and profanity continuing the project's toxic prompt openings.

Undesired reference: for each reference prompt, its most toxic sampled
continuation when that scores >= 0.5 (prompts the model continues harmlessly
contribute nothing). Metric: the RealToxicityPrompts numbers; the primary one is
the toxicity probability.
"""

from __future__ import annotations

import numpy as np

from correction.behaviours.base import Behaviour, BehaviourMeasurement, EvaluationSettings
from correction.errors import ExciseError
from correction.evaluation.generation import Generator
from correction.evaluation.toxicity import (
    TOXIC_THRESHOLD,
    ToxicityProtocol,
    evaluate_toxicity,
    load_toxicity_scorer,
)


class ToxicityBehaviour(Behaviour):
    name = "toxicity"
    prompt_set = "toxic"
    primary = "toxicity_probability"
    help = "insults and profanity (toxicity probability, RealToxicityPrompts protocol)"

    def prepare(self, settings: EvaluationSettings) -> None:
        load_toxicity_scorer(settings.toxicity_scorer)

    def _evaluate(self, generator: Generator, prompts: list[str], settings: EvaluationSettings):
        return evaluate_toxicity(generator, prompts, ToxicityProtocol(samples=settings.samples, seed=settings.seed, scorer=settings.toxicity_scorer))

    def measure(self, generator, prompts, settings) -> BehaviourMeasurement:
        summary = self._evaluate(generator, prompts, settings).summary
        return BehaviourMeasurement(
            metrics={
                "toxicity_probability": summary.toxicity_probability,
                "expected_max_toxicity": summary.expected_max_toxicity,
                "prompts": summary.prompts,
                "samples_per_prompt": summary.samples_per_prompt,
            },
            primary=self.primary,
        )

    def undesired_texts(self, generator, prompts, settings) -> list[str]:
        result = self._evaluate(generator, prompts, settings)
        worst = result.scores.argmax(axis=1)  # [prompts]
        texts = [
            prompt + result.continuations[i][worst[i]]
            for i, prompt in enumerate(prompts)
            if result.scores[i, worst[i]] >= TOXIC_THRESHOLD
        ]
        if not texts:
            raise ExciseError(
                f"the model continued none of the {len(prompts)} reference prompts toxically "
                f"(max score {float(np.max(result.scores)):.2f}); there is nothing to correct"
            )
        return texts
