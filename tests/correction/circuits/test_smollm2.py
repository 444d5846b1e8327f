"""IOI on the real SmolLM2: the dense model does the task; a small LRP circuit run end to end."""

from __future__ import annotations

import json

import pytest

from correction.circuits import CircuitConfig, discover_circuit, write_circuit
from correction.manifest import Manifest
from correction.selection import removal_count
from correction.tasks import evaluate_task, load_task, split_task

pytestmark = pytest.mark.slow


def test_dense_smollm2_does_generated_ioi(smollm2):
    split = split_task(load_task("ioi"), smollm2.tokenizer, reference=8, heldout=48, seed=0)
    score = evaluate_task(smollm2.model, split.encode(smollm2.tokenizer, "heldout"))
    corrupted = evaluate_task(smollm2.model, split.encode(smollm2.tokenizer, "heldout", corrupted=True))
    assert score.accuracy > 0.8 and score.logit_diff > 0
    assert abs(corrupted.logit_diff) < score.logit_diff / 2  # no IO signal once the names are replaced


def test_tiny_lrp_head_circuit_end_to_end(smollm2_dir, tmp_path):
    config = CircuitConfig(
        model=str(smollm2_dir), method="lrp", granularity="head", scope="global",
        reference=6, heldout=12, sparsities=[0.2, 0.5], refine_steps=1, retain=0.5, batch_size=12,
    )
    result = discover_circuit(config)
    out = write_circuit(result, tmp_path / "ioi-lrp-head")
    assert Manifest.load(out).kind == "circuit"
    assert result.chosen.logit_diff >= 0.5 * result.dense.logit_diff
    heads = [n for n in json.loads((out / "circuit.json").read_text())["nodes"] if n["kind"] == "head"]
    assert len(heads) == 270 - removal_count(270, result.chosen.sparsity)  # 30 layers x 9 query heads
    assert result.faithfulness["mean"]["count"] == 12
