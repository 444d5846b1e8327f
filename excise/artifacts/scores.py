"""Scores: how much each weight, MLP neuron and attention head matters (higher = keep).

Keys and file layout are those of every `UnitTensors` (`excise.artifacts.units`).
Stored as fp32 safetensors (`scores.safetensors`), so masks at other sparsities can
be cut later without scoring again.
"""

from __future__ import annotations

from pathlib import Path

from safetensors.torch import save_file

from excise.artifacts.units import UnitTensors, read_unit_file
from excise.errors import ExciseError

SCORES_FILE = "scores.safetensors"


class Scores(UnitTensors):
    def save(self, folder: Path) -> Path:
        path = Path(folder) / SCORES_FILE
        save_file({k: v.detach().float().contiguous().cpu() for k, v in self.entries().items()}, path)
        return path

    @classmethod
    def load(cls, folder: Path) -> Scores:
        path = Path(folder) / SCORES_FILE
        if not path.is_file():
            raise ExciseError(f"{folder} has no {SCORES_FILE}; score with --save-scores first")
        tensors, _ = read_unit_file(path, "scores file")
        return cls.from_entries(tensors, path)
