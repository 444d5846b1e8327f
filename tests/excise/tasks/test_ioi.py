"""IOI generation on the real SmolLM2 tokenizer (only the tokenizer is loaded: fast)."""

from __future__ import annotations

import re

import pytest
from transformers import AutoTokenizer

from excise.errors import ExciseError
from excise.tasks import encode_examples, load_task, split_task
from excise.tasks.ioi import NAMES, IoiTask, single_token_words


@pytest.fixture(scope="module")
def tokenizer(smollm2_dir):
    return AutoTokenizer.from_pretrained(smollm2_dir)


@pytest.fixture(scope="module")
def examples(tokenizer):
    return IoiTask().examples(tokenizer, 48, seed=7)


def _names_in(text: str) -> list[str]:
    return [w for w in re.findall(r"[A-Z][a-z]+", text) if w in NAMES]


def test_generation_is_deterministic_with_seed(tokenizer, examples):
    assert IoiTask().examples(tokenizer, 48, seed=7) == examples
    assert IoiTask().examples(tokenizer, 48, seed=8) != examples
    assert len({e.prompt for e in examples}) == 48


def test_both_name_orders_and_answers_as_intended(examples):
    orders = []
    for example in examples:
        io, s = example.correct.strip(), example.incorrect.strip()
        names = _names_in(example.prompt)
        assert names.count(io) == 1 and names.count(s) == 2, example.prompt
        assert names[-1] == s  # the repeated subject is the one who gives
        orders.append("ABBA" if names[0] == io else "BABA")
    assert orders.count("ABBA") == orders.count("BABA") == 24


def test_every_name_is_one_token_and_prompts_tokenize_as_intended(tokenizer, examples):
    for example in examples:
        for name in _names_in(example.prompt) + _names_in(example.corrupted):
            assert len(tokenizer.encode(" " + name, add_special_tokens=False)) == 1
        prompt_ids = tokenizer.encode(example.prompt, add_special_tokens=False)
        (correct,) = tokenizer.encode(example.correct, add_special_tokens=False)
        assert tokenizer.encode(example.prompt + example.correct, add_special_tokens=False) == prompt_ids + [correct]
    batch = encode_examples(tokenizer, examples)  # strict: raises if anything is off
    assert tokenizer.decode(batch.correct_ids[0]) == examples[0].correct


def test_corrupted_prompts_differ_only_in_names(tokenizer, examples):
    name_ids = {tokenizer.encode(" " + n, add_special_tokens=False)[0] for n in single_token_words(tokenizer, NAMES)}
    for example in examples:
        clean = tokenizer.encode(example.prompt, add_special_tokens=False)
        corrupt = tokenizer.encode(example.corrupted, add_special_tokens=False)
        assert len(clean) == len(corrupt)
        differing = [(a, b) for a, b in zip(clean, corrupt) if a != b]
        assert len(differing) == 3  # all three name slots replaced
        assert all(a in name_ids and b in name_ids for a, b in differing)
        corrupt_names = _names_in(example.corrupted)
        assert len(set(corrupt_names)) == 3
        assert example.correct.strip() not in corrupt_names and example.incorrect.strip() not in corrupt_names


def test_split_is_deterministic_and_disjoint(tokenizer):
    first = split_task(load_task("ioi"), tokenizer, reference=10, heldout=20, seed=0)
    again = split_task(load_task("ioi"), tokenizer, reference=10, heldout=20, seed=0)
    assert first == again
    assert len(first.reference) == 10 and len(first.heldout) == 20
    assert not {e.prompt for e in first.reference} & {e.prompt for e in first.heldout}


def test_tokenizer_without_enough_single_token_names_is_refused(tiny_llama_dir):
    tiny = AutoTokenizer.from_pretrained(tiny_llama_dir)
    with pytest.raises(ExciseError, match="too few single-token IOI words"):
        IoiTask().examples(tiny, 4, seed=0)


def test_unknown_task_names_the_choices():
    with pytest.raises(ExciseError, match="choose one of ioi"):
        load_task("sst2")
