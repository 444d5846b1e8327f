"""The serving and artifacts benchmarks' results files, rendered from plain data (no server, no model)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from benchmarks.results_files import CpuWatch, resumed_state, write_json  # noqa: E402


def _module(path: str):
    """Each benchmark's report.py is a sibling module of its script (both are named `report`)."""
    spec = importlib.util.spec_from_file_location(f"bench_{path.replace('/', '_')}", REPO / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(name: str, tokens: int, wall: float, ttft: float, single: float) -> dict:
    return {"name": name, "wall_s": wall, "output_tokens": tokens, "throughput": tokens / wall, "errors": 0,
            "latencies": [1.0, 2.0, 3.0], "ttfts": [ttft, ttft + 0.2, ttft + 0.4], "single_ttfts": [single, single]}


@pytest.fixture
def serving_record() -> dict:
    rounds = [
        [_run("vLLM", 640, 10.0, 0.5, 0.100), _run("excise", 640, 8.0, 0.6, 0.104)],
        [_run("vLLM", 640, 10.0, 0.7, 0.120), _run("excise", 640, 12.5, 0.5, 0.130)],
        [_run("vLLM", 640, 16.0, 0.6, 0.110), _run("excise", 640, 20.0, 0.9, 0.112)],
    ]
    settings = {"requests": 64, "concurrency": 8, "out_tokens": 64, "rounds": 3, "single": 2, "prompt_tokens": 32,
                "max_model_len": 2048}
    return {"command": "python benchmarks/serving/bench_serving.py", "machine": "test CPU", "model": "tiny",
            "settings": settings, "rounds": rounds, "complete": True}


def test_serving_summary_is_per_round_ratio_then_median(serving_record):
    report = _module("benchmarks/serving/report.py")
    vllm, excise = report.summarize(serving_record["rounds"])
    # worked out by hand: throughputs 64, 51.2, 40 against 80, 64, 32 -> ratios 1.25, 0.8, 0.8
    assert excise["throughput_ratio_rounds"] == pytest.approx([1.25, 0.8, 0.8])
    assert excise["throughput_ratio_median"] == pytest.approx(0.8)
    assert vllm["throughput_ratio_median"] == pytest.approx(1.0)
    # pooled TTFT medians: vLLM 0.5..1.1 -> 0.8; excise {0.6,0.8,1.0,0.5,0.7,0.9,0.9,1.1,1.3} -> 0.9
    assert excise["ttft_added_ms"] == pytest.approx(100.0)
    # one at a time, pooled: vLLM median 0.110, excise 0.112; per round +4, +10, +2 ms
    assert excise["single_ttft_added_ms"] == pytest.approx(2.0)
    assert excise["single_ttft_added_ms_rounds"] == pytest.approx([4.0, 10.0, 2.0])


def test_serving_files_show_the_json_numbers(serving_record, tmp_path):
    report = _module("benchmarks/serving/report.py")
    serving_record["summary"] = report.summarize(serving_record["rounds"])
    write_json(tmp_path / "serving.json", serving_record)
    report.render(json.loads((tmp_path / "serving.json").read_text()), tmp_path / "serving.md")
    md = (tmp_path / "serving.md").read_text()
    assert "| excise | 51.2 | 0.800 | 1.25, 0.80, 0.80 |" in md
    assert (tmp_path / "serving.png").read_bytes()[:4] == b"\x89PNG"


def test_artifacts_files_say_what_was_not_run(tmp_path):
    report = _module("benchmarks/artifacts/report.py")
    settings = {"batch": 8, "prompt_tokens": 32, "output_tokens": 64, "repeats": 3, "perplexity_spec": "wiki:8x256",
                "load_rounds": 2}
    sizes = [{"sparsity": 0.5, "dtype": "float32", "dense_bytes": 538.1e6, "sparse_bytes": 339.1e6, "ratio": 0.630,
              "pruned_tensors_ratio": 0.531, "sparse_to_dense_s": 13.2}]
    record = {"command": "c", "machine": "m", "settings": settings, "sections": {"sizes": sizes}}
    report.render(record, tmp_path / "artifacts.md")
    md = (tmp_path / "artifacts.md").read_text()
    assert "| 50% | float32 | 538.1 | 339.1 | 0.630 | 0.531 | 13.2 |" in md
    assert md.count("| not run |") == 3  # loads, vLLM, perplexity
    assert (tmp_path / "artifacts.png").read_bytes()[:4] == b"\x89PNG"


def test_cpu_watch_counts_a_child_as_the_benchmark():
    watch = CpuWatch(interval=0.1)
    busy = "import time\nwhile time.process_time() < 1.0: pass\ntime.sleep(0.5)"  # sleeps so a sample sees its total
    subprocess.run([sys.executable, "-c", busy], check=True)
    time.sleep(0.1)
    cpu = watch.close()
    assert cpu["benchmark_core_s"] >= 0.9
    assert cpu["busy_core_s"] >= cpu["benchmark_core_s"] - 0.05


def test_a_run_in_pieces_resumes_from_the_first_state_with_its_settings(tmp_path):
    key = {"model": "smollm2", "eval": "wiki:64x512"}
    work, results = tmp_path / "state.json", tmp_path / "pruning.json"
    assert resumed_state((work, results), key) == {"key": key, "rows": {}}  # nothing measured yet
    rows = {"wanda": {"levels": {"50%": {"ppl_wiki": 42.7, "commit": "abc1234"}}}}
    write_json(results, {"command": "python run.py", "machine": "m", "key": key, "rows": rows, "complete": False})
    work.write_text(json.dumps({"key": key | {"eval": "wiki:4x128"}, "rows": {"quick": {}}}))  # other settings
    # the work folder's state was measured with other settings, so the committed results are the ones to go on from
    assert resumed_state((work, results), key) == {"key": key, "rows": rows, "complete": False}
    work.write_text(json.dumps({"key": key, "rows": {}}))
    assert resumed_state((work, results), key)["rows"] == {}  # the work folder comes first


def test_correction_reading_compares_the_best_lrp_with_the_best_peer_on_the_same_prompts():
    report = _module("benchmarks/correction/report.py")

    def row(method, reduction, shows, values):
        return {"method": method, "budget": 25, "share_of_neurons": 25 / report.NEURONS, "reduction": reduction,
                "separated": False, "mcnemar_p": 1.0, "perplexity_test_increase": 0.001, "shows": shows, "values": values}

    # the peer is lower on every prompt by 0.1, so the paired interval of LRP - peer is exactly [+0.1, +0.1]
    tests = [row("lrp-margin", 0.2, [True, True, False, False], [0.6, 0.7, 0.2, 0.3]),
             row("activation", 0.3, [True, False, False, False], [0.5, 0.6, 0.1, 0.2]),
             row("random", 0.5, [False] * 4, [0.0] * 4)]  # the control is never the best peer
    lines = report.reading("toxicity", tests, validations=[])
    assert "best peer: activation (30.0%): LRP's reduction is smaller than the best peer's" in lines[-1]
    assert "McNemar p = 1, maximum toxicity LRP - peer [+0.100, +0.100] (95%): activation is lower." in lines[-1]
    tests[1]["values"] = [0.7, 0.8, 0.1, 0.2]  # now higher on two prompts and lower on two
    assert "cannot be told apart" in report.reading("toxicity", tests, validations=[])[-1]


def test_circuit_splits_verdict_needs_a_small_faithful_circuit_no_larger_than_eaps():
    seeds = _module("benchmarks/circuits/seeds.py")

    def row(kept, retained, half_width):
        return {"kept": kept, "units": 270, "found": True, "retained": retained, "retained_half_width": half_width}

    # 27 heads is exactly 10% of 270; the lower end of 0.95 +- 0.04 is 0.91 >= 0.9, of 0.95 +- 0.06 it is 0.89
    assert seeds.verdict(row(27, 0.95, 0.04), row(30, 1.0, 0.1)) == {
        "met": True, "held_out_firm": True, "heads_fewer_than_eap": 3}
    assert seeds.verdict(row(27, 0.95, 0.06), row(27, 1.0, 0.1))["held_out_firm"] is False
    assert seeds.verdict(row(28, 0.95, 0.01), row(40, 1.0, 0.1))["met"] is False  # more than 10% of the heads
    assert seeds.verdict(row(14, 0.89, 0.01), row(40, 1.0, 0.1))["met"] is False  # below 90% held out
    assert seeds.verdict(row(14, 0.95, 0.01), row(13, 1.0, 0.1))["met"] is False  # larger than EAP's
    # over splits 10, 14, 18: mean 14, sample sd 4, half width 1.96 * 4 / sqrt(3)
    assert seeds._half_width([10, 14, 18]) == pytest.approx(1.96 * 4 / 3 ** 0.5)
