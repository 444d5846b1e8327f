"""Run a model with the parts a mask removes ablated: zeroed, set to their mean, or patched
from the corrupted prompt.

All three work on the weight masks a `MaskSet` expands to (structured masks included).
- zero: removed weights are zero (what `MaskSet.apply` does; the pruned model).
- mean: a removed weight's contribution `W_ij x_j` is replaced by `W_ij mean(x_j)`,
  the mean of its input over reference activations of the full model, i.e. every
  masked linear gains the constant `(W * ~M) @ mean(x)` on its output. For a removed
  MLP neuron (a column of the output projection) this is exactly the neuron's
  activation replaced by its mean; for a removed head (columns of o_proj) the head's
  output replaced by its mean. Inputs that only feed removed units (rows of the MLP
  input projections, a removed head's query rows) do not reach the output, so
  ablating them as well changes nothing.
- corrupted (activation patching): the same with `x_j` taken, token by token, from the
  full model run on the prompt's corrupted counterpart (IOI: the names replaced), so a
  removed head or neuron carries its activation on the corrupted prompt. Each chunk runs
  twice under the zero-ablated weights: the corrupted prompts first, where every masked
  linear adds back `(W * ~M) @ x` of its own input (which restores the full model, up to
  rounding) and keeps that term; then the clean prompts, where it adds the kept term.

`ablated(...)` (zero, mean) changes the model in place and restores every touched parameter
on exit; `ablated_score(...)` scores a task batch under any of the three.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Literal

import torch

from excise.errors import ExciseError
from excise.artifacts.masks import MaskSet
from excise.models.adapters import ModelAdapter
from excise.scoring.hooks import HookSet
from excise.tasks.base import TaskBatch
from excise.tasks.metrics import TaskScore, score_logits, task_logits

Ablation = Literal["zero", "mean", "corrupted"]
ABLATIONS: tuple[str, ...] = ("zero", "mean", "corrupted")


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
    """The model with `masks`' removed parts zeroed or mean-ablated (`means` from `input_means`)."""
    if mode not in ("zero", "mean"):
        raise ValueError(f"ablated() does zero or mean ablation, not {mode!r}; use ablated_score for corrupted")
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
                for name, removed in _removed_weights(model, weight_masks).items():
                    constant = removed @ means[name].to(removed.device, removed.dtype)  # [out]
                    hooks.on_input_output(model.get_submodule(name.removesuffix(".weight")), _adder(constant))
            masks.apply(adapter)
            yield
    finally:
        with torch.no_grad():
            for name, tensor in touched.items():
                tensor.copy_(saved[name])


def check_corrupted(clean: TaskBatch, corrupted: TaskBatch) -> None:
    """Patching is token by token: every corrupted prompt must have its clean prompt's length."""
    if not torch.equal(clean.attention_mask, corrupted.attention_mask):
        rows = (clean.attention_mask != corrupted.attention_mask).any(dim=1).nonzero().flatten().tolist()
        raise ExciseError(
            f"corrupted prompts {rows[:5]} tokenize to another length than their clean prompts; corrupted "
            "ablation patches position by position, so give corrupted prompts of the same token length"
        )


@torch.no_grad()
def ablated_score(
    adapter: ModelAdapter,
    masks: MaskSet,
    batch: TaskBatch,
    mode: Ablation = "zero",
    *,
    means: dict[str, torch.Tensor] | None = None,
    corrupted: TaskBatch | None = None,
    batch_size: int = 16,
) -> TaskScore:
    """Task metrics of `batch` with `masks`' removed parts ablated by `mode`."""
    if mode != "corrupted":
        with ablated(adapter, masks, mode, means):
            return score_logits(task_logits(adapter.model, batch, batch_size=batch_size), batch)
    if corrupted is None:
        raise ValueError("corrupted ablation needs the corrupted counterparts of the prompts")
    check_corrupted(batch, corrupted)
    model = adapter.model
    modules = {name: model.get_submodule(name.removesuffix(".weight")) for name in masks.weight_masks(adapter)}
    patches = {name: _Patch(removed) for name, removed in _removed_weights(model, masks.weight_masks(adapter)).items()}
    biases = {name: m.bias.detach().clone() for name, m in modules.items() if m.bias is not None}
    rows = []
    with ablated(adapter, masks, "zero"), HookSet() as hooks:
        for name, patch in patches.items():
            if name in biases:  # the bias of removed units (zeroed by the mask) belongs to the removed share too
                patch.bias = biases[name] - modules[name].bias.detach()
            hooks.on_input_output(modules[name], patch)
        for clean_chunk, corrupted_chunk in zip(batch.chunks(batch_size), corrupted.chunks(batch_size)):
            for patch in patches.values():
                patch.recording = True
            task_logits(model, corrupted_chunk, batch_size=len(corrupted_chunk))
            for patch in patches.values():
                patch.recording = False
            rows.append(task_logits(model, clean_chunk, batch_size=len(clean_chunk)))
    return score_logits(torch.cat(rows), batch)


class _Patch:
    """Adds `(W * ~M) @ x_corrupted` to a masked linear's output (see the module docstring)."""

    def __init__(self, removed: torch.Tensor):
        self.removed = removed  # [out, in]
        self.bias: torch.Tensor | float = 0.0  # [out]
        self.recording = True
        self.term: torch.Tensor | None = None

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        if self.recording:
            self.term = x @ self.removed.T + self.bias  # [..., out]: the removed share on the corrupted input
        y.add_(self.term)


@torch.no_grad()
def _removed_weights(model, weight_masks: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`W * ~M` of every masked weight, from the full model's weights (call before masks apply)."""
    removed = {}
    for name, mask in weight_masks.items():
        weight = model.get_submodule(name.removesuffix(".weight")).weight.detach()
        removed[name] = weight * (~mask).to(weight.device, weight.dtype)  # [out, in]
    return removed


def _adder(constant: torch.Tensor):
    def add(_x: torch.Tensor, y: torch.Tensor) -> None:
        y.add_(constant)  # in place: the hook's return value is ignored by HookSet

    return add
