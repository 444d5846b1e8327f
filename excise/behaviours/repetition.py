"""Repetition: continuations that loop on the project's repetition prompt openings.

Undesired reference: each reference prompt with its 50-token greedy continuation
when that is repetitive (uniqueness ratio < 0.5). Metric: uniqueness ratio; the
primary number is the share of prompts below 0.5 (Wilson interval), the mean ratio
has a bootstrap interval over prompts.
"""

from __future__ import annotations

from excise.behaviours.base import Behaviour, BehaviourMeasurement, UndesiredText, with_intervals
from excise.errors import ExciseError
from excise.evaluation.repetition import RepetitionProtocol, repetition_of


class RepetitionBehaviour(Behaviour):
    name = "repetition"
    prompt_set = "repetition"
    primary = "repetitive_share"
    secondary = "mean_uniqueness"
    help = "looping continuations (share of 50-token greedy continuations with uniqueness ratio < 0.5)"

    def sampling(self, settings):
        return RepetitionProtocol().sampling()

    def summarize(self, generated, settings) -> BehaviourMeasurement:
        protocol = RepetitionProtocol()
        result = repetition_of(generated, protocol)
        summary = result.summary
        shows = [ratio < protocol.threshold for ratio in result.ratios]
        metrics = {
            "repetitive_share": summary.repetitive_share,
            "mean_uniqueness": summary.mean_uniqueness,
            "prompts": summary.prompts,
        }
        return BehaviourMeasurement(
            metrics=with_intervals(metrics, shows, result.ratios, self.primary, self.secondary, settings.seed),
            primary=self.primary,
            shows=tuple(shows),
            values=tuple(result.ratios),
        )

    def reference_texts(self, prompts, generated, settings) -> tuple[list[UndesiredText], list[UndesiredText]]:
        protocol = RepetitionProtocol()
        result = repetition_of(generated, protocol)
        pairs = list(zip(prompts, result.continuations, result.ratios, strict=True))
        looping = [UndesiredText(p, c) for p, c, ratio in pairs if ratio < protocol.threshold]
        if not looping:
            raise ExciseError(
                f"none of the model's continuations of the {len(prompts)} reference prompts loops; "
                "there is nothing to correct"
            )
        return looping, [UndesiredText(p, c) for p, c, ratio in pairs if ratio >= protocol.threshold]
