"""Data-parallel scoring: 2 gloo ranks under torchrun equal one process (fp32 tolerance)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from excise.models.loading import load_model
from excise.artifacts.scores import Scores
from excise.scoring import score_model

SCRIPT = Path(__file__).with_name("distributed_scoring.py")
METHODS = ["lrp", "wanda"]


def test_two_gloo_ranks_equal_a_single_process(tiny_llama_dir, tmp_path):
    windows = torch.randint(0, 384, (5, 10), generator=torch.Generator().manual_seed(7))  # 3 + 2 batches per rank
    save_file({"windows": windows}, tmp_path / "windows.safetensors")
    root = Path(__file__).parents[3]
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    completed = subprocess.run(
        [*command, str(SCRIPT), str(tiny_llama_dir), str(tmp_path / "windows.safetensors"), str(tmp_path), *METHODS],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    model = load_model(tiny_llama_dir).model
    for method in METHODS:
        single = score_model(model, windows, method, granularities={"weight", "neuron", "head"}, progress=False).scores
        parallel = Scores.load(tmp_path / method)
        assert set(parallel.weights) == set(single.weights) and parallel.weights
        for kind in ("weights", "neurons", "heads"):
            for key, value in getattr(single, kind).items():
                torch.testing.assert_close(getattr(parallel, kind)[key], value, rtol=1e-5, atol=1e-7)
