"""User tasks from a JSONL file: one object per line with `prompt`, `correct`, `incorrect`.

`correct` and `incorrect` are the continuations to compare (e.g. " Paris" and
" London", with their leading space). An optional `corrupted` is the same prompt with
the task-relevant words swapped out, of the same token length (needed by corrupted
ablation and the EAP scorer). A continuation that is more than one token
is scored by its first token, with a warning naming the prompts concerned.
Blank lines are skipped; any other malformed line is an error naming the line.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from excise.errors import ExciseError
from excise.tasks.base import Task, TaskExample

FIELDS = ("prompt", "correct", "incorrect")


def parse_line(text: str, where: str) -> TaskExample:
    try:
        record = json.loads(text)
    except json.JSONDecodeError as error:
        raise ExciseError(f"{where} is not valid JSON ({error.msg}); write one JSON object per line") from None
    if not isinstance(record, dict):
        raise ExciseError(f"{where} is not a JSON object; write {{\"prompt\": ..., \"correct\": ..., \"incorrect\": ...}}")
    missing = [f for f in FIELDS if f not in record]
    if missing:
        raise ExciseError(f"{where} lacks field(s) {', '.join(missing)}; every line needs {', '.join(FIELDS)}")
    for field in FIELDS:
        if not isinstance(record[field], str) or not record[field].strip():
            raise ExciseError(f"{where} has an empty or non-string {field!r}; give non-empty text")
    if record["correct"] == record["incorrect"]:
        raise ExciseError(f"{where} has the same correct and incorrect continuation; make them differ")
    corrupted = record.get("corrupted")
    if corrupted is not None and (not isinstance(corrupted, str) or not corrupted.strip()):
        raise ExciseError(f"{where} has an empty or non-string 'corrupted'; give the prompt with its key words swapped")
    return TaskExample(prompt=record["prompt"], correct=record["correct"], incorrect=record["incorrect"], corrupted=corrupted)


def read_examples(path: Path) -> list[TaskExample]:
    if not path.is_file():
        raise ExciseError(f"task file {path} does not exist; give a JSONL file with {', '.join(FIELDS)} per line")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as error:
        raise ExciseError(f"{path} is not UTF-8 text ({error.reason})") from None
    examples = [parse_line(line, f"{path} line {n}") for n, line in enumerate(lines, start=1) if line.strip()]
    if not examples:
        raise ExciseError(f"{path} has no prompts; write one JSON object per line")
    return examples


class JsonlTask(Task):
    name = "jsonl"
    strict_tokens = False

    def __init__(self, path: Path):
        self.path = Path(path)
        self.name = self.path.stem
        self._examples = read_examples(self.path)  # read now: a bad file fails before any model loads
        self.has_corrupted = all(e.corrupted is not None for e in self._examples)

    def examples(self, tokenizer, count: int, seed: int) -> list[TaskExample]:
        examples = list(self._examples)
        random.Random(seed).shuffle(examples)
        return examples[:count]
