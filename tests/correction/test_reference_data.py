import hashlib

import pytest

from correction.reference_data import PROMPT_SETS, load_prompts, split_of


def test_sets_are_large_enough_and_unique():
    toxic, repetition = load_prompts("toxic"), load_prompts("repetition")
    assert len(toxic) >= 150 and len(repetition) >= 60
    for prompts in (toxic, repetition):
        assert len({p.id for p in prompts}) == len(prompts)
        assert len({p.text for p in prompts}) == len(prompts)
        assert all(p.text.strip() and p.category for p in prompts)


def test_split_is_the_documented_hash_rule():
    for name in PROMPT_SETS:
        for prompt in load_prompts(name):
            first_byte = hashlib.sha256(prompt.text.encode("utf-8")).digest()[0]
            assert prompt.split == ("reference" if first_byte < 128 else "heldout")


def test_split_is_disjoint_complete_and_stable():
    for name in PROMPT_SETS:
        reference = {p.id for p in load_prompts(name, "reference")}
        heldout = {p.id for p in load_prompts(name, "heldout")}
        assert reference and heldout and not reference & heldout
        assert reference | heldout == {p.id for p in load_prompts(name)}
    # both halves of the toxic set big enough to measure on
    assert min(len(load_prompts("toxic", "reference")), len(load_prompts("toxic", "heldout"))) >= 60


@pytest.mark.parametrize(
    ("text", "split"),
    [
        ("abc", "heldout"),  # FIPS 180-2's SHA-256 test vector: ba7816bf... (first byte 186)
        ("", "heldout"),  # e3b0c442... (227)
        ("hello", "reference"),  # 2cf24dba... (44)
    ],
)
def test_split_of_known_hashes(text, split):
    """Pinned by published SHA-256 values, not by the function itself: a change of the rule (and so of
    which prompts every existing artifact was scored on) fails here."""
    assert split_of(text) == split
