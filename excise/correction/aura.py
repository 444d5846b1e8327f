"""AurA-style baseline (Suau et al. 2024, arXiv 2407.12824): dampen the neurons whose activation
tells toxic from non-toxic text, instead of removing the ones relevance points at.

For every MLP neuron, the AUROC of its activation (mean over a text's scored tokens, i.e. the
continuation) as a classifier of "this text shows the behaviour" over the undesired texts
(positives) and the model's own harmless continuations of the same prompts (negatives).
The K neurons with the highest AUROC above 0.5 are dampened by AurA's factor
`1 - Gini = 1 - 2 (AUROC - 0.5)`: a neuron that separates perfectly is silenced, one at
chance left alone. The result is a `NeuronScales`, an exact low-rank change of the output
projections (a LoRA adapter).

AUROC is computed by the rank-sum (Mann-Whitney) identity with ordinal ranks (exact ties in
continuous activations are vanishingly rare; they would count in file order).
"""

from __future__ import annotations

import torch

from excise.correction.contrast import lowest_first
from excise.errors import ExciseError
from excise.models.adapters import ModelAdapter
from excise.evaluation.neuron_scales import NeuronScales
from excise.scoring.batches import ReferenceBatch
from excise.scoring.hooks import HookSet


def auroc(positives: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
    """`[P, units]`, `[N, units]` -> `[units]`: P(a random positive's value > a random negative's)."""
    p, n = positives.shape[0], negatives.shape[0]
    if p == 0 or n == 0:
        raise ExciseError("AUROC needs texts that show the behaviour and texts that do not")
    values = torch.cat([positives, negatives]).double()  # [P + N, units]
    ranks = values.argsort(dim=0, stable=True).argsort(dim=0, stable=True).double() + 1  # 1 = smallest
    return (ranks[:p].sum(0) - p * (p + 1) / 2) / (p * n)


@torch.no_grad()
def text_activations(adapter: ModelAdapter, batches: list[ReferenceBatch]) -> dict[int, torch.Tensor]:
    """Per layer `[texts, neurons]`: each neuron's mean activation over each text's scored tokens."""
    collected: dict[int, list[torch.Tensor]] = {layer.index: [] for layer in adapter.layers()}
    current: dict[str, ReferenceBatch] = {}

    def tap(index: int):
        def hook(x: torch.Tensor) -> None:
            batch = current["batch"]
            x = x.detach().float().reshape(*batch.input_ids.shape, -1)  # [B, T, neurons]
            weights = batch.scored_mask.to(x.device)[..., None]  # [B, T, 1]
            collected[index].append(((x * weights).sum(1) / weights.sum(1).clamp(min=1)).cpu())

        return hook

    device = next(adapter.model.parameters()).device
    with HookSet() as hooks:
        for layer in adapter.layers():
            hooks.on_input(layer.mlp.output, tap(layer.index))
        for batch in batches:
            current["batch"] = batch = batch.to(device)
            adapter.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
    widths = {layer.index: layer.mlp.num_neurons for layer in adapter.layers()}
    return {index: torch.cat(parts) if parts else torch.zeros(0, widths[index]) for index, parts in collected.items()}


def aura_aurocs(adapter: ModelAdapter, undesired: list[ReferenceBatch], harmless: list[ReferenceBatch]) -> dict[int, torch.Tensor]:
    positives, negatives = text_activations(adapter, undesired), text_activations(adapter, harmless)
    return {index: auroc(positives[index], negatives[index]) for index in positives}


def aura_order(aurocs: dict[int, torch.Tensor]) -> list[tuple[int, int, float]]:
    """`(layer, neuron, factor)` of every neuron with AUROC > 0.5, highest AUROC first (ties: lower
    layer, then lower index), each with its dampening factor 1 - 2 (AUROC - 0.5)."""
    values = {key: value.tolist() for key, value in aurocs.items()}
    return [(key, index, 1 - 2 * (values[key][index] - 0.5))
            for key, index in lowest_first({key: -value for key, value in aurocs.items()}) if values[key][index] > 0.5]


def aura_scales(aurocs: dict[int, torch.Tensor], budget: int) -> NeuronScales:
    """Dampen the `budget` neurons of highest AUROC (> 0.5 only) by 1 - 2 (AUROC - 0.5)."""
    return NeuronScales.edited({key: value.numel() for key, value in aurocs.items()}, aura_order(aurocs)[:budget])
