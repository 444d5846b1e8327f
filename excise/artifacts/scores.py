"""Scores: how much each weight, MLP neuron and attention head matters (higher = keep).

Keys match `MaskSet`: weights by parameter name, neurons and heads by layer index
(`[num_neurons]`, `[num_heads]`). Stored as fp32 safetensors (`scores.safetensors`)
under `weight/<name>`, `neuron/<layer>`, `head/<layer>`, so masks at other
sparsities can be cut later without scoring again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from excise.errors import ExciseError

SCORES_FILE = "scores.safetensors"


@dataclass
class Scores:
    weights: dict[str, torch.Tensor] = field(default_factory=dict)
    neurons: dict[int, torch.Tensor] = field(default_factory=dict)
    heads: dict[int, torch.Tensor] = field(default_factory=dict)

    def save(self, folder: Path) -> Path:
        tensors = {f"weight/{k}": v for k, v in self.weights.items()}
        tensors |= {f"neuron/{k}": v for k, v in self.neurons.items()}
        tensors |= {f"head/{k}": v for k, v in self.heads.items()}
        path = Path(folder) / SCORES_FILE
        save_file({k: v.detach().float().contiguous().cpu() for k, v in tensors.items()}, path)
        return path

    @classmethod
    def load(cls, folder: Path) -> Scores:
        path = Path(folder) / SCORES_FILE
        if not path.is_file():
            raise ExciseError(f"{folder} has no {SCORES_FILE}; score with --save-scores first")
        try:
            tensors = load_file(path)
        except (SafetensorError, OSError) as error:
            raise ExciseError(f"{path} is not a readable scores file ({error})") from error
        scores = cls()
        for key, value in tensors.items():
            kind, _, name = key.partition("/")
            if kind == "weight":
                scores.weights[name] = value
            elif kind == "neuron":
                scores.neurons[int(name)] = value
            elif kind == "head":
                scores.heads[int(name)] = value
            else:
                raise ExciseError(f"{path} has an entry {key!r} of unknown kind {kind!r}")
        return scores
