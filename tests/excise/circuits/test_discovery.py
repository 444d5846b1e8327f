"""`excise circuit` end to end on the tiny Llama with a task file the model does."""

from __future__ import annotations

import json

import pytest
import torch

from excise.cli.main import main
from excise.artifacts.manifest import Manifest
from excise.artifacts.masks import MaskSet
from excise.models.loading import load_model
from excise.selection import removal_count

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
    assert "circuit: " in capsys.readouterr().out
    manifest = Manifest.load(out)  # verifies every file's hash
    assert manifest.kind == "circuit" and manifest.method.granularity == "head"
    assert manifest.method.params["ablation"] == "mean" and manifest.method.params["scope"] == "global"
    assert manifest.config["granularity"] == "head" and manifest.config["scope"] == "global"  # resolved
    assert {"masks.safetensors", "circuit.json", "circuit.dot", "curve.json", "curve.png", "heatmap.png", "README.md"} <= set(manifest.files)
    curve = json.loads((out / "curve.json").read_text())
    chosen = curve["chosen"]
    assert curve["found"] and chosen["logit_diff"] >= curve["threshold"] == pytest.approx(0.9 * curve["search_dense"]["logit_diff"])
    assert all(p["logit_diff"] < curve["threshold"] for p in curve["points"] if p["sparsity"] > chosen["sparsity"])
    assert all(p["removed"] > 0 and p["sparsity"] == p["removed"] / 8 for p in curve["points"])  # 2 layers x 4 heads
    assert len({p["removed"] for p in curve["points"]}) == len(curve["points"])  # every mask evaluated once
    masks = MaskSet.load(out)
    removed = sum(int((~m).sum()) for m in masks.heads.values())
    assert removed == chosen["removed"] == round(manifest.method.sparsity * 8)
    graph = json.loads((out / "circuit.json").read_text())
    assert sum(n["kind"] == "head" for n in graph["nodes"]) == 8 - removed
    faithful = manifest.metrics["faithfulness"]
    assert set(faithful) == {"zero", "mean"} and curve["heldout"] == faithful  # no corrupted prompts in this file
    assert faithful["mean"]["count"] == 4


def test_greedy_pass_removes_at_least_the_sweeps_circuit_and_still_passes(tiny_llama_dir, task_file, tmp_path, capsys):
    out = tmp_path / "circuit"
    assert main(_args(tiny_llama_dir, task_file, out, "--greedy", "8")) == 0
    assert "the greedy pass removed" in capsys.readouterr().out
    curve = json.loads((out / "curve.json").read_text())
    greedy, chosen = curve["greedy"], curve["chosen"]
    assert greedy["swept"] in curve["points"] and greedy["tries"] == 8 - greedy["swept"]["removed"]
    assert chosen["removed"] == greedy["swept"]["removed"] + greedy["removed"]
    assert chosen["logit_diff"] >= curve["threshold"]
    masks = MaskSet.load(out)
    assert sum(int((~m).sum()) for m in masks.heads.values()) == chosen["removed"]
    assert Manifest.load(out).metrics["greedy"] == greedy


def test_greedy_pass_on_weights_exits_2(tiny_llama_dir, task_file, tmp_path, capsys, no_scoring):
    args = _args(tiny_llama_dir, task_file, tmp_path / "c", "--greedy", "5")
    args[args.index("--granularity") + 1] = "weight"
    assert "greedy pass removes heads or neurons" in _one_line_exit_2(capsys, main(args))


def test_unreachable_level_writes_the_best_level_and_its_curve(tiny_llama_dir, task_file, tmp_path, capsys):
    out = tmp_path / "circuit"
    assert main(_args(tiny_llama_dir, task_file, out, "--retain", "50")) == 0
    printed = capsys.readouterr().out
    assert "no level keeps 5000% of the dense logit difference" in printed and "the best level:" in printed
    curve = json.loads((out / "curve.json").read_text())
    assert not curve["found"] and curve["points"]
    assert curve["chosen"] == max(curve["points"], key=lambda p: (p["logit_diff"], p["sparsity"]))
    assert Manifest.load(out).method.params["found"] is False


def _one_line_exit_2(capsys, code: int) -> str:
    err = capsys.readouterr().err.strip().splitlines()  # model loading may log progress before it
    assert code == 2 and err[-1].startswith("excise: error: ") and sum("excise:" in line for line in err) == 1
    return err[-1]


@pytest.fixture
def no_scoring(monkeypatch):
    """Bad input must be refused before any scoring starts."""

    def refuse(*_args, **_kwargs):
        raise AssertionError("scoring started")

    monkeypatch.setattr("excise.circuits.discovery.score_model", refuse)


def test_corrupted_ablation_on_a_task_without_corrupted_prompts_exits_2(tiny_llama_dir, task_file, tmp_path, capsys, no_scoring):
    out = tmp_path / "circuit"
    error = _one_line_exit_2(capsys, main(_args(tiny_llama_dir, task_file, out, "--ablation", "corrupted")))
    assert "needs corrupted prompts" in error and not out.exists()


def test_lrp_baseline_corrupted_on_a_task_without_corrupted_prompts_exits_2(tiny_llama_dir, task_file, tmp_path, capsys, no_scoring):
    args = _args(tiny_llama_dir, task_file, tmp_path / "c", "--param", "baseline=corrupted")
    args[args.index("--method") + 1] = "lrp"
    error = _one_line_exit_2(capsys, main(args))
    assert "method 'lrp' needs corrupted prompts" in error


@pytest.mark.parametrize("param", ["baseline=median", "bogus=1"])
def test_a_bad_scorer_parameter_exits_2(tiny_llama_dir, task_file, tmp_path, capsys, param, no_scoring):
    args = _args(tiny_llama_dir, task_file, tmp_path / "c", "--param", param)
    args[args.index("--method") + 1] = "lrp"
    assert "scorer 'lrp' parameters" in _one_line_exit_2(capsys, main(args))


def test_lrp_scores_heads_from_the_search_ablation_unless_told():
    from excise.circuits.config import CircuitConfig

    for ablation in ("zero", "mean", "corrupted"):
        config = CircuitConfig(method="lrp", granularity="head", ablation=ablation)
        assert config.params == {"aggregation": "net_absolute", "baseline": ablation}
    assert CircuitConfig(method="lrp", granularity="head", params={"baseline": "zero"}).params["baseline"] == "zero"
    assert CircuitConfig(method="lrp", granularity="neuron").params == {}  # neurons and weights: the paper's rule
    assert CircuitConfig(method="lrp", granularity="weight").params == {}
    assert CircuitConfig(method="eap", granularity="head", ablation="mean").params == {}  # EAP: corrupted, its own
    assert CircuitConfig(method="lrp", granularity="head", params={"baseline": "corrupted"}).needs_corrupted()


@pytest.mark.parametrize("grid", ["0,0.5", "0.5,1", "1.5"])
def test_a_grid_outside_0_1_exits_2(tiny_llama_dir, task_file, tmp_path, capsys, grid, no_scoring):
    args = _args(tiny_llama_dir, task_file, tmp_path / "c")
    args[args.index("--sparsities") + 1] = grid
    assert "outside (0, 1)" in _one_line_exit_2(capsys, main(args))


def test_continuations_with_the_same_first_token_exit_2(tiny_llama_dir, tmp_path, capsys, no_scoring):
    tokenizer = load_model(tiny_llama_dir).tokenizer
    words = [t for t in range(len(tokenizer)) if tokenizer.encode(tokenizer.decode([t]), add_special_tokens=False) == [t]]
    first, a, b = (tokenizer.decode([t]) for t in words[-3:])
    pair = next(
        (first + x, first + y) for x, y in [(a, b), (b, a)]
        if tokenizer.encode(first + x, add_special_tokens=False)[0] == tokenizer.encode(first + y, add_special_tokens=False)[0]
    )
    path = tmp_path / "same.jsonl"
    path.write_text("".join(json.dumps({"prompt": p, "correct": pair[0], "incorrect": pair[1]}) + "\n" for p in PROMPTS))
    error = _one_line_exit_2(capsys, main(_args(tiny_llama_dir, path, tmp_path / "c")))
    assert "start with the same token" in error


def test_eval_task_on_a_circuit_reproduces_its_held_out_report(tiny_llama_dir, task_file, tmp_path, capsys):
    out = tmp_path / "circuit"
    assert main(_args(tiny_llama_dir, task_file, out)) == 0
    capsys.readouterr()
    args = ["eval", "task", "--model", str(tiny_llama_dir), "--task", str(task_file), "--mask", str(out),
            "--reference", "4", "--heldout", "4"]
    assert main(args) == 0
    masked = capsys.readouterr().out.strip().splitlines()[-1]
    assert "mean-ablated" in masked  # the ablation the circuit was searched with, from its manifest
    mean = Manifest.load(out).metrics["faithfulness"]["mean"]
    assert f"logit diff {mean['logit_diff']:.4f}, accuracy {mean['accuracy']:.4f}" in masked
