"""The units excise scores, selects and masks, and the tensors it holds per unit.

A unit is a single `weight`, an MLP `neuron` or an attention `head`. `Scores` and
`MaskSet` both hold one tensor per weight tensor (keyed by parameter name, e.g.
`model.layers.0.mlp.down_proj.weight`, same shape as the weight), per layer's
neurons (`[num_neurons]`) and per layer's query heads (`[num_heads]`), and store
them in one safetensors file under `weight/<name>`, `neuron/<layer>` and
`head/<layer>`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from excise.errors import ExciseError

Unit = Literal["weight", "neuron", "head"]
UNITS: tuple[Unit, ...] = get_args(Unit)


@dataclass
class UnitTensors:
    weights: dict[str, torch.Tensor] = field(default_factory=dict)
    neurons: dict[int, torch.Tensor] = field(default_factory=dict)
    heads: dict[int, torch.Tensor] = field(default_factory=dict)

    def per_unit(self) -> dict[Unit, dict]:
        """The tensors of each unit, in `UNITS` order: {"weight": weights, "neuron": neurons, "head": heads}."""
        return {"weight": self.weights, "neuron": self.neurons, "head": self.heads}

    def entries(self) -> dict[str, torch.Tensor]:
        """Every tensor under its key in the file: `weight/<name>`, `neuron/<layer>`, `head/<layer>`."""
        return {f"{unit}/{key}": tensor for unit, tensors in self.per_unit().items() for key, tensor in tensors.items()}

    @classmethod
    def from_entries(cls, entries: dict[str, torch.Tensor], path: Path):
        """The inverse of `entries`; `path` names the file in the error for a key of no unit."""
        held = cls()
        per_unit = held.per_unit()
        for key, tensor in entries.items():
            unit, _, name = key.partition("/")
            if unit not in per_unit:
                raise ExciseError(f"{path} has an entry {key!r} of unknown kind {unit!r}")
            per_unit[unit][name if unit == "weight" else int(name)] = tensor
        return held


def read_unit_file(path: Path, what: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of a safetensors file, or a one-line error calling it `what`."""
    try:
        with safe_open(path, framework="pt") as handle:
            metadata = handle.metadata() or {}
        return load_file(path), metadata
    except (SafetensorError, OSError) as error:
        raise ExciseError(f"{path} is not a readable {what} ({error})") from error
