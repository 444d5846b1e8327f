"""The scoring-memory benchmark's targets and 7B projection, on a worked-out state (no model is run)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO / "benchmarks" / "scoring_memory"), str(REPO)]
for name in ("benchmark", "report"):  # another benchmark's same-named sibling module must not stand in
    sys.modules.pop(name, None)

import benchmark  # noqa: E402
import report  # noqa: E402

GB = 2**30


def _ok(peak_gb: float, loaded_gb: float, seconds: float) -> dict:
    return {"status": "ok", "peak_bytes": peak_gb * GB, "loaded_bytes": loaded_gb * GB, "seconds": seconds, "tokens": 2048}


@pytest.fixture
def state() -> dict:
    m = {
        "tinyllama-1.1b|wanda|False|512": _ok(8.0, 4.0, 30), "tinyllama-1.1b|wanda|False|2048": _ok(8.5, 4.0, 40),
        "tinyllama-1.1b|lrp|False|512": _ok(10.0, 4.0, 90), "tinyllama-1.1b|lrp|False|2048": {"status": "exceeded"},
        "tinyllama-1.1b|lrp|True|512": _ok(8.6, 4.0, 120), "tinyllama-1.1b|lrp|True|2048": _ok(9.2, 4.0, 150),
    }
    return {"measurements": m, "settings": {"device": "cpu", "dtype": "bfloat16", "tokens": 2048, "threads": 2},
            "limit_bytes": 20 * GB}


def test_targets_are_ratios_of_the_measured_peaks_and_times(state):
    t = report.targets(report._rows(state), [512, 2048])["tinyllama-1.1b"]
    assert t["lrp_recompute_over_wanda_peak"] == pytest.approx(9.2 / 8.5)
    assert t["lrp_kept_over_wanda_peak"] is None  # stopped at the limit: no ratio
    assert t["lrp_recompute_growth_gb"] == pytest.approx(0.6) and t["wanda_growth_gb"] == pytest.approx(0.5)
    assert t["recompute_time_ratio"]["lrp"] == {512: pytest.approx(120 / 90), 2048: None}
    assert "> 20" in report.markdown(state, "cmd", "scoring_memory")


def test_the_projection_scales_the_fit_by_prunable_weights_and_layer_width(state):
    projected = benchmark.projection(state)
    # over the model: 4.6 GB at 512 and 5.2 GB at 2048 tokens -> slope 0.6 GB / 1536 tokens, intercept 4.4 GB
    slope, intercept = 0.6 * GB / 1536, 4.6 * GB - 0.6 * GB / 1536 * 512
    (_, prunable_s), (total_t, prunable_t) = benchmark._parameter_counts("tinyllama-1.1b"), benchmark._parameter_counts("llama2-7b")
    width = (32 * 4096) / (22 * 2048)
    expected = 2 * total_t + intercept * prunable_t / prunable_s + slope * 2048 * width  # bfloat16 weights: 2 bytes
    assert projected["peak_bytes"]["bfloat16"][2048] == pytest.approx(expected)
    assert projected["peak_bytes"]["float32"][2048] == pytest.approx(expected + 2 * total_t)
    assert projected["bytes_per_token"] == pytest.approx(slope)
    assert total_t == 6_738_415_616  # Llama-2-7B's parameter count
