"""The correction methods measured side by side: contrastive relevance (lrp and its variants,
gradient, wanda, activation), the AurA-style dampening baseline, and K random neurons.

Each method turns the references (general windows, undesired texts, harmless texts) into a
ranking that `edit(budget)` cuts into a neuron edit (`NeuronScales`): the contrastive ones
remove the K neurons of lowest contrast, AurA dampens the K best-separating ones, the random
control removes K neurons drawn with a fixed seed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from excise.correction.aura import aura_aurocs, aura_order
from excise.correction.config import Focus, Objective
from excise.correction.contrast import Keep, lowest_first
from excise.correction.run import CorrectConfig, References, score_contrast
from excise.models.adapters import get_adapter
from excise.evaluation.neuron_scales import NeuronScales
from excise.registry import Registry


@dataclass(frozen=True)
class MethodSpec:
    name: str
    kind: str  # "contrast", "aura" or "random"
    method: str = "lrp"  # the scorer of a contrastive method
    params: dict = field(default_factory=dict)
    normalise: str = "relative"
    keep: Keep = "general"
    target: Objective = "next_token"
    focus: Focus = "continuation"
    #: scale each chosen neuron by 1 + its relative contrast instead of removing it (relative rule only)
    dampen: bool = False
    help: str = ""

    def __post_init__(self):
        if self.dampen and (self.kind != "contrast" or self.normalise != "relative"):
            raise ValueError(f"{self.name}: dampening by the contrast needs a contrastive method with the relative rule")


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
    MethodSpec("lrp-margin-harmless", "contrast", "lrp", keep="general+harmless", target="next_token_margin",
               help="lrp-margin against general text and the harmless continuations of the same prompts"),
    MethodSpec("lrp-margin-dampened", "contrast", "lrp", target="next_token_margin", dampen=True,
               help="lrp-margin, each neuron scaled by 1 + its relative contrast instead of removed"),
    MethodSpec("lrp-margin-onset", "contrast", "lrp", target="next_token_margin", focus="onset",
               help="lrp-margin started only at the word where each undesired continuation turns toxic"),
    MethodSpec("lrp-margin-onset-harmless", "contrast", "lrp", keep="general+harmless", target="next_token_margin",
               focus="onset", help="lrp-margin-onset against general text and the harmless continuations too"),
    MethodSpec("gradient", "contrast", "gradient", help="|gradient x activation| of the loss, relative rule"),
    MethodSpec("gradient-onset", "contrast", "gradient", focus="onset", help="gradient, at the onset word only"),
    MethodSpec("wanda", "contrast", "wanda", help="|W| x activation norm, relative rule"),
    MethodSpec("wanda-onset", "contrast", "wanda", focus="onset", help="wanda, at the onset word only"),
    # the peers with lrp-margin-onset-harmless's contrast, so that the harmless texts are not LRP's alone
    MethodSpec("wanda-onset-harmless", "contrast", "wanda", keep="general+harmless", focus="onset",
               help="wanda-onset against general text and the harmless continuations too"),
    MethodSpec("activation", "contrast", "activation", help="mean |activation|, relative rule"),
    MethodSpec("activation-onset", "contrast", "activation", focus="onset", help="activation, at the onset word only"),
    MethodSpec("activation-onset-harmless", "contrast", "activation", keep="general+harmless", focus="onset",
               help="activation-onset against general text and the harmless continuations too"),
    MethodSpec("aura", "aura", help="AurA: AUROC toxic vs harmless continuations, dampened by 1 - Gini"),
    MethodSpec("random", "random", help="K random neurons removed (control)"),
):
    METHODS.add(_spec.name, _spec)


@dataclass
class Ranking:
    """What a method computed once: the neurons it edits, first to last, each with the scale it
    gets (0 = removed). Every method's edits are nested in the budget, so budget K edits the
    first K, and the order is all one needs to keep to measure any budget later."""

    order: list[tuple[int, int, float]]  # (layer, neuron, scale)
    widths: dict[int, int]  # neurons per layer
    seconds: float

    def edit(self, budget: int) -> NeuronScales:
        return NeuronScales.edited(self.widths, self.order[:budget])


def _removed_first(scores: dict[int, torch.Tensor], dampen: bool = False) -> list[tuple[int, int, float]]:
    """Lowest score first (the order `remove_lowest` removes them in), every neuron removed, or with
    `dampen` scaled by 1 + its score clamped to [0, 1]: under the relative rule the score is the share
    of the neuron's (normalised) relevance that is for general rather than undesired text, in (-1, 1),
    so a neuron that serves only the undesired text goes and one that serves both equally is halved."""
    values = {key: value.tolist() for key, value in scores.items()}
    return [(layer, neuron, min(max(1 + values[layer][neuron], 0.0), 1.0) if dampen else 0.0)
            for layer, neuron in lowest_first(scores)]


def rank(spec: MethodSpec, config: CorrectConfig, model, references: References, seed: int = 0) -> Ranking:
    started = time.perf_counter()
    adapter = get_adapter(model)
    widths = {layer.index: layer.mlp.num_neurons for layer in adapter.layers()}
    if spec.kind == "contrast":
        method_config = config.model_copy(update={"method": spec.method, "params": spec.params,
                                                  "normalise": spec.normalise, "keep": spec.keep, "target": spec.target,
                                                  "focus": spec.focus,
                                                  "granularity": "neuron"})
        contrast, _ = score_contrast(method_config, model, references)
        order = _removed_first(contrast.neurons, spec.dampen)
    elif spec.kind == "aura":
        order = aura_order(aura_aurocs(adapter, references.undesired, references.harmless))
    else:
        generator = torch.Generator().manual_seed(seed)
        order = _removed_first({index: torch.rand(width, generator=generator) for index, width in widths.items()})
    return Ranking(order, widths, time.perf_counter() - started)
