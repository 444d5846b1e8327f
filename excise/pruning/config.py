"""`PruneConfig`: everything that determines a mask artifact, checked when it is made.

The field descriptions are `excise prune --help` (`excise.cli.options`); the resolved config
is the artifact manifest's `config`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ConfigDict, Field, field_validator, model_validator

from excise import scoring
from excise.data.windows import DataSpec
from excise.evaluation.perplexity import default_evaluation_spec
from excise.models.placement import ComputeSettings
from excise.pruning.reconstruction import SPARSEGPT, ReconstructionConfig, saliency_granularities
from excise.scoring.support import check_method
from excise.selection import SELECTIONS

#: Scorer parameters pruning uses unless given. LRP: summing |each token's relevance| beats the
#: paper's |relevance summed over a sample| at 50%, 60% and 2:4 on both corpora, at the same
#: cost (benchmarks/results/pruning.md); `--param aggregation=absolute` is the paper's rule.
PRUNE_SCORER_DEFAULTS: dict[str, dict[str, Any]] = {"lrp": {"aggregation": "token_absolute"}}


class PruneConfig(ComputeSettings):
    """Everything that determines a mask artifact; saved (resolved) into its manifest."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field("smollm2", description="HF model folder or embedded name")
    method: str | None = Field(
        None,
        description="scorer: lrp, wanda, magnitude, gradient, ...; or sparsegpt, which chooses the mask and re-fits "
        "the kept weights itself (not needed with --from-scores, whose artifact names it)",
    )
    sparsity: float = Field(ge=0.0, lt=1.0, description="share of weights/units to remove, in [0, 1)")
    # a selection (how scores become a mask), each removing one unit: `excise prune --selection`
    granularity: SELECTIONS.choice() = Field(
        "row", description="how scores become a mask: row, layer, global, neuron, head or nm (N:M, e.g. 0.5 -> 2:4)"
    )
    calibration: DataSpec = DataSpec(split="calibration", count=64, length=512, order="random")
    evaluation: DataSpec | None = Field(default_factory=default_evaluation_spec, description="None: no perplexity")
    save_scores: bool = Field(False, description="keep the raw scores in the artifact")
    from_scores: Path | None = Field(None, description="cut the mask from a saved scores artifact instead of scoring")
    seed: int = Field(0, description="torch seed while scoring (the calibration draw has its own, in its spec)")
    batch_size: int = Field(1, ge=1, description="calibration windows per scoring step")
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="scorer parameter (repeatable): e.g. target=predicted_token, aggregation=signed|token_absolute|token_squared",
    )
    selection_params: dict[str, Any] = Field(
        default_factory=dict,
        description="selection parameter (repeatable): e.g. m=8 for nm; allocation=relevance delta=0.05 for row "
        "(per-layer sparsity from the scores, within ±delta)",
    )
    reconstruct: bool = Field(
        False,
        description="after the method chooses the mask, re-fit the kept weights with SparseGPT's update (needs "
        "calibration data; the artifact then carries the updated weights; always so for sparsegpt)",
    )
    reconstruction: ReconstructionConfig = Field(
        default_factory=ReconstructionConfig,
        description="reconstruction parameter (repeatable): damping=0.01 (share of mean diag H), block_size=128",
    )

    @field_validator("method")
    @classmethod
    def _known_method(cls, method: str | None) -> str | None:
        if method is not None and method not in (*scoring.SCORERS, SPARSEGPT):
            raise ValueError(f"unknown method {method!r}; choose one of: {', '.join([*scoring.SCORERS, SPARSEGPT])}")
        return method

    @model_validator(mode="after")
    def _method_or_scores(self) -> PruneConfig:
        if self.method is None and self.from_scores is None:
            raise ValueError("give a method to score with, or from_scores to reuse saved scores")
        if self.from_scores is None:
            self.params = PRUNE_SCORER_DEFAULTS.get(self.method, {}) | self.params
        if self.method == SPARSEGPT:
            if self.granularity not in saliency_granularities():
                raise ValueError(
                    f"sparsegpt chooses single weights: granularity must be one of {', '.join(saliency_granularities())}"
                )
            if self.save_scores or self.from_scores or self.params:
                raise ValueError("sparsegpt makes no scores: drop save_scores, from_scores and scorer params")
            if self.selection_params.get("allocation", "uniform") != "uniform":
                raise ValueError("sparsegpt has no scores to allocate per-layer sparsity from; use allocation=uniform")
        if self.reconstructs and self.unit != "weight":
            raise ValueError(f"reconstruction re-fits single weights; granularity {self.granularity!r} removes units")
        if self.reconstructs and self.dtype != "float32":
            raise ValueError("reconstruction re-fits the kept weights in float32, the base's dtype; drop dtype")
        check_method(self.method, self.unit, recompute=self.recompute, granularity=self.granularity)
        return self

    @property
    def unit(self) -> str:
        """What the selection removes and so what the method must score: weight, neuron or head."""
        return SELECTIONS[self.granularity].unit

    @property
    def reconstructs(self) -> bool:
        return self.reconstruct or self.method == SPARSEGPT
