"""`CircuitConfig`: everything that determines a circuit, checked when it is made.

The field descriptions are `excise circuit --help` (`excise.cli.options`); the resolved
config is the artifact manifest's `config`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field, ValidationError, field_validator, model_validator

from excise.artifacts.units import Unit
from excise.circuits.ablation import Ablation
from excise.circuits.scope import default_scope
from excise.models.placement import ComputeSettings
from excise.scoring import SCORERS
from excise.scoring.support import check_method

#: reaches low sparsities, so a task that needs most of the model still finds a circuit
DEFAULT_GRID = (0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.98)

#: Scorer parameters circuit search gives LRP for heads unless told otherwise. A head's relevance is
#: measured from what the search will ablate it to (baseline = the ablation: mean or corrupted, zero for
#: zero), and heads are ranked by their net effect over the reference prompts (net_absolute), because the
#: search keeps the *mean* logit difference. On SmolLM2 IOI this removes 65-85% of the heads where the
#: paper's rule removes 20-63% and EAP 6-35% (benchmarks/results/circuits.md). Neurons keep the paper's
#: rule (|relevance| of each prompt, from zero), which removed more of them there (62.5% vs 57.5%, mean
#: ablation) and held up better on held-out prompts. `--param baseline=... --param aggregation=...` overrides.
LRP_CIRCUIT_DEFAULTS: dict[str, Any] = {"aggregation": "net_absolute"}


class CircuitConfig(ComputeSettings):
    """Everything that determines a circuit; saved (resolved) into its manifest."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field("smollm2", description="HF model folder or embedded name")
    task: str = Field("ioi", description="built-in task (ioi) or FILE.jsonl with prompt/correct/incorrect")
    method: SCORERS.choice() = Field("lrp", description=f"scorer: {', '.join(SCORERS)}")
    granularity: Unit = Field("weight", description="the unit a circuit keeps or removes")
    scope: Literal["row", "global"] | None = Field(
        None,
        description="global: one ranking over all layers (default for neuron and head, because per layer a level "
        "rounds to whole KV groups, 3 a layer on SmolLM2, and low levels to none); row: the same share in every row "
        "(default for weight) or layer",
    )
    target: Literal["task_correct", "task_logit_diff"] = Field("task_logit_diff", description="what the scorer explains")
    ablation: Ablation = Field(
        "mean",
        description="what removed units carry during the search: their mean over the reference prompts, zero, or "
        "their activation on the corrupted prompt (tasks with corrupted prompts, e.g. ioi)",
    )
    sparsities: list[float] = Field(
        default_factory=lambda: list(DEFAULT_GRID), min_length=1,
        description="levels in (0, 1): shares of units to remove, e.g. 0.1,0.5,0.9; results count the units "
        "actually removed",
    )
    refine_steps: int = Field(3, ge=0, description="bisection steps between the last passing and first failing level")
    greedy: int = Field(
        0, ge=0,
        description="after the sweep, try removing up to N of the circuit's units one at a time, lowest score "
        "first, keeping each removal that still passes (heads, neurons; N reference evaluations; 0: off)",
    )
    retain: float = Field(0.9, gt=0, description="share of the dense logit difference to keep")
    reference: int = Field(32, ge=1, description="prompts to score and search on")
    heldout: int = Field(64, ge=1, description="held-out prompts the chosen circuit is reported on")
    seed: int = Field(0, description="seed of the reference / held-out split")
    batch_size: int = Field(16, ge=1, description="prompts per scoring and evaluation step")
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="scorer parameter (repeatable), e.g. baseline=zero|mean|corrupted (lrp heads: the search's ablation "
        "unless given), aggregation=net_absolute|absolute|signed|token_absolute",
    )

    @field_validator("sparsities")
    @classmethod
    def _in_range(cls, grid: list[float]) -> list[float]:
        bad = [s for s in grid if not 0.0 < s < 1.0]
        if bad:
            raise ValueError(f"sparsities {bad} are outside (0, 1); give shares of units to remove, e.g. 0.1,0.5,0.9")
        return sorted(set(grid))

    @model_validator(mode="after")
    def _resolve(self) -> CircuitConfig:
        check_method(self.method, self.granularity, recompute=self.recompute)
        if self.scope is None:
            self.scope = default_scope(self.granularity)
        if self.greedy and self.granularity == "weight":
            raise ValueError("the greedy pass removes heads or neurons one at a time; use --unit head|neuron or --greedy 0")
        if self.method == "lrp" and self.granularity == "head":
            self.params = LRP_CIRCUIT_DEFAULTS | {"baseline": self.ablation} | self.params
        try:
            SCORERS[self.method].config_class(**self.params)
        except ValidationError as error:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
            raise ValueError(f"scorer {self.method!r} parameters: {problems}") from None
        return self

    def needs_corrupted(self) -> bool:
        scorer = SCORERS[self.method]
        return self.ablation == "corrupted" or scorer.uses_corrupted(scorer.config_class(**self.params))
