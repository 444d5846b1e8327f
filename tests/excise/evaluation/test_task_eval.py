"""`excise eval task` against a hand computation on the tiny Llama, with and without a mask."""

from __future__ import annotations

import copy
import json
import re

import pytest
import torch

from excise.cli.main import main
from excise.artifacts.masks import MaskSet
from excise.models.loading import load_model
from excise.tasks import load_task, split_task

PROMPTS = [
    ("When Mary and John went to the store", " Mary", " the"),
    ("The quick brown fox jumps over", " the", " fox"),
    ("Language models predict the next", " token", " model"),
    ("Pruning removes weights that matter", " little", " the"),
    ("Relevance flows backwards from the", " output", " weight"),
    ("A small model is fast to", " test", " load"),
]


@pytest.fixture(scope="module")
def task_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("task") / "tiny.jsonl"
    path.write_text("".join(json.dumps({"prompt": p, "correct": c, "incorrect": i}) + "\n" for p, c, i in PROMPTS))
    return path


def _by_hand(model, tokenizer, examples) -> tuple[float, float, float]:
    """Mean logit difference, accuracy, top-1: each prompt on its own (no padding), first continuation token."""
    diffs, top1 = [], []
    for example in examples:
        ids = tokenizer.encode(example.prompt, add_special_tokens=False)
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids])).logits[0, -1].double()
        good = tokenizer.encode(example.correct, add_special_tokens=False)[0]
        bad = tokenizer.encode(example.incorrect, add_special_tokens=False)[0]
        diffs.append(float(logits[good] - logits[bad]))
        top1.append(int(logits.argmax()) == good)
    return sum(diffs) / len(diffs), sum(d > 0 for d in diffs) / len(diffs), sum(top1) / len(top1)


def _printed(line: str) -> tuple[float, float, float]:
    found = re.search(r"logit diff (-?[\d.]+), accuracy ([\d.]+), top-1 ([\d.]+)", line)
    return tuple(float(x) for x in found.groups())


def test_eval_task_matches_a_hand_computation_with_and_without_a_mask(tiny_llama_dir, task_file, tmp_path, capsys):
    loaded = load_model(tiny_llama_dir)
    heldout = split_task(load_task(str(task_file)), loaded.tokenizer, reference=2, heldout=4, seed=0).heldout
    assert len(heldout) == 4
    masks = MaskSet(heads={0: torch.tensor([True, False, True, False]), 1: torch.tensor([False, True, True, True])})
    masks.save(tmp_path)  # a bare mask (no manifest): zero-ablated, i.e. the pruned model

    args = ["eval", "task", "--model", str(tiny_llama_dir), "--task", str(task_file), "--reference", "2", "--heldout", "4"]
    assert main(args + ["--mask", str(tmp_path)]) == 0
    model_line, masked_line = capsys.readouterr().out.strip().splitlines()
    assert "4 held-out prompts" in model_line and "zero-ablated" in masked_line
    assert _printed(model_line) == pytest.approx(_by_hand(loaded.model, loaded.tokenizer, heldout), abs=1e-4)

    pruned = copy.deepcopy(loaded.model)
    with torch.no_grad():
        for layer, kept in masks.heads.items():
            attention = pruned.model.layers[layer].self_attn
            for head in torch.nonzero(~kept).flatten().tolist():
                rows = slice(16 * head, 16 * (head + 1))  # head_dim 16
                attention.q_proj.weight[rows] = 0
                attention.o_proj.weight[:, rows] = 0
    expected = _by_hand(pruned, loaded.tokenizer, heldout)
    assert _printed(masked_line) == pytest.approx(expected, abs=1e-4)
    assert _printed(masked_line)[0] != pytest.approx(_printed(model_line)[0], abs=1e-3)


def test_eval_task_refuses_corrupted_ablation_without_corrupted_prompts(tiny_llama_dir, task_file, tmp_path, capsys):
    MaskSet(heads={0: torch.tensor([True, False, True, True])}).save(tmp_path)
    args = ["eval", "task", "--model", str(tiny_llama_dir), "--task", str(task_file), "--mask", str(tmp_path)]
    assert main(args + ["--ablation", "corrupted"]) == 2
    assert "needs corrupted prompts" in capsys.readouterr().err.strip().splitlines()[-1]
