"""Updated weights an artifact carries beside its mask (kind `reconstruction`).

A reconstruction (SparseGPT, or a mask from another method repaired by SparseGPT's
update) changes the values of the weights it keeps, so a mask alone cannot reproduce it.
`weights.safetensors` holds every changed tensor whole, under its parameter name, in the
dtype it was computed in; pruned positions are zero there and False in the mask. Applying
an artifact = copy these tensors into the base model, then apply the mask (which changes
nothing more for them, and zeroes what other masks remove).
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from excise.errors import ExciseError
from excise.artifacts.masks import matching_parameter

WEIGHTS_FILE = "weights.safetensors"


def save_weights(weights: dict[str, torch.Tensor], folder: Path) -> Path:
    path = Path(folder) / WEIGHTS_FILE
    save_file({name: tensor.detach().contiguous().cpu() for name, tensor in weights.items()}, path)
    return path


def load_weights(folder: Path) -> dict[str, torch.Tensor]:
    path = Path(folder) / WEIGHTS_FILE
    if not path.is_file():
        raise ExciseError(f"{folder} has no {WEIGHTS_FILE}; a reconstruction artifact carries its updated weights there")
    try:
        return load_file(path)
    except (SafetensorError, OSError) as error:
        raise ExciseError(f"{path} is not a readable safetensors file ({error})") from error


@torch.no_grad()
def copy_weights(model: torch.nn.Module, weights: dict[str, torch.Tensor]) -> None:
    """Put the updated tensors into `model` (shapes checked; cast to each parameter's dtype)."""
    params = dict(model.named_parameters())
    for name, tensor in weights.items():
        param = matching_parameter(params, name, tensor.shape, "updated weight")
        param.copy_(tensor.to(param.device, param.dtype))
