"""Run under `torchrun --standalone --nproc-per-node N`: score with gloo, rank 0 saves.

Usage: distributed_scoring.py MODEL_DIR WINDOWS_FILE OUT_DIR METHOD [METHOD ...]
(launched by test_distributed.py; WINDOWS_FILE holds the `windows` tensor it also scores in one process)
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch.distributed as dist
from safetensors.torch import load_file

from excise.models.loading import load_model
from excise.scoring import score_model


def main(model_dir: str, windows_file: str, out: str, methods: list[str]) -> None:
    dist.init_process_group("gloo")
    model = load_model(model_dir).model
    windows = load_file(windows_file)["windows"]
    for method in methods:
        result = score_model(model, windows, method, granularities={"weight", "neuron", "head"}, progress=False)
        assert result.world_size == dist.get_world_size() and result.samples == len(windows)
        if dist.get_rank() == 0:
            folder = Path(out) / method
            folder.mkdir(parents=True)
            result.scores.save(folder)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:])
