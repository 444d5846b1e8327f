"""The correction methods measured side by side: contrastive relevance (lrp and its variants,
gradient, wanda, activation), the AurA-style dampening baseline, and K random neurons.

Each method turns the references (general windows, undesired texts, harmless texts) into a
ranking that `edit(budget)` cuts into a neuron edit (`NeuronScales`): the contrastive ones
remove the K neurons of lowest contrast, AurA dampens the K best-separating ones, the random
control removes K neurons drawn with a fixed seed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from excise.correction.aura import aura_aurocs, aura_scales
from excise.correction.config import Objective
from excise.correction.contrast import Keep
from excise.correction.run import CorrectConfig, References, remove_lowest, score_contrast
from excise.models.adapters import get_adapter
from excise.evaluation.neuron_scales import NeuronScales
from excise.registry import Registry
from excise.artifacts.scores import Scores


@dataclass(frozen=True)
class MethodSpec:
    name: str
    kind: str  # "contrast", "aura" or "random"
    method: str = "lrp"  # the scorer of a contrastive method
    params: dict = field(default_factory=dict)
    normalise: str = "relative"
    keep: Keep = "general"
    target: Objective = "next_token"
    help: str = ""


METHODS: Registry[MethodSpec] = Registry("correction method")
for _spec in (
    MethodSpec("lrp", "contrast", "lrp", help="LRP, paper's aggregation (|relevance summed over a sample|), relative rule"),
    MethodSpec("lrp-token", "contrast", "lrp", {"aggregation": "token_absolute"}, help="LRP, sum of |each token's relevance|"),
    MethodSpec("lrp-overall", "contrast", "lrp", normalise="overall", help="LRP, the paper's difference of normalised means"),
    MethodSpec("lrp-signed", "contrast", "lrp", {"aggregation": "signed"}, help="LRP, signed relevance"),
    MethodSpec("lrp-harmless", "contrast", "lrp", keep="general+harmless",
               help="LRP, relative rule against general text and the harmless continuations of the same prompts"),
    MethodSpec("lrp-margin", "contrast", "lrp", target="next_token_margin",
               help="LRP started at the next token's margin over the expected logit (the log-probability's gradient)"),
    MethodSpec("gradient", "contrast", "gradient", help="|gradient x activation| of the loss, relative rule"),
    MethodSpec("wanda", "contrast", "wanda", help="|W| x activation norm, relative rule"),
    MethodSpec("activation", "contrast", "activation", help="mean |activation|, relative rule"),
    MethodSpec("aura", "aura", help="AurA: AUROC toxic vs harmless continuations, dampened by 1 - Gini"),
    MethodSpec("random", "random", help="K random neurons removed (control)"),
):
    METHODS.add(_spec.name, _spec)


@dataclass
class Ranking:
    """What a method computed once; `edit(budget)` is cheap."""

    edit: Callable[[int], NeuronScales]
    seconds: float


def rank(spec: MethodSpec, config: CorrectConfig, model, references: References, seed: int = 0) -> Ranking:
    started = time.perf_counter()
    adapter = get_adapter(model)
    if spec.kind == "contrast":
        method_config = config.model_copy(update={"method": spec.method, "params": spec.params,
                                                  "normalise": spec.normalise, "keep": spec.keep, "target": spec.target,
                                                  "granularity": "neuron"})
        contrast, _ = score_contrast(method_config, model, references)
        return Ranking(lambda k: NeuronScales.from_masks(remove_lowest(contrast, "neuron", k)),
                       time.perf_counter() - started)
    if spec.kind == "aura":
        aurocs = aura_aurocs(adapter, references.undesired, references.harmless)
        return Ranking(lambda k: aura_scales(aurocs, k), time.perf_counter() - started)
    generator = torch.Generator().manual_seed(seed)
    noise = Scores(neurons={layer.index: torch.rand(layer.mlp.num_neurons, generator=generator) for layer in adapter.layers()})
    return Ranking(lambda k: NeuronScales.from_masks(remove_lowest(noise, "neuron", k)), time.perf_counter() - started)
