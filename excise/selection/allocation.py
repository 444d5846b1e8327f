"""Non-uniform sparsity per decoder layer from the scores themselves (OWL-like allocation).

OWL (Yin et al., 2024) gives layers with more activation outliers a lower sparsity. Here
the signal is the method's own scores: a layer whose weights carry more score per weight
(for LRP: more relevance) keeps more of them. With d_l the mean score per prunable weight
of layer l, layer l is pruned at

    s_l = s - δ · (d_l - d̄) / max_k |d_k - d̄|,

so the most relevant layer gets s - δ, the least s + δ, and the weight-count-weighted mean
of the s_l is s (shifted back to s exactly when layers differ in size), which keeps the
overall number of removed weights that of the uniform cut.
"""

from __future__ import annotations

import torch

from excise.models.adapters import ModelAdapter


def layer_sparsities(weight_scores: dict[str, torch.Tensor], adapter: ModelAdapter, sparsity: float, delta: float) -> dict[str, float]:
    """Per weight tensor name: the sparsity of its decoder layer (the same for a layer's tensors)."""
    linears = adapter.prunable_linears()
    layer_of: dict[str, int] = {}
    for index, layer in enumerate(adapter.layer_modules()):
        members = {id(m) for m in layer.modules()}
        layer_of |= {f"{name}.weight": index for name, m in linears.items() if id(m) in members}
    totals: dict[int, float] = {}
    counts: dict[int, int] = {}
    for name, score in weight_scores.items():
        layer = layer_of[name]
        totals[layer] = totals.get(layer, 0.0) + float(score.double().sum())
        counts[layer] = counts.get(layer, 0) + score.numel()
    layers = sorted(totals)
    density = torch.tensor([totals[i] / counts[i] for i in layers], dtype=torch.float64)  # [layers]
    sizes = torch.tensor([counts[i] for i in layers], dtype=torch.float64)
    spread = (density - density.mean()).abs().max()
    offsets = (density - density.mean()) / spread if spread > 0 else torch.zeros_like(density)
    shares = sparsity - delta * offsets
    shares += sparsity - (shares * sizes).sum() / sizes.sum()  # exact overall share when layer sizes differ
    shares = shares.clamp(0.0, 0.999)
    per_layer = dict(zip(layers, shares.tolist(), strict=True))
    return {name: per_layer[layer_of[name]] for name in weight_scores}
