"""Run a model with the parts a mask removes ablated: zeroed, or set to their mean.

Both work on the weight masks a `MaskSet` expands to (structured masks included).
- zero: removed weights are zero (what `MaskSet.apply` does; the pruned model).
- mean: a removed weight's contribution `W_ij x_j` is replaced by `W_ij mean(x_j)`,
  the mean of its input over reference activations of the full model, i.e. every
  masked linear gains the constant `(W * ~M) @ mean(x)` on its output. For a removed
  MLP neuron (a column of the output projection) this is exactly the neuron's
  activation replaced by its mean; for a removed head (columns of o_proj) the head's
  output replaced by its mean. Inputs that only feed removed units (rows of the MLP
  input projections, a removed head's query rows) do not reach the output, so
  ablating them as well changes nothing.

`ablated(...)` changes the model in place and restores every touched parameter on exit.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Literal

import torch

from correction.masks import MaskSet
from correction.models.adapters import ModelAdapter
from correction.scoring.hooks import HookSet
from correction.tasks.base import TaskBatch

Ablation = Literal["zero", "mean"]
ABLATIONS: tuple[str, ...] = ("zero", "mean")


@torch.no_grad()
def input_means(adapter: ModelAdapter, batch: TaskBatch, *, batch_size: int = 16) -> dict[str, torch.Tensor]:
    """Mean input of every prunable linear over the real tokens of `batch`: param name -> [in] fp32."""
    model = adapter.model
    device = next(model.parameters()).device
    sums: dict[str, torch.Tensor] = {}
    count = 0.0

    def tap(name: str, features: int):
        def add(x: torch.Tensor) -> None:  # x: [b, length, in]
            total = sums.setdefault(name, torch.zeros(features, dtype=torch.float64, device=device))
            total += (x.double() * current_mask[..., None]).sum(dim=(0, 1))

        return add

    with HookSet() as hooks:
        for name, linear in adapter.prunable_linears().items():
            hooks.on_input(linear, tap(f"{name}.weight", linear.in_features))
        for chunk in batch.chunks(batch_size):
            current_mask = chunk.attention_mask.to(device).double()  # [b, length]
            model(input_ids=chunk.input_ids.to(device), attention_mask=chunk.attention_mask.to(device))
            count += float(current_mask.sum())
    return {name: (total / count).float() for name, total in sums.items()}


@contextlib.contextmanager
def ablated(
    adapter: ModelAdapter, masks: MaskSet, mode: Ablation = "zero", means: dict[str, torch.Tensor] | None = None
) -> Iterator[None]:
    """The model with `masks`' removed parts ablated (`means` from `input_means` for "mean")."""
    if mode not in ABLATIONS:
        raise ValueError(f"unknown ablation {mode!r}; choose one of {', '.join(ABLATIONS)}")
    if mode == "mean" and means is None:
        raise ValueError("mean ablation needs the reference input means (input_means)")
    model = adapter.model
    weight_masks = masks.weight_masks(adapter)
    touched = {}
    for name in weight_masks:
        module = model.get_submodule(name.removesuffix(".weight"))
        touched |= {f"{name.removesuffix('.weight')}.{p}": t for p, t in module.named_parameters(recurse=False)}
    saved = {name: t.detach().clone() for name, t in touched.items()}
    try:
        with HookSet() as hooks:
            if mode == "mean":
                _add_mean_terms(model, weight_masks, means, hooks)
            masks.apply(adapter)
            yield
    finally:
        with torch.no_grad():
            for name, tensor in touched.items():
                tensor.copy_(saved[name])


@torch.no_grad()
def _add_mean_terms(model, weight_masks: dict[str, torch.Tensor], means: dict[str, torch.Tensor], hooks: HookSet) -> None:
    for name, mask in weight_masks.items():
        module = model.get_submodule(name.removesuffix(".weight"))
        weight = module.weight.detach()
        removed = weight * (~mask).to(weight.device, weight.dtype)  # [out, in]
        constant = removed @ means[name].to(weight.device, weight.dtype)  # [out]
        hooks.on_input_output(module, _adder(constant))


def _adder(constant: torch.Tensor):
    def add(_x: torch.Tensor, y: torch.Tensor) -> None:
        y.add_(constant)  # in place: the hook's return value is ignored by HookSet

    return add
