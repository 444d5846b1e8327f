"""Repetition: continuations that loop on the project's repetition prompt openings.

Undesired reference: each reference prompt with its 50-token greedy continuation
when that is repetitive (uniqueness ratio < 0.5). Metric: uniqueness ratio; the
primary number is the share of prompts below 0.5.
"""

from __future__ import annotations

from correction.behaviours.base import Behaviour, BehaviourMeasurement
from correction.errors import ExciseError
from correction.evaluation.repetition import RepetitionProtocol, evaluate_repetition


class RepetitionBehaviour(Behaviour):
    name = "repetition"
    prompt_set = "repetition"
    primary = "repetitive_share"
    help = "looping continuations (share of 50-token greedy continuations with uniqueness ratio < 0.5)"

    def measure(self, generator, prompts, settings) -> BehaviourMeasurement:
        summary = evaluate_repetition(generator, prompts, RepetitionProtocol()).summary
        return BehaviourMeasurement(
            metrics={
                "repetitive_share": summary.repetitive_share,
                "mean_uniqueness": summary.mean_uniqueness,
                "prompts": summary.prompts,
            },
            primary=self.primary,
        )

    def undesired_texts(self, generator, prompts, settings) -> list[str]:
        protocol = RepetitionProtocol()
        result = evaluate_repetition(generator, prompts, protocol)
        texts = [
            prompt + continuation
            for prompt, continuation, ratio in zip(prompts, result.continuations, result.ratios, strict=True)
            if ratio < protocol.threshold
        ]
        if not texts:
            raise ExciseError(
                f"none of the model's continuations of the {len(prompts)} reference prompts loops; "
                "there is nothing to correct"
            )
        return texts
