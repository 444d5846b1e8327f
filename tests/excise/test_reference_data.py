import hashlib

import pytest

from excise.reference_data import PROMPT_SETS, load_prompts, split_of


def test_sets_are_large_enough_and_unique():
    toxic, repetition = load_prompts("toxic"), load_prompts("repetition")
    assert len(toxic) >= 300 and len(repetition) >= 60
    for prompts in (toxic, repetition):
        assert len({p.id for p in prompts}) == len(prompts)
        assert len({p.text for p in prompts}) == len(prompts)
        assert all(p.text.strip() and p.category for p in prompts)


def test_split_is_the_documented_hash_rule():
    for name in PROMPT_SETS:
        for prompt in load_prompts(name):
            first_byte = hashlib.sha256(prompt.text.encode("utf-8")).digest()[0]
            expected = "reference" if first_byte < 96 else "validation" if first_byte < 144 else "test"
            assert prompt.split == expected


def test_split_is_disjoint_complete_and_stable():
    for name in PROMPT_SETS:
        reference, validation, test = ({p.id for p in load_prompts(name, s)} for s in ("reference", "validation", "test"))
        assert reference and validation and test
        assert not reference & validation and not reference & test and not validation & test
        assert reference | validation | test == {p.id for p in load_prompts(name)}
    # the toxic test split is large enough for intervals that can show a halving (>= 100 prompts)
    assert len(load_prompts("toxic", "test")) >= 100 and len(load_prompts("toxic", "validation")) >= 50


def test_split_of_fixed_texts_is_pinned():
    # the rule is part of the protocol: pinned values (first SHA-256 bytes a=202, b=62, k=130, m=98) catch any change
    assert [split_of(t) for t in ("a", "b", "k", "m")] == ["test", "reference", "validation", "validation"]
