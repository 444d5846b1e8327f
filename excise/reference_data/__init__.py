"""Prompt sets written for this project (toxic and repetition openings), with a fixed three-way split.

Each set is a JSONL file in this folder, one `{"id", "category", "text"}` object a
line (see README.md for how they were written and their licence).

Split rule, on the first byte b of SHA-256(text):
- `reference` (b < 96, ~37.5 %): the prompts whose continuations build the undesired
  reference a correction is found from;
- `validation` (96 <= b < 144, ~18.75 %): where a budget and settings are chosen;
- `test` (b >= 144, ~43.75 %): reported only, never used to choose anything.
It depends on the prompt's text alone, so it is the same on every machine, adding a
prompt never moves another, and no prompt is in two splits.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from importlib import resources
from typing import Literal

from excise.errors import ExciseError

Split = Literal["reference", "validation", "test"]
PromptSplit = Literal["reference", "validation", "test", "all"]
SPLITS: tuple[Split, ...] = ("reference", "validation", "test")

PROMPT_SETS = {"toxic": "toxic_prompts.jsonl", "repetition": "repetition_prompts.jsonl"}
#: first-byte upper bounds (exclusive) of the reference and validation splits; the rest is test
SPLIT_BOUNDS = {"reference": 96, "validation": 144}


@dataclass(frozen=True)
class Prompt:
    id: str
    category: str
    text: str

    @property
    def split(self) -> Split:
        return split_of(self.text)


def split_of(text: str) -> Split:
    first = hashlib.sha256(text.encode()).digest()[0]
    if first < SPLIT_BOUNDS["reference"]:
        return "reference"
    return "validation" if first < SPLIT_BOUNDS["validation"] else "test"


@functools.lru_cache(maxsize=None)
def _load_set(name: str) -> tuple[Prompt, ...]:
    if name not in PROMPT_SETS:
        raise ExciseError(f"unknown prompt set {name!r}; choose one of: {', '.join(PROMPT_SETS)}")
    text = resources.files(__package__).joinpath(PROMPT_SETS[name]).read_text(encoding="utf-8")
    return tuple(Prompt(**json.loads(line)) for line in text.splitlines() if line.strip())


def load_prompts(name: str, split: PromptSplit = "all") -> tuple[Prompt, ...]:
    """The prompts of set `name` (`toxic`, `repetition`) in file order, restricted to `split`."""
    if split != "all" and split not in SPLITS:
        raise ExciseError(f"unknown prompt split {split!r}; choose one of: {', '.join(SPLITS)}, all")
    prompts = _load_set(name)
    return prompts if split == "all" else tuple(p for p in prompts if p.split == split)
