"""Prompt sets written for this project (toxic and repetition openings), with a fixed split.

Each set is a JSONL file in this folder, one `{"id", "category", "text"}` object a
line (see README.md for how they were written and their licence).

Split rule: a prompt belongs to the `reference` half (used to find the circuit)
when the first byte of SHA-256(text) is below 128, otherwise to the `heldout`
half (only for evaluation). It depends on the prompt's text alone, so it is the
same on every machine, adding a prompt never moves another, and no prompt is in
both halves.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from importlib import resources
from typing import Literal

from correction.errors import ExciseError

PromptSplit = Literal["reference", "heldout", "all"]

PROMPT_SETS = {"toxic": "toxic_prompts.jsonl", "repetition": "repetition_prompts.jsonl"}
REFERENCE_BYTE_THRESHOLD = 128  # of 256: about half


@dataclass(frozen=True)
class Prompt:
    id: str
    category: str
    text: str

    @property
    def split(self) -> Literal["reference", "heldout"]:
        return split_of(self.text)


def split_of(text: str) -> Literal["reference", "heldout"]:
    return "reference" if hashlib.sha256(text.encode()).digest()[0] < REFERENCE_BYTE_THRESHOLD else "heldout"


@functools.lru_cache(maxsize=None)
def _load_set(name: str) -> tuple[Prompt, ...]:
    if name not in PROMPT_SETS:
        raise ExciseError(f"unknown prompt set {name!r}; choose one of: {', '.join(PROMPT_SETS)}")
    text = resources.files(__package__).joinpath(PROMPT_SETS[name]).read_text(encoding="utf-8")
    return tuple(Prompt(**json.loads(line)) for line in text.splitlines() if line.strip())


def load_prompts(name: str, split: PromptSplit = "all") -> tuple[Prompt, ...]:
    """The prompts of set `name` (`toxic`, `repetition`) in file order, restricted to `split`."""
    prompts = _load_set(name)
    return prompts if split == "all" else tuple(p for p in prompts if p.split == split)
