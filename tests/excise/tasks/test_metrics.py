"""The task metric against a hand computation: each prompt run alone, float64 arithmetic."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoTokenizer

from excise.models.loading import load_model
from excise.tasks import TaskExample, encode_examples, evaluate_task


@pytest.fixture(scope="module")
def tiny(tiny_llama_dir):
    return load_model(tiny_llama_dir)


def test_logit_difference_and_accuracy_match_a_hand_computation(tiny):
    tokenizer = tiny.tokenizer
    examples = [
        TaskExample("When Mary and John went to the store, John gave a drink to", " Mary", " John"),
        TaskExample("The quick brown fox", " jumps", " dog"),
        TaskExample("Language models predict the next", " token", " model"),
    ]
    diffs, top1 = [], []
    for example in examples:
        ids = tokenizer.encode(example.prompt, add_special_tokens=False)
        with torch.no_grad():
            logits = tiny.model(input_ids=torch.tensor([ids])).logits[0, -1].double()  # unpadded, alone
        good = tokenizer.encode(example.correct, add_special_tokens=False)[0]
        bad = tokenizer.encode(example.incorrect, add_special_tokens=False)[0]
        diffs.append(float(logits[good] - logits[bad]))
        top1.append(int(logits.argmax()) == good)
    score = evaluate_task(tiny.model, encode_examples(tokenizer, examples, strict=False), batch_size=2)
    assert score.logit_diff == pytest.approx(sum(diffs) / 3, abs=1e-4)
    assert score.accuracy == pytest.approx(sum(d > 0 for d in diffs) / 3)
    assert score.top1 == pytest.approx(sum(top1) / 3)
    assert score.count == 3
