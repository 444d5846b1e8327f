"""Targeted correction: remove the components that serve an undesired behaviour but not general text.

`correct(config, out)`:
1. relevance of every component (weight, MLP neuron or attention head) on two
   references: *general* text (calibration windows of the bundled corpus) and
   *undesired* text (the behaviour's reference prompts followed by the dense
   model's own continuations that show the behaviour);
2. the contrastive score (the rule, `contrastive_scores`): each reference's
   scores are divided by their sum (over all components of that unit, or with
   `normalise="layer"` over the components of the same layer/tensor), so the two
   references weigh the same whatever their length; then
   `contrast = general - undesired` (higher = keep). A component with a low
   contrast matters for the undesired behaviour but not for general text.
   `normalise="relative"` (the default) divides that difference by the
   component's own normalised relevance plus the mean over all components,
   `(g - u) / (|g| + |u| + mean(|g| + |u|))`: the plain difference ranks the few
   components with huge relevance on *both* references first (measured on
   SmolLM2: removing the 100 lowest by plain difference raised perplexity from
   16.4 to 1802), the relative one asks which share of a component's work is
   for the undesired text;
3. the K components with the lowest contrast are removed, ranked globally across
   layers (ties: lower layer, then lower index first), so exactly K go;
4. with a sweep, every K is measured (behaviour on the held-out prompts,
   perplexity on held-out text) and the one with the largest reduction of the
   behaviour whose perplexity increase stays within the bound is kept;
5. the correction artifact: `masks.safetensors` + a manifest of kind `correction`
   with before/after metrics and the sweep table, written atomically.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from correction.atomic import atomic_folder
from correction.behaviours import Behaviour, EvaluationSettings, get_behaviour, text_batches
from correction.data.windows import DataSpec, token_windows
from correction.errors import ExciseError
from correction.evaluation.generation import TransformersGenerator
from correction.evaluation.perplexity import perplexity
from correction.manifest import Manifest, MethodInfo
from correction.masks import MaskSet
from correction.models.adapters import ModelAdapter, get_adapter
from correction.models.identity import base_model_ref
from correction.models.loading import LoadedModel, load_model
from correction.scoring import Scores, score_model
from correction.scoring.base import scorer_class
from correction.scoring.support import check_method_unit

logger = logging.getLogger(__name__)

Granularity = Literal["neuron", "weight", "head"]
Normalise = Literal["overall", "layer", "relative"]


class CorrectConfig(BaseModel):
    """Everything a correction run depends on (saved in the artifact's manifest)."""

    model_config = ConfigDict(extra="forbid")

    model: str = "smollm2"
    behaviour: str = "toxicity"
    method: str = "lrp"
    granularity: Granularity = "neuron"
    budget: int = Field(100, gt=0)  # components removed (without a sweep)
    sweep: list[int] | None = None  # budgets to try; the best within the perplexity bound is kept
    ppl_bound: float = Field(0.02, ge=0)  # largest allowed relative perplexity increase in a sweep
    normalise: Normalise = "relative"
    general: str = "wiki:32x128"  # general reference windows (calibration split)
    reference_length: int = Field(128, gt=1)  # undesired reference texts are cut to this many tokens
    evaluation: str = "wiki:16x512"  # perplexity windows (evaluation split)
    settings: EvaluationSettings = EvaluationSettings()
    batch_size: int = Field(4, gt=0)  # scoring batch size
    generation_batch_size: int = Field(64, gt=0)
    device: str = "cpu"

    @field_validator("sweep")
    @classmethod
    def _sweep_positive(cls, sweep):
        if sweep is not None and (not sweep or min(sweep) <= 0):
            raise ValueError("sweep budgets must be a non-empty list of positive counts, e.g. [25, 50, 100]")
        return sorted(set(sweep)) if sweep else sweep

    @model_validator(mode="after")
    def _method_scores_granularity(self) -> CorrectConfig:
        check_method_unit(self.method, self.granularity)
        return self

    def budgets(self) -> list[int]:
        return self.sweep or [self.budget]


# ---- the contrastive rule ----------------------------------------------------------------------
def _units(scores: Scores, granularity: Granularity) -> dict:
    return {"weight": scores.weights, "neuron": scores.neurons, "head": scores.heads}[granularity]


def _normalised(units: dict, normalise: Normalise) -> dict:
    if normalise == "layer":
        return {key: value.float() / value.float().abs().sum().clamp(min=1e-30) for key, value in units.items()}
    total = sum(value.float().abs().sum() for value in units.values())
    return {key: value.float() / max(float(total), 1e-30) for key, value in units.items()}


def contrastive_scores(general: Scores, undesired: Scores, granularity: Granularity, normalise: Normalise) -> Scores:
    """`general - undesired` after normalising each (higher = keep); see the module docstring."""
    general_units, undesired_units = _units(general, granularity), _units(undesired, granularity)
    if set(general_units) != set(undesired_units) or not general_units:
        raise ExciseError(f"the general and undesired scores do not cover the same {granularity}s; score both alike")
    g = _normalised(general_units, "layer" if normalise == "layer" else "overall")
    u = _normalised(undesired_units, "layer" if normalise == "layer" else "overall")
    contrast = Scores()
    if normalise == "relative":
        # the difference as a share of the component's own relevance, shrunk towards 0 for
        # components that matter little to either reference (the mean keeps noise from ranking first)
        typical = float(sum((g[k].abs() + u[k].abs()).sum() for k in g)) / sum(g[k].numel() for k in g)
        difference = {key: (g[key] - u[key]) / (g[key].abs() + u[key].abs() + typical) for key in g}
    else:
        difference = {key: g[key] - u[key] for key in g}
    _units(contrast, granularity).update({key: difference[key] for key in sorted(difference)})
    return contrast


def component_count(scores: Scores, granularity: Granularity) -> int:
    return sum(value.numel() for value in _units(scores, granularity).values())


def remove_lowest(contrast: Scores, granularity: Granularity, budget: int) -> MaskSet:
    """A mask removing exactly the `budget` components with the lowest contrast, across all layers."""
    units = _units(contrast, granularity)
    keys = sorted(units)
    total = component_count(contrast, granularity)
    if budget > total:
        raise ExciseError(f"budget {budget} exceeds the {total} {granularity}s of the model; give a budget <= {total}")
    flat = torch.cat([units[key].reshape(-1) for key in keys])  # [total], in key order
    keep = torch.ones(total, dtype=torch.bool)
    keep[torch.argsort(flat, stable=True)[:budget]] = False
    masks = MaskSet()
    offset = 0
    for key in keys:
        size = units[key].numel()
        _units(masks, granularity)[key] = keep[offset : offset + size].view(units[key].shape).clone()
        offset += size
    return masks


# ---- measuring a variant -----------------------------------------------------------------------
@dataclass
class Measurement:
    budget: int
    behaviour: dict[str, float]
    perplexity: float

    def row(self, behaviour: Behaviour, dense: Measurement) -> dict:
        after, before = self.behaviour[behaviour.primary], dense.behaviour[behaviour.primary]
        return {
            "budget": self.budget,
            **self.behaviour,
            "perplexity": self.perplexity,
            "perplexity_increase": self.perplexity / dense.perplexity - 1.0,
            "reduction": 1.0 - after / before if before else 0.0,
        }


class Variants:
    """Applies masks to one loaded model in place and restores the dense weights afterwards."""

    def __init__(self, loaded: LoadedModel):
        self.loaded = loaded
        self.adapter = get_adapter(loaded.model)

    @torch.no_grad()
    def measure(self, masks: MaskSet | None, budget: int, behaviour: Behaviour, prompts: list[str],
                windows: torch.Tensor | None, config: CorrectConfig) -> Measurement:
        """The behaviour on `prompts` and the perplexity on `windows` (NaN without windows) of the masked model."""
        params = dict(self.loaded.model.named_parameters())
        touched = set(masks.weight_masks(self.adapter)) if masks else set()
        touched |= {name for name in params if name.endswith(".bias")} if masks else set()  # unit biases are zeroed too
        saved = {name: params[name].detach().clone() for name in touched}
        try:
            if masks is not None:
                masks.apply(self.adapter)
            generator = TransformersGenerator(
                self.loaded.model, self.loaded.tokenizer, batch_size=config.generation_batch_size
            )
            measured = behaviour.measure(generator, prompts, config.settings)
            ppl = math.nan
            if windows is not None:
                ppl = perplexity(self.loaded.model, windows, batch_size=config.batch_size).perplexity
        finally:
            for name, value in saved.items():
                params[name].copy_(value)
        logger.info("budget %d: %s %.4f, perplexity %.3f", budget, behaviour.primary, measured.value, ppl)
        return Measurement(budget=budget, behaviour=measured.metrics, perplexity=ppl)


def choose(rows: list[dict], bound: float) -> dict | None:
    """The sweep row with the largest reduction within the perplexity bound (ties: the smaller budget)."""
    allowed = [row for row in rows if row["perplexity_increase"] <= bound]
    return max(allowed, key=lambda row: (row["reduction"], -row["budget"])) if allowed else None


# ---- the run -----------------------------------------------------------------------------------
def _check_inputs(config: CorrectConfig) -> Behaviour:
    behaviour = get_behaviour(config.behaviour)
    cls = scorer_class(config.method)
    if not cls.needs_data:
        raise ExciseError(
            f"method {config.method!r} ignores data, so it cannot contrast two references; use lrp, wanda or gradient"
        )
    behaviour.prepare(config.settings)
    return behaviour


def _components(adapter: ModelAdapter, granularity: Granularity) -> int:
    if granularity == "neuron":
        return sum(layer.mlp.num_neurons for layer in adapter.layers())
    if granularity == "head":
        return sum(layer.attention.num_heads for layer in adapter.layers())
    return sum(module.weight.numel() for module in adapter.prunable_linears().values())


def _score(config: CorrectConfig, model, data, what: str):
    """Scores in this process: lrp's patches are active only during its session and change
    gradients, never forward outputs, so the measurements after it are unaffected."""
    logger.info("scoring the %s reference with %s", what, config.method)
    return score_model(model, data, config.method, granularities={config.granularity}, batch_size=config.batch_size)


@dataclass
class References:
    """General windows, undesired text batches, and the held-out measurement data."""

    general_spec: DataSpec
    general: torch.Tensor  # [count, length]
    undesired: list  # ReferenceBatch
    undesired_texts: list[str]
    reference_prompts: list[str]
    heldout_prompts: list[str]
    eval_spec: DataSpec
    windows: torch.Tensor  # [count, length] perplexity windows


def build_references(config: CorrectConfig, loaded: LoadedModel, behaviour: Behaviour) -> References:
    """Everything scoring and measuring read; the undesired text comes from the dense model itself."""
    max_length = loaded.model.config.max_position_embeddings
    general_spec = DataSpec.parse(config.general, split="calibration", order="random", seed=config.settings.seed)
    eval_spec = DataSpec.parse(config.evaluation, split="evaluation", order="sequential")
    generator = TransformersGenerator(loaded.model, loaded.tokenizer, batch_size=config.generation_batch_size)
    reference_prompts = behaviour.prompts("reference", config.settings.max_prompts)
    texts = behaviour.undesired_texts(generator, reference_prompts, config.settings)
    return References(
        general_spec=general_spec,
        general=token_windows(loaded.tokenizer, general_spec, max_length=max_length),
        undesired=text_batches(loaded.tokenizer, texts, batch_size=config.batch_size, max_length=config.reference_length),
        undesired_texts=texts,
        reference_prompts=reference_prompts,
        heldout_prompts=behaviour.prompts("heldout", config.settings.max_prompts),
        eval_spec=eval_spec,
        windows=token_windows(loaded.tokenizer, eval_spec, max_length=max_length),
    )


def score_contrast(config: CorrectConfig, model, references: References) -> tuple[Scores, dict[str, float]]:
    """The contrastive scores of `config.method` and the seconds each reference took to score."""
    general = _score(config, model, references.general, "general")
    undesired = _score(config, model, references.undesired, "undesired")
    contrast = contrastive_scores(general.scores, undesired.scores, config.granularity, config.normalise)
    return contrast, {"scoring_general": general.wall_seconds, "scoring_undesired": undesired.wall_seconds}


def correct(config: CorrectConfig, out: Path, *, force: bool = False) -> Path:
    """Run a correction as `config` says and write its artifact to `out`; returns `out`."""
    out = Path(out)
    if out.exists() and not force:
        raise ExciseError(f"{out} already exists; choose another --out or pass --force to replace it")
    behaviour = _check_inputs(config)
    started = time.perf_counter()
    loaded = load_model(config.model, device=config.device)
    adapter = get_adapter(loaded.model)
    total = _components(adapter, config.granularity)
    if max(config.budgets()) > total:
        raise ExciseError(
            f"budget {max(config.budgets())} exceeds the {total} {config.granularity}s of the model; give at most {total}"
        )
    references = build_references(config, loaded, behaviour)
    contrast, timings = score_contrast(config, loaded.model, references)

    variants = Variants(loaded)
    dense = variants.measure(None, 0, behaviour, references.heldout_prompts, references.windows, config)
    masks_by_budget = {k: remove_lowest(contrast, config.granularity, k) for k in config.budgets()}
    measured = [
        variants.measure(masks_by_budget[k], k, behaviour, references.heldout_prompts, references.windows, config)
        for k in config.budgets()
    ]
    rows = [m.row(behaviour, dense) for m in measured]
    chosen = choose(rows, config.ppl_bound) if config.sweep else rows[0]
    if chosen is None:
        table = ", ".join(f"K={r['budget']}: +{100 * r['perplexity_increase']:.1f}%" for r in rows)
        raise ExciseError(
            f"no budget keeps the perplexity increase within {100 * config.ppl_bound:.1f}% ({table}); "
            "sweep smaller budgets or raise --ppl-bound"
        )
    after = next(m for m in measured if m.budget == chosen["budget"])
    masks = masks_by_budget[chosen["budget"]]

    manifest = Manifest(
        kind="correction",
        base_model=base_model_ref(config.model),
        method=MethodInfo(
            name=config.method,
            granularity=config.granularity,
            params={"budget": chosen["budget"], "behaviour": behaviour.name, "normalise": config.normalise,
                    "contrast": "general - undesired", "config": config.model_dump(mode="json")},
        ),
        data={
            "general": references.general_spec.model_dump(),
            "evaluation": references.eval_spec.model_dump(),
            "undesired": {"prompt_set": behaviour.prompt_set, "split": "reference",
                          "prompts": len(references.reference_prompts), "texts": len(references.undesired_texts),
                          "max_tokens": config.reference_length},
            "heldout": {"prompt_set": behaviour.prompt_set, "split": "heldout", "prompts": len(references.heldout_prompts)},
        },
        metrics={
            behaviour.name: {"before": dense.behaviour, "after": after.behaviour, "primary": behaviour.primary},
            "perplexity": {"before": dense.perplexity, "after": after.perplexity},
            "budget": chosen["budget"],
            "sweep": rows,
        },
        timings=timings | {"total": time.perf_counter() - started},
    )
    with atomic_folder(out, force=force) as folder:
        masks.save(folder)
        manifest.sparsity = masks.sparsity_report(adapter)
        manifest.save(folder)
    return out
