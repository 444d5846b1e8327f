"""Layer by layer through a model: Hessians from calibration inputs, OBS pruning, next layer's inputs.

SparseGPT prunes one decoder layer at a time. The calibration windows' hidden states
entering layer 0 are captured once; for each layer the inputs of its linears are
accumulated into H = XᵀX (one `[in, in]` fp32 sum per linear, never per-token copies),
every linear of the layer is pruned and updated (`obs.obs_prune`), and the layer is
run again, pruned, to give the next layer its inputs. So each layer sees what the
already-pruned layers before it produce, and memory holds one layer's inputs for the
calibration set (`count x length x hidden` fp32), not the whole model's activations.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from tqdm import tqdm

from excise.errors import ExciseError
from excise.artifacts.masks import MaskSet
from excise.models.adapters import get_adapter
from excise.pruning.reconstruction.obs import MaskRule, inverse_hessian_factor, obs_prune
from excise.scoring.batches import as_batches
from excise.scoring.hooks import HookSet

logger = logging.getLogger(__name__)


class ReconstructionConfig(BaseModel):
    """SparseGPT's settings (its paper's defaults)."""

    model_config = ConfigDict(extra="forbid")

    damping: float = Field(0.01, gt=0.0, le=10.0, description="λ as a share of mean(diag H) added to H's diagonal")
    block_size: int = Field(128, ge=1, description="columns per lazy-update block (and per adaptive mask choice)")


@dataclass
class Reconstruction:
    """The pruned weights (`masks.weights`, True = kept) and the updated values of every changed tensor."""

    masks: MaskSet
    weights: dict[str, torch.Tensor] = field(default_factory=dict)  # parameter name -> [out, in], zeros where pruned


class _Captured(Exception):
    """Raised by the hook on layer 0 once its inputs are recorded: the rest of the model need not run."""


def _layer_inputs(model: nn.Module, first_layer: nn.Module, windows: torch.Tensor, batch_size: int):
    """[(hidden states entering layer 0, the keyword arguments the model passes it)] per batch."""
    captured: list[tuple[torch.Tensor, dict]] = []

    def hook(_module, args, kwargs):
        hidden = args[0] if args else kwargs.pop("hidden_states")
        captured.append((hidden.detach(), {k: v for k, v in kwargs.items() if k != "hidden_states"}))
        raise _Captured

    handle = first_layer.register_forward_pre_hook(hook, with_kwargs=True)
    device = next(model.parameters()).device
    try:
        for batch in as_batches(windows, batch_size):
            try:
                model(input_ids=batch.input_ids.to(device), use_cache=False)
            except _Captured:
                pass
    finally:
        handle.remove()
    return captured


def _run_layer(layer: nn.Module, inputs: list[tuple[torch.Tensor, dict]]) -> list[tuple[torch.Tensor, dict]]:
    outputs = []
    for hidden, kwargs in inputs:
        out = layer(hidden, **kwargs)
        outputs.append((out[0] if isinstance(out, tuple) else out, kwargs))
    return outputs


@torch.no_grad()
def reconstruct(
    model: nn.Module,
    windows: torch.Tensor,
    rule_for: Callable[[str, nn.Linear], MaskRule],
    config: ReconstructionConfig | None = None,
    *,
    batch_size: int = 1,
    progress: bool = True,
) -> Reconstruction:
    """Prune every decoder linear of `model` in place, layer by layer, with the OBS update.

    `rule_for(parameter_name, linear)` says which weights of that linear go (a fixed mask or a
    SparseGPT saliency rule). Returns the masks and the updated tensors (also left in the model).
    """
    config = config or ReconstructionConfig()
    if windows.dim() != 2 or len(windows) == 0:
        raise ExciseError("reconstruction needs calibration windows [count, length]; pass a non-empty set")
    adapter = get_adapter(model)
    layers = adapter.layer_modules()
    linears = adapter.prunable_linears()
    inputs = _layer_inputs(model, layers[0], windows, batch_size)
    result = Reconstruction(masks=MaskSet())
    for layer in tqdm(layers, desc="reconstructing (sparsegpt)", unit="layer", disable=not progress):
        members = {id(m) for m in layer.modules()}
        mine = {name: linear for name, linear in linears.items() if id(linear) in members}
        hessians = _Hessians()
        with HookSet() as hooks:
            for name, linear in mine.items():
                hooks.on_input(linear, hessians.tap(name))
            _run_layer(layer, inputs)
        for name, linear in mine.items():
            factor, _ = inverse_hessian_factor(hessians.of(name), config.damping, what=name)
            weight, keep = obs_prune(linear.weight.data, factor, rule_for(f"{name}.weight", linear),
                                     block_size=config.block_size)
            linear.weight.data.copy_(weight)
            result.masks.weights[f"{name}.weight"] = keep.cpu()
            result.weights[f"{name}.weight"] = weight.detach().cpu().clone()
        inputs = _run_layer(layer, inputs)  # what the pruned layer hands the next one
    return result


class _Hessians:
    """H = XᵀX per linear of one layer. Linears that read the very same input tensor (q/k/v,
    gate/up) share one sum: the hook of the first adds, the others only note whom they share with."""

    def __init__(self):
        self.sums: dict[str, torch.Tensor] = {}
        self.shared: dict[str, str] = {}  # linear name -> the name whose sum it shares
        self._last: tuple[torch.Tensor, str] | None = None

    def tap(self, name: str):
        def add(x: torch.Tensor) -> None:
            if self._last is not None and self._last[0] is x:
                self.shared[name] = self._last[1]
                return
            self._last = (x, name)
            flat = x.detach().reshape(-1, x.shape[-1]).float()  # [tokens, in]
            if name not in self.sums:
                self.sums[name] = torch.zeros(flat.shape[1], flat.shape[1], dtype=torch.float32, device=flat.device)
            self.sums[name].addmm_(flat.T, flat)

        return add

    def of(self, name: str) -> torch.Tensor:
        return self.sums[self.shared.get(name, name)]
