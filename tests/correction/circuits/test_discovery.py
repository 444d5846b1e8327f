"""`excise circuit` end to end on the tiny Llama with a task file the model does."""

from __future__ import annotations

import json

import pytest
import torch

from correction.cli import main
from correction.manifest import Manifest
from correction.masks import MaskSet
from correction.models.loading import load_model
from correction.selection import removal_count

PROMPTS = [
    "When Mary and John went to the store",
    "The quick brown fox jumps over",
    "Language models predict the next",
    "Pruning removes weights that matter",
    "Relevance flows backwards from the",
    "A small model is fast to",
    "The lazy dog near the river",
    "John gave a drink to",
]


@pytest.fixture(scope="module")
def task_file(tiny_llama_dir, tmp_path_factory):
    """Each prompt with the tiny model's likeliest and least likely single-token words, so it does the task."""
    loaded = load_model(tiny_llama_dir)
    tokenizer = loaded.tokenizer
    words = [t for t in range(len(tokenizer)) if tokenizer.encode(tokenizer.decode([t]), add_special_tokens=False) == [t]]
    lines = []
    for prompt in PROMPTS:
        ids = tokenizer.encode(prompt, add_special_tokens=False)
        with torch.no_grad():
            logits = loaded.model(input_ids=torch.tensor([ids])).logits[0, -1, words]
        best, worst = words[int(logits.argmax())], words[int(logits.argmin())]
        lines.append(json.dumps({"prompt": prompt, "correct": tokenizer.decode([best]), "incorrect": tokenizer.decode([worst])}))
    path = tmp_path_factory.mktemp("task") / "tiny.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def _args(model, task, out, *extra):
    return [
        "circuit", "--model", str(model), "--task", str(task), "--method", "wanda", "--granularity", "head",
        "--scope", "global", "--reference", "4", "--heldout", "4", "--sparsities", "0.25,0.5,0.75", "--refine", "1",
        "--out", str(out), *extra,
    ]


def test_circuit_command_writes_the_artifact(tiny_llama_dir, task_file, tmp_path, capsys):
    out = tmp_path / "circuit"
    assert main(_args(tiny_llama_dir, task_file, out)) == 0
    assert "circuit: sparsity" in capsys.readouterr().out
    manifest = Manifest.load(out)  # verifies every file's hash
    assert manifest.kind == "circuit" and manifest.method.granularity == "head"
    assert {"masks.safetensors", "circuit.json", "circuit.dot", "curve.json", "curve.png", "heatmap.png", "README.md"} <= set(manifest.files)
    curve = json.loads((out / "curve.json").read_text())
    chosen = curve["chosen"]
    assert chosen["logit_diff"] >= curve["threshold"] == pytest.approx(0.9 * curve["dense"]["logit_diff"])
    assert all(p["logit_diff"] < curve["threshold"] for p in curve["points"] if p["sparsity"] > chosen["sparsity"])
    top_passes = curve["points"][-1]["logit_diff"] >= curve["threshold"]
    assert len(curve["points"]) == (3 if top_passes else 4)  # three grid levels (+ one bisection)
    masks = MaskSet.load(out)
    removed = sum(int((~m).sum()) for m in masks.heads.values())
    assert removed == removal_count(8, chosen["sparsity"])  # 2 layers x 4 query heads, ranked globally
    graph = json.loads((out / "circuit.json").read_text())
    assert sum(n["kind"] == "head" for n in graph["nodes"]) == 8 - removed
    faithful = manifest.metrics["faithfulness"]
    assert faithful["zero"]["logit_diff"] == pytest.approx(chosen["logit_diff"], abs=1e-5)
    assert set(faithful) == {"zero", "mean"}


def test_unreachable_retained_level_exits_2_and_writes_nothing(tiny_llama_dir, task_file, tmp_path, capsys):
    out = tmp_path / "circuit"
    code = main(_args(tiny_llama_dir, task_file, out, "--retain", "50"))
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2
    assert error.startswith("excise: error: no sparsity keeps 5000% of the dense logit difference") and "the best was" in error
    assert not out.exists() and not list(tmp_path.iterdir())
