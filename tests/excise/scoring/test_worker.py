"""LRP in a spawned worker: same scores as in-process, caller's classes never patched."""

from __future__ import annotations

import pytest
import torch
from transformers.models.llama import modeling_llama
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from excise.errors import ExciseError
from excise.models.loading import load_model
from excise.scoring import score_in_worker, score_model


def test_worker_scores_equal_in_process_and_leave_the_caller_unpatched(tiny_llama_dir):
    windows = torch.randint(0, 384, (2, 8), generator=torch.Generator().manual_seed(5))
    mlp_forward = vars(modeling_llama.LlamaMLP)["forward"]
    result = score_in_worker(tiny_llama_dir, windows, "lrp", granularities={"weight", "head"}, progress=False)
    assert vars(modeling_llama.LlamaMLP)["forward"] is mlp_forward
    assert modeling_llama.ALL_ATTENTION_FUNCTIONS is ALL_ATTENTION_FUNCTIONS
    assert result.samples == 2 and result.tokens == 16 and result.wall_seconds > 0 and result.peak_rss_bytes > 0
    local = score_model(load_model(tiny_llama_dir).model, windows, "lrp", granularities={"weight", "head"}, progress=False)
    for key, value in local.scores.weights.items():
        torch.testing.assert_close(result.scores.weights[key], value, rtol=1e-5, atol=1e-7)
    for key, value in local.scores.heads.items():
        torch.testing.assert_close(result.scores.heads[key], value, rtol=1e-5, atol=1e-7)


def test_worker_checks_the_request_before_starting(tiny_llama_dir, tmp_path):
    with pytest.raises(ExciseError, match="unknown target"):
        score_in_worker(tiny_llama_dir, torch.zeros(1, 4, dtype=torch.long), "lrp", target="nope")
    with pytest.raises(ExciseError, match="neither a folder"):
        score_in_worker(tmp_path / "missing", torch.zeros(1, 4, dtype=torch.long), "lrp")


def test_worker_reports_its_own_peak_memory_not_the_callers(tiny_llama_dir):
    """The caller holds 2 GiB; a worker scoring a tiny model needs far less, and says so."""
    ballast = torch.ones(2**29)  # 2 GiB, every page touched
    result = score_in_worker(tiny_llama_dir, torch.zeros(1, 8, dtype=torch.long), "wanda", progress=False)
    assert 0 < result.peak_rss_bytes < ballast.numel() * ballast.element_size()
