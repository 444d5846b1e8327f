"""IOI on the real SmolLM2: the dense model does the task; a small LRP circuit run end to end."""

from __future__ import annotations

import json

import pytest

from excise.circuits import CircuitConfig, discover_circuit, write_circuit
from excise.artifacts.manifest import Manifest
from excise.tasks import evaluate_task, load_task, split_task

pytestmark = pytest.mark.slow


def test_dense_smollm2_does_generated_ioi(smollm2):
    split = split_task(load_task("ioi"), smollm2.tokenizer, reference=8, heldout=48, seed=0)
    score = evaluate_task(smollm2.model, split.encode(smollm2.tokenizer, "heldout"))
    corrupted = evaluate_task(smollm2.model, split.encode(smollm2.tokenizer, "heldout", corrupted=True))
    assert score.accuracy > 0.8 and score.logit_diff > 0
    assert abs(corrupted.logit_diff) < score.logit_diff / 2  # no IO signal once the names are replaced


def test_tiny_lrp_head_circuit_end_to_end(smollm2_dir, tmp_path):
    config = CircuitConfig(
        model=str(smollm2_dir), method="lrp", granularity="head", ablation="corrupted",
        reference=6, heldout=12, sparsities=[0.2, 0.5], refine_steps=1, retain=0.5, batch_size=12,
    )
    result = discover_circuit(config)
    out = write_circuit(result, tmp_path / "ioi-lrp-head")
    assert Manifest.load(out).kind == "circuit" and config.scope == "global"
    assert result.found and result.chosen.logit_diff >= 0.5 * result.search_dense.logit_diff
    heads = [n for n in json.loads((out / "circuit.json").read_text())["nodes"] if n["kind"] == "head"]
    assert result.chosen.units == 270 and len(heads) == 270 - result.chosen.removed  # 30 layers x 9 query heads
    assert set(result.faithfulness) == {"zero", "mean", "corrupted"} and result.heldout["count"] == 12


@pytest.mark.parametrize("granularity", ["head", "neuron"])
def test_default_settings_find_a_circuit_that_removes_something(smollm2_dir, granularity):
    result = discover_circuit(CircuitConfig(model=str(smollm2_dir), granularity=granularity, refine_steps=1))
    assert result.found and result.chosen.removed > 0
    assert result.chosen.logit_diff >= 0.9 * result.search_dense.logit_diff
