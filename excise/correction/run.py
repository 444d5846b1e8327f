"""Targeted correction: remove the components that serve an undesired behaviour but not general text.

`correct(config, out)`:
1. relevance of every component (weight, MLP neuron or attention head) on two
   references: *general* text (calibration windows of the bundled corpus) and
   *undesired* text (the behaviour's reference prompts followed by the dense
   model's own continuations that show the behaviour); lrp explains `target` at each
   continuation token: the next token's logit (the paper's start) or, with
   `next_token_margin`, that logit minus the one the model expects (`excise.scoring.targets`:
   the logit alone is mostly what every token shares, so its relevance favours components
   that serve any text);
2. the contrastive score (the rule, `contrastive_scores`): each reference's
   scores are divided by their sum (over all components of that unit, or with
   `normalise="layer"` over the components of the same layer/tensor), so the two
   references weigh the same whatever their length; then
   `contrast = general - undesired` (higher = keep). A component with a low
   contrast matters for the undesired behaviour but not for general text.
   With `keep="general+harmless"` the kept side is the mean of the normalised
   general scores and those of the reference prompts' harmless continuations
   (`blended`): a component the model needs to continue the same prompts
   harmlessly is protected too, so what is left is specific to the behaviour
   rather than to the prompts' topic (the pairing AurA's AUROC uses);
   `normalise="relative"` (the default) divides that difference by the
   component's own normalised relevance plus the mean over all components,
   `(g - u) / (|g| + |u| + mean(|g| + |u|))`: the plain difference ranks the few
   components with huge relevance on *both* references first (measured on
   SmolLM2: removing the 100 lowest by plain difference raised perplexity from
   16.4 to 1802), the relative one asks which share of a component's work is
   for the undesired text;
3. the K components with the lowest contrast are removed, ranked globally across
   layers (ties: lower layer, then lower index first), so exactly K go;
4. every budget is measured by the protocol (`excise.correction.protocol`): the behaviour on
   the *validation* prompts and perplexity on validation windows choose the budget (the
   largest validation reduction whose perplexity increase stays within the bound); the
   *test* prompts and windows are only reported, for the chosen budget in the manifest;
5. the correction artifact: `masks.safetensors` + a manifest of kind `correction`
   with before/after test metrics (intervals, paired test), the validation figures,
   the sweep table and which generation backend produced them, written atomically.

The undesired reference is every toxic (or looping) continuation the dense model
samples for the *reference* prompts; scoring starts only at the continuation's tokens, or
with `focus="onset"` only at the word where the continuation turns toxic (the words before
it are context, the words after it are dropped: most of a toxic continuation is ordinary text).
Generation runs through vLLM (each budget its weights swapped into one engine) where it
is installed, else transformers (logged and recorded).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from excise.artifacts.atomic import atomic_folder
from excise.behaviours import Behaviour, UndesiredText, get_behaviour, undesired_batches
from excise.correction.config import CorrectConfig, Focus
from excise.correction.contrast import blended, contrastive_scores, remove_lowest
from excise.data.windows import DataSpec, token_windows
from excise.errors import ExciseError
from excise.evaluation.variants import VariantEvaluator
from excise.artifacts.manifest import Manifest, MethodInfo
from excise.artifacts.masks import MaskSet
from excise.artifacts.units import Unit
from excise.models.adapters import ModelAdapter, get_adapter
from excise.models.identity import base_model_ref
from excise.models.loading import LoadedModel, load_job_model
from excise.evaluation.neuron_scales import NeuronScales
from excise.correction.protocol import ProtocolData, choose, compare, measure_variants, protocol_data, split_prompts
from excise.artifacts.scores import Scores
from excise.scoring import score_model
from excise.scoring.base import scorer_class

logger = logging.getLogger(__name__)


# ---- the run -----------------------------------------------------------------------------------
def _check_inputs(config: CorrectConfig) -> Behaviour:
    behaviour = get_behaviour(config.behaviour)
    cls = scorer_class(config.method)
    if not cls.needs_data:
        raise ExciseError(
            f"method {config.method!r} ignores data, so it cannot contrast two references; use lrp, wanda or gradient"
        )
    try:
        cls.config_class(**config.params)
    except ValueError as error:
        raise ExciseError(f"bad --param for {config.method!r}: {str(error).splitlines()[-1].strip()}") from None
    split_prompts(behaviour, config.settings)
    if config.focus == "onset" and not behaviour.finds_onsets:
        raise ExciseError(f"--focus onset: behaviour {behaviour.name!r} cannot tell where a text turns undesired; "
                          "use --focus continuation")
    behaviour.prepare(config.settings)
    return behaviour


def _components(adapter: ModelAdapter, granularity: Unit) -> int:
    if granularity == "neuron":
        return sum(layer.mlp.num_neurons for layer in adapter.layers())
    if granularity == "head":
        return sum(layer.attention.num_heads for layer in adapter.layers())
    return sum(module.weight.numel() for module in adapter.prunable_linears().values())


@dataclass
class References:
    """The general windows, the undesired texts (as batches scored on their continuations only)
    and the protocol's validation/test data."""

    general_spec: DataSpec
    general: torch.Tensor  # [count, length]
    undesired_texts: list[UndesiredText]
    undesired: list  # ReferenceBatch
    harmless: list  # ReferenceBatch: the reference prompts' continuations without the behaviour
    protocol: ProtocolData
    onsets: list | None = None  # ReferenceBatch: the undesired texts scored on their onset word only

    def undesired_batches(self, focus: Focus) -> list:
        if focus == "continuation":
            return self.undesired
        if self.onsets is None:
            raise ExciseError("focus=onset needs a behaviour that can tell where a text turns undesired (toxicity)")
        return self.onsets

    def undesired_summary(self) -> dict:
        summary = {"texts": len(self.undesired_texts), "prompts_with_texts": len({t.prompt for t in self.undesired_texts}),
                   "tokens": sum(b.num_tokens() for b in self.undesired),
                   "scored_tokens": sum(b.num_scored_tokens() for b in self.undesired)}
        if self.onsets is not None:
            summary["onset_scored_tokens"] = sum(b.num_scored_tokens() for b in self.onsets)
        return summary


def reference_texts(config: CorrectConfig, behaviour: Behaviour, evaluator: VariantEvaluator,
                    prompts: list[str]) -> tuple[list[UndesiredText], list[UndesiredText]]:
    """The dense model's continuations of the reference prompts: (showing the behaviour, harmless)."""
    generated = evaluator.generate({"dense": None}, prompts, behaviour.reference_sampling(config.settings))["dense"]
    texts, harmless = behaviour.reference_texts(prompts, generated, config.settings)
    logger.info("undesired reference: %d texts from %d reference prompts (%d harmless continuations)",
                len(texts), len(prompts), len(harmless))
    return texts, harmless


def build_references(config: CorrectConfig, loaded: LoadedModel, behaviour: Behaviour, evaluator: VariantEvaluator,
                     texts: tuple[list[UndesiredText], list[UndesiredText]] | None = None) -> References:
    """Everything scoring and measuring read; the undesired text comes from the dense model itself
    (`texts`: already generated reference texts, as `reference_texts` returns them)."""
    max_length = loaded.model.config.max_position_embeddings
    general_spec = DataSpec.parse(config.general, split="calibration", order="random", seed=config.settings.seed)
    prompts = split_prompts(behaviour, config.settings)
    protocol = protocol_data(loaded.tokenizer, prompts, config.evaluation, config.validation_windows,
                             config.second_evaluation, max_length)
    undesired, harmless = texts or reference_texts(config, behaviour, evaluator, prompts["reference"])
    onsets = behaviour.onsets(undesired, config.settings) if behaviour.finds_onsets else None

    def batches(items):
        return undesired_batches(loaded.tokenizer, items, batch_size=config.batch_size, max_length=config.reference_length)

    return References(
        general_spec=general_spec,
        general=token_windows(loaded.tokenizer, general_spec, max_length=max_length),
        undesired_texts=undesired,
        undesired=batches(undesired),
        harmless=batches(harmless),
        protocol=protocol,
        onsets=None if onsets is None else batches(onsets),
    )


def score_contrast(config: CorrectConfig, model, references: References) -> tuple[Scores, dict[str, float]]:
    """The contrastive scores of `config.method` and the seconds each reference took to score."""
    seconds = {}
    results = {}
    data = {"general": references.general, "undesired": references.undesired_batches(config.focus)}
    if config.keep == "general+harmless":
        if not references.harmless:
            raise ExciseError("keep=general+harmless needs harmless continuations of the reference prompts; none were sampled")
        data["harmless"] = references.harmless
    for what, batches in data.items():
        logger.info("scoring the %s reference with %s", what, config.method)
        results[what] = score_model(model, batches, config.method, granularities={config.granularity},
                                    target=config.target, batch_size=config.batch_size, recompute=config.recompute, **config.params)
        seconds[f"scoring_{what}"] = results[what].wall_seconds
    keep = results["general"].scores
    if "harmless" in results:
        keep = blended(keep, results["harmless"].scores, config.granularity)
    contrast = contrastive_scores(keep, results["undesired"].scores, config.granularity, config.normalise)
    return contrast, seconds


def as_variant(masks: MaskSet):
    """Neuron masks as neuron scales (only the output columns change, so only those are saved and restored);
    other masks as they are."""
    return NeuronScales.from_masks(masks) if masks.only_neurons() else masks


def correct(config: CorrectConfig, out: Path, *, force: bool = False) -> Path:
    """Run a correction as `config` says and write its artifact to `out`; returns `out`."""
    out = Path(out)
    if out.exists() and not force:
        raise ExciseError(f"{out} already exists; choose another --out or pass --force to replace it")
    behaviour = _check_inputs(config)
    started = time.perf_counter()
    loaded = load_job_model(config.model, config, "correction")
    adapter = get_adapter(loaded.model)
    total = _components(adapter, config.granularity)
    if max(config.budgets()) > total:
        raise ExciseError(
            f"budget {max(config.budgets())} exceeds the {total} {config.granularity}s of the model; give at most {total}"
        )
    evaluator = VariantEvaluator(loaded, config.backend, batch_size=config.generation_batch_size,
                                 ppl_batch_size=config.batch_size)
    references = build_references(config, loaded, behaviour, evaluator)
    contrast, timings = score_contrast(config, loaded.model, references)

    masks_by_budget = {k: remove_lowest(contrast, config.granularity, k) for k in config.budgets()}
    variants = {"dense": None} | {f"K={k}": as_variant(m) for k, m in masks_by_budget.items()}
    # validation for every budget; the test split only for dense and the chosen budget (one more engine
    # call instead of generating the largest split for budgets nobody reports)
    results = measure_variants(evaluator, behaviour, variants, references.protocol, config.settings,
                               splits=("validation",), window_sets=("validation",))
    dense = results.pop("dense")
    rows = [{"budget": k, **compare(results[f"K={k}"], dense, behaviour)} for k in config.budgets()]
    chosen = choose(rows, config.ppl_bound) if config.sweep else rows[0]
    if chosen is None:
        table = ", ".join(f"K={r['budget']}: +{100 * r['perplexity_validation_increase']:.2f}%" for r in rows)
        raise ExciseError(
            f"no budget keeps the validation perplexity increase within {100 * config.ppl_bound:.1f}% ({table}); "
            "sweep smaller budgets or raise --ppl-bound"
        )
    if chosen["validation"]["reduction"] <= 0:  # said, not hidden: the artifact is written, and flagged
        logger.warning("no budget lowered %s on the validation prompts; K=%d, the least harmful, is kept",
                       behaviour.name, chosen["budget"])
    masks = masks_by_budget[chosen["budget"]]
    tested = measure_variants(evaluator, behaviour, {"dense": None, "chosen": as_variant(masks)}, references.protocol,
                              config.settings, splits=("test",), window_sets=("test", "news"))
    after = results[f"K={chosen['budget']}"]
    for result, key in ((dense, "dense"), (after, "chosen")):
        result.behaviour |= tested[key].behaviour
        result.perplexity |= tested[key].perplexity
    chosen |= compare(after, dense, behaviour)  # the chosen sweep row gains its test figures
    manifest = Manifest(
        kind="correction",
        base_model=base_model_ref(config.model),
        method=MethodInfo(
            name=config.method,
            granularity=config.granularity,
            params={"budget": chosen["budget"], "behaviour": behaviour.name, "normalise": config.normalise,
                    "contrast": f"{config.keep} - undesired"},
        ),
        data={
            "general": references.general_spec.model_dump(),
            "evaluation": references.protocol.specs,
            "undesired": {"prompt_set": behaviour.prompt_set, "split": "reference",
                          "prompts": len(references.protocol.prompts["reference"]),
                          "max_tokens": config.reference_length, **references.undesired_summary()},
            **{split: {"prompt_set": behaviour.prompt_set, "split": split,
                       "prompts": len(references.protocol.prompts[split])} for split in ("validation", "test")},
        },
        metrics={
            # the reported figures: test prompts and test windows, never used to choose
            behaviour.name: {"before": dense.behaviour["test"].metrics, "after": after.behaviour["test"].metrics,
                             "primary": behaviour.primary, "split": "test", "paired": chosen["test"]},
            "validation": {"before": dense.behaviour["validation"].metrics,
                           "after": after.behaviour["validation"].metrics},
            "perplexity": {"before": dense.perplexity["test"], "after": after.perplexity["test"]},
            **({"perplexity_news": {"before": dense.perplexity["news"], "after": after.perplexity["news"]}}
               if "news" in dense.perplexity else {}),
            "budget": chosen["budget"],
            "validation_reduced": chosen["validation"]["reduction"] > 0,
            "sweep": rows,
            "generation": evaluator.report,
        },
        timings=timings | {"total": time.perf_counter() - started},
        config=config.model_dump(mode="json"),
    )
    with atomic_folder(out, force=force) as folder:
        masks.save(folder)
        manifest.sparsity = masks.sparsity_report(adapter)
        manifest.save(folder)
    return out
