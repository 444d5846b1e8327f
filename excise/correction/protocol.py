"""The measurement protocol of a correction: choose on validation, report on test.

Prompts: the behaviour's `validation` split (to choose a budget and settings) and its
`test` split (reported only). Perplexity: the `wiki` evaluation split, windows
`[0, test_count)` for the test figure and the next `validation_count` windows for the
validation figure (disjoint, so the perplexity bound is not checked on the reported
windows either), plus a second corpus (`news`) for the test report.

Every variant of a sweep is generated in one call (`VariantEvaluator.generate`), dense
included, so the paired comparison (exact McNemar test on "this prompt showed the
behaviour", bootstrap interval of the per-prompt difference) compares samples of one
sampler on the same prompts.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import torch

from excise.behaviours import Behaviour, BehaviourMeasurement, EvaluationSettings
from excise.data.windows import DataSpec, token_windows
from excise.errors import ExciseError
from excise.evaluation.intervals import mcnemar, paired_bootstrap
from excise.evaluation.variants import Variant, VariantEvaluator
from excise.reference_data import Split

logger = logging.getLogger(__name__)

MIN_SPLIT_PROMPTS = 2  # a split with fewer prompts cannot be measured, let alone compared


@dataclass
class ProtocolData:
    prompts: dict[str, list[str]]  # split -> prompts
    windows: dict[str, torch.Tensor]  # "validation", "test", "news" -> [count, length]
    specs: dict[str, dict]  # how the windows were drawn (for the manifest)


def split_prompts(behaviour: Behaviour, settings: EvaluationSettings) -> dict[Split, list[str]]:
    """The behaviour's prompts per split; refuses a set too small for the three-way split."""
    prompts = {split: behaviour.prompts(split, settings.max_prompts) for split in ("reference", "validation", "test")}
    small = {split: len(texts) for split, texts in prompts.items() if len(texts) < MIN_SPLIT_PROMPTS}
    if small:
        counts = ", ".join(f"{split} {count}" for split, count in small.items())
        raise ExciseError(
            f"the {behaviour.prompt_set!r} prompt set is too small for the reference/validation/test split "
            f"({counts} prompts; each needs at least {MIN_SPLIT_PROMPTS}); raise --max-prompts or add prompts"
        )
    return prompts


def protocol_data(tokenizer, prompts: dict[str, list[str]], evaluation: str, validation_windows: int,
                  second: str | None, max_length: int) -> ProtocolData:
    test_spec = DataSpec.parse(evaluation, split="evaluation", order="sequential")
    both = test_spec.model_copy(update={"count": test_spec.count + validation_windows})
    windows = token_windows(tokenizer, both, max_length=max_length)  # [test + validation, length]
    data = {"test": windows[: test_spec.count], "validation": windows[test_spec.count :]}
    specs = {"test": test_spec.model_dump(), "validation": {**test_spec.model_dump(), "count": validation_windows,
                                                             "offset": test_spec.count}}
    if second:
        second_spec = DataSpec.parse(second, split="evaluation", order="sequential")
        data["news"] = token_windows(tokenizer, second_spec, max_length=max_length)
        specs["news"] = second_spec.model_dump()
    return ProtocolData(prompts=prompts, windows=data, specs=specs)


@dataclass
class VariantResult:
    """One variant's behaviour per split, perplexity per window set, and the seconds they took."""

    behaviour: dict[str, BehaviourMeasurement] = field(default_factory=dict)
    perplexity: dict[str, float] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def measure_variants(evaluator: VariantEvaluator, behaviour: Behaviour, variants: dict[str, Variant],
                     data: ProtocolData, settings: EvaluationSettings, splits=("validation", "test"),
                     window_sets=("validation", "test", "news")) -> dict[str, VariantResult]:
    """Behaviour on each split's prompts and perplexity on each window set, for every variant."""
    results = {name: VariantResult() for name in variants}
    prompts = [p for split in splits for p in data.prompts[split]]
    started = time.perf_counter()
    generated = evaluator.generate(variants, prompts, behaviour.sampling(settings))
    share = (time.perf_counter() - started) / len(variants)  # one call for all: its time split evenly
    for name, continuations in generated.items():
        offset = 0
        for split in splits:
            count = len(data.prompts[split])
            results[name].behaviour[split] = behaviour.summarize(continuations[offset : offset + count], settings)
            offset += count
        results[name].seconds["generation"] = share
    for name, variant in variants.items():
        started = time.perf_counter()
        for key in window_sets:
            if key in data.windows:
                results[name].perplexity[key] = evaluator.perplexity(variant, data.windows[key])
        results[name].seconds["perplexity"] = time.perf_counter() - started
        logger.info("%s: %s", name, {s: round(m.value, 4) for s, m in results[name].behaviour.items()})
    return results


def compare(result: VariantResult, dense: VariantResult, behaviour: Behaviour) -> dict:
    """The figures of a variant against dense: per split the primary metric with its interval,
    the reduction and the paired test; per window set the perplexity increase."""
    row: dict = {}
    for split, measured in result.behaviour.items():
        before = dense.behaviour[split]
        primary, secondary = behaviour.primary, behaviour.secondary
        row[split] = {
            **{k: v for k, v in measured.metrics.items()},
            "reduction": 1 - measured.value / before.value if before.value else 0.0,
            "paired_p": mcnemar(before.shows, measured.shows),
            f"{secondary}_difference_interval": list(paired_bootstrap(before.values, measured.values, seed=0)),
            "separated": measured.metrics[f"{primary}_high"] < before.metrics[f"{primary}_low"],
        }
    for key, value in result.perplexity.items():
        row[f"perplexity_{key}"] = value
        row[f"perplexity_{key}_increase"] = value / dense.perplexity[key] - 1
    row["seconds"] = dict(result.seconds)
    return row


def choose(rows: list[dict], bound: float) -> dict | None:
    """The row with the largest *validation* reduction whose validation perplexity increase stays
    within `bound` (ties: the smaller budget). Test figures never enter the choice."""
    allowed = [row for row in rows if row["perplexity_validation_increase"] <= bound]
    return max(allowed, key=lambda row: (row["validation"]["reduction"], -row["budget"])) if allowed else None
