"""Where a job runs its model and how: device or accelerate device_map, dtype, recomputation.

`ComputeSettings` is the part of the prune, correct and circuit configs that changes how
fast and in how much memory a job runs, never what its scores mean: the scorers' running
sums are fp32 in every dtype, and recomputation gives the same gradients.

A model spread by a `device_map` computes each module on its accelerate hook's execution
device, and a module offloaded to CPU memory or disk holds `meta` placeholders outside its
forward; `execution_device` and `weight_of` read such a module as if it were in place.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import nn

from excise.errors import ExciseError

#: accelerate's own placements; anything else is a {module name: device} map
DEVICE_MAP_STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class ComputeSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # the descriptions are the command line's --help (`excise.cli.options`)
    device: str = Field("cpu", description="cpu, cuda, cuda:N or mps")
    dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "float32", description="the model's dtype for the job; scores are summed in float32 in every dtype"
    )
    device_map: str | dict[str, int | str] | None = Field(
        None,
        description="spread the model over devices with accelerate: auto, balanced, sequential, or a JSON module -> "
        "device map (GPU indices, cpu); replaces --device. A map that offloads weights (disk, or cpu beside GPUs) is "
        "refused: the job's masks change weights, which an offload store would not keep",
    )
    recompute: bool = Field(
        False,
        description="recompute each decoder layer in the backward pass instead of keeping its activations: memory "
        "about one layer's worth, time about one more forward pass (lrp, gradient, eap)",
    )

    @field_validator("device_map")
    @classmethod
    def _real_devices(cls, device_map):
        if isinstance(device_map, dict):
            on_meta = sorted(name for name, device in device_map.items() if device == "meta")
            if on_meta:
                raise ValueError(f"the device map leaves {', '.join(on_meta)} on the meta device; give it cpu, disk or a GPU")
        elif device_map is not None and device_map not in DEVICE_MAP_STRATEGIES:
            raise ValueError(f"device_map {device_map!r} is not one of {', '.join(DEVICE_MAP_STRATEGIES)} or a map")
        return device_map

    def load_options(self) -> dict:
        """`load_model`'s keyword arguments for these settings."""
        return {"dtype": self.dtype, "device": self.device, "device_map": self.device_map}


def execution_device(module: nn.Module) -> torch.device:
    """Where `module` computes: its accelerate hook's device when dispatched, else its weights'."""
    device = getattr(getattr(module, "_hf_hook", None), "execution_device", None)
    if device is None:
        return next(module.parameters()).device
    return torch.device("cuda", device) if isinstance(device, int) else torch.device(device)


def weight_of(linear: nn.Linear) -> torch.Tensor:
    """The linear's weight as fp32 values where it computes, also when offloaded."""
    if linear.weight.device.type != "meta":
        return linear.weight.detach().float()
    from accelerate.utils import align_module_device

    with align_module_device(linear):  # fetches the weight from the offload store for the block
        return linear.weight.detach().float().clone()


def check_placement(model: nn.Module) -> None:
    """Every module with weights computes on a real device (a `meta` execution device would
    fail at the first forward, deep inside scoring)."""
    for name, module in model.named_modules():
        if any(True for _ in module.parameters(recurse=False)) and execution_device(module).type == "meta":
            raise ExciseError(f"the device map leaves {name} on the meta device; give it cpu, disk or a GPU")


def refuse_offload(model: nn.Module, job: str) -> None:
    """Jobs that change weights (pruning, correction and circuits apply masks to measure them)
    cannot run on offloaded modules: accelerate re-reads an offloaded weight from its store at
    every forward, so an in-place change would be lost. Scoring alone (`score_model`) can."""
    offloaded = [name for name, module in model.named_modules()
                 if getattr(getattr(module, "_hf_hook", None), "offload", False)]
    if offloaded:
        raise ExciseError(
            f"{job} changes weights, and the device map offloads {len(offloaded)} modules (first: {offloaded[0]}) to "
            "cpu or disk, where a change would be lost; place every module on a device (GPUs, or cpu alone)"
        )


def check_dtype(device: str, dtype: str) -> None:
    """Refuse a dtype this device cannot compute in, by trying a small matmul and its backward."""
    try:
        x = torch.ones(4, 4, dtype=DTYPES[dtype], device=device, requires_grad=True)
        (x @ x).sum().backward()
    except (RuntimeError, TypeError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ExciseError(f"dtype {dtype} cannot run on {device}: {first}") from None
