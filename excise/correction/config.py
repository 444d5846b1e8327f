"""`CorrectConfig`: everything a correction run depends on, checked when it is made.

The field descriptions are `excise correct --help` (`excise.cli.options`); the resolved
config is the artifact manifest's `config`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from excise.behaviours import BEHAVIOURS, EvaluationSettings
from excise.artifacts.units import Unit
from excise.correction.contrast import Keep, Normalise
from excise.evaluation.variants import Backend
from excise.models.placement import ComputeSettings
from excise.scoring.support import check_method


#: what a relevance scorer explains at each continuation token (`excise.scoring.targets`): the next
#: token's logit, or its margin over the logit the model expects (the log-probability's gradient)
Objective = Literal["next_token", "next_token_margin"]
#: which tokens of an undesired reference text relevance starts at: every token of the sampled
#: continuation, or only the word at which it turns undesired (`Behaviour.onsets`), earlier words as context
Focus = Literal["continuation", "onset"]


class CorrectConfig(ComputeSettings):
    """Everything a correction run depends on (saved in the artifact's manifest)."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field("smollm2", description="HF model folder or embedded name")
    behaviour: BEHAVIOURS.choice() = Field("toxicity", description=f"what to remove: {', '.join(BEHAVIOURS)}")
    # the largest toxicity reduction within the +1% perplexity bound on benchmarks/results/correction.md's
    # validation split (62 prompts x 10 samples): lrp started at the next token's margin and only at the word
    # where each undesired continuation turns toxic (focus "onset"), K=10: -40% at -0.0% perplexity; then the
    # activation contrast (-30%, K=25) and wanda (-22%, K=50). On the test split (128 prompts x 25 samples)
    # the chosen budgets gave wanda -15%, this lrp -12.5%, activation -7%: none separates from dense, LRP and
    # wanda cannot be told apart (paired McNemar p = 0.73), and choosing on test figures would tune on the test.
    # Contrasted with the harmless continuations too (keep="general+harmless") the same lrp does better at the
    # benchmark's sizes (116 reference prompts x 10 samples: validation -49%, test -18.8%), but at make serve's
    # (32 prompts x 4 samples, 11-16 toxic texts) it does worse on every one of 3 reference seeds: validation
    # -10.8% against -34.2% on average (benchmarks/results/correction_small_sizes.md), so keep stays "general".
    method: str = Field("lrp", description="relevance method")
    granularity: Unit = Field("neuron", description="the unit removed")
    target: Objective = Field("next_token_margin", description="what lrp explains at each token: the next token's logit, "
                              "or its margin over the expected logit (next_token_margin); gradient always "
                              "differentiates the log-probability")
    params: dict[str, str | int | float | bool] = Field(
        {}, description="scorer parameter (repeatable), e.g. aggregation=token_absolute"
    )
    budget: int = Field(100, gt=0, description="remove exactly this many components (instead of a sweep)")
    sweep: list[int] | None = Field(
        [10, 15, 25, 50, 100], description="budgets to try: the best on the validation prompts within --ppl-bound is kept"
    )
    ppl_bound: float = Field(0.01, ge=0, description="largest validation perplexity increase, relative (0.01 = 1%)")
    normalise: Normalise = Field("relative", description="contrastive rule (see excise/correction/run.py)")
    focus: Focus | None = Field(None, description="where the undesired texts are explained: every token of the "
                                "continuation, or only the word at which the scorer first rates it undesired (onset; "
                                "toxicity), the words before it as context; default: onset where the behaviour can "
                                "tell that word, else continuation")
    keep: Keep = Field("general", description="what the contrast protects: the general windows, or those and the "
                       "reference prompts' harmless continuations (general+harmless)")
    general: str = Field("wiki:32x128", description="general reference windows (calibration split)")
    reference_length: int = Field(128, gt=1)  # undesired reference texts are cut to this many tokens
    evaluation: str = Field("wiki:64x512", description="test perplexity windows (evaluation split)")
    validation_windows: int = Field(16, gt=0)  # the evaluation windows after the test ones choose the budget
    second_evaluation: str | None = "news:16x512"  # a second corpus for the test perplexity
    settings: EvaluationSettings = EvaluationSettings()
    backend: Backend = Field("auto", description="generation: auto (vLLM where installed), vllm or transformers")
    batch_size: int = Field(4, gt=0)  # scoring batch size
    generation_batch_size: int = Field(64, gt=0)

    @field_validator("sweep")
    @classmethod
    def _sweep_positive(cls, sweep):
        if sweep is not None and (not sweep or min(sweep) <= 0):
            raise ValueError("sweep budgets must be a non-empty list of positive counts, e.g. [25, 50, 100]")
        return sorted(set(sweep)) if sweep else sweep

    @model_validator(mode="after")
    def _method_scores_granularity(self) -> CorrectConfig:
        check_method(self.method, self.granularity, recompute=self.recompute)
        return self

    @model_validator(mode="after")
    def _resolve_focus(self) -> CorrectConfig:
        # resolved here so that the manifest records the focus the run used
        if self.focus is None:
            self.focus = "onset" if BEHAVIOURS[self.behaviour].finds_onsets else "continuation"
        return self

    def budgets(self) -> list[int]:
        return self.sweep or [self.budget]
