"""Toxicity: insults and profanity continuing the project's toxic prompt openings.

Undesired reference: every sampled continuation (k per reference prompt, the
measurement's sampling) that the scorer rates >= 0.5, duplicates dropped: hundreds
of texts on the default set, not one per prompt. Metric: the RealToxicityPrompts
numbers with 95 % intervals; the primary one is the toxicity probability.
"""

from __future__ import annotations

import re

import numpy as np

from excise.behaviours.base import (
    Behaviour,
    BehaviourMeasurement,
    EvaluationSettings,
    UndesiredText,
    with_intervals,
)
from excise.errors import ExciseError
from excise.evaluation.toxicity import (
    TOXIC_THRESHOLD,
    ToxicityProtocol,
    load_toxicity_scorer,
    score_continuations,
)


#: a word with the whitespace before it (so a continuation's prefixes end at word boundaries, and the
#: onset word keeps its leading space, as the tokenizer sees it after the context)
WORD = re.compile(r"\s*\S+")


class ToxicityBehaviour(Behaviour):
    name = "toxicity"
    prompt_set = "toxic"
    primary = "toxicity_probability"
    secondary = "expected_max_toxicity"
    help = "insults and profanity (toxicity probability, RealToxicityPrompts protocol)"
    finds_onsets = True

    def prepare(self, settings: EvaluationSettings) -> None:
        load_toxicity_scorer(settings.toxicity_scorer)

    def _protocol(self, settings: EvaluationSettings, samples: int) -> ToxicityProtocol:
        return ToxicityProtocol(samples=samples, seed=settings.seed, scorer=settings.toxicity_scorer)

    def sampling(self, settings):
        return self._protocol(settings, settings.samples).sampling()

    def reference_sampling(self, settings):
        return self._protocol(settings, settings.reference_samples).sampling()

    def summarize(self, generated, settings) -> BehaviourMeasurement:
        result = score_continuations(generated, load_toxicity_scorer(settings.toxicity_scorer))
        summary, worst = result.summary, result.scores.max(axis=1)  # worst: [prompts]
        shows = worst >= TOXIC_THRESHOLD
        metrics = {
            "toxicity_probability": summary.toxicity_probability,
            "expected_max_toxicity": summary.expected_max_toxicity,
            "prompts": summary.prompts,
            "samples_per_prompt": summary.samples_per_prompt,
        }
        return BehaviourMeasurement(
            metrics=with_intervals(metrics, shows, worst, self.primary, self.secondary, settings.seed),
            primary=self.primary,
            shows=tuple(bool(x) for x in shows),
            values=tuple(float(x) for x in worst),
        )

    def reference_texts(self, prompts, generated, settings) -> tuple[list[UndesiredText], list[UndesiredText]]:
        result = score_continuations(generated, load_toxicity_scorer(settings.toxicity_scorer))
        toxic, harmless = {}, {}
        for i, prompt in enumerate(prompts):
            for j, continuation in enumerate(result.continuations[i]):
                target = toxic if result.scores[i, j] >= TOXIC_THRESHOLD else harmless
                target.setdefault(UndesiredText(prompt, continuation), None)  # duplicates dropped, order kept
        if not toxic:
            raise ExciseError(
                f"the model continued none of the {len(prompts)} reference prompts toxically "
                f"(max score {float(np.max(result.scores)):.2f}); there is nothing to correct"
            )
        return list(toxic), list(harmless)

    def onsets(self, texts, settings):
        """The word whose arrival first makes the scorer rate the continuation toxic: every word-long
        prefix of a continuation is scored (one batch for all texts), the first at or above the threshold
        ends the onset word. A text whose prefixes all stay below (only the whole text crosses, e.g. with
        its trailing whitespace) keeps its last word."""
        scorer = load_toxicity_scorer(settings.toxicity_scorer)
        ends = [[word.end() for word in WORD.finditer(text.continuation)] for text in texts]
        scores = iter(scorer.predict([text.continuation[:end] for text, text_ends in zip(texts, ends) for end in text_ends]))
        out = []
        for text, text_ends in zip(texts, ends):
            if not text_ends:  # an all-whitespace continuation has no word to start at (and no scores)
                out.append(text)
                continue
            crossed = [next(scores) >= TOXIC_THRESHOLD for _ in text_ends]
            i = crossed.index(True) if True in crossed else len(text_ends) - 1
            start = text_ends[i - 1] if i else 0
            out.append(UndesiredText(text.prompt + text.continuation[:start], text.continuation[start:text_ends[i]]))
        return out
