"""User tasks from JSONL: parsing, first-token fallback with a warning, one-line errors."""

from __future__ import annotations

import json
import re
import logging

import pytest
from transformers import AutoTokenizer

from excise.cli.main import main
from excise.errors import ExciseError
from excise.tasks import load_task, split_task


@pytest.fixture(scope="module")
def tokenizer(tiny_llama_dir):
    return AutoTokenizer.from_pretrained(tiny_llama_dir)


def _write(path, records):
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in records) + "\n")
    return path


def test_reads_and_splits_a_task_file(tmp_path, tokenizer):
    records = [{"prompt": f"The quick brown fox {i}", "correct": " jumps", "incorrect": " dog"} for i in range(10)]
    task = load_task(str(_write(tmp_path / "fox.jsonl", records + [""])))
    split = split_task(task, tokenizer, reference=4, heldout=6, seed=1)
    assert len(split.reference) == 4 and len(split.heldout) == 6
    assert sorted(e.prompt for e in split.reference + split.heldout) == sorted(r["prompt"] for r in records)
    assert not split.has_corrupted


def test_multi_token_continuation_uses_its_first_token_and_warns(tmp_path, tokenizer, caplog):
    long = " zyxwvut"  # not in the tiny vocabulary as one token
    assert len(tokenizer.encode(long, add_special_tokens=False)) > 1
    records = [{"prompt": "Relevance flows", "correct": long, "incorrect": " to"}] * 2
    split = split_task(load_task(str(_write(tmp_path / "t.jsonl", records))), tokenizer, reference=1, heldout=1)
    with caplog.at_level(logging.WARNING):
        batch = split.encode(tokenizer, "heldout")
    assert int(batch.correct_ids[0]) == tokenizer.encode(long, add_special_tokens=False)[0]
    assert "first token" in caplog.text and "prompts 0" in caplog.text


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"prompt": "a", "correct": " b"}', "line 2 lacks field(s) incorrect"),
        ('{"prompt": "  ", "correct": " b", "incorrect": " c"}', "line 2 has an empty or non-string 'prompt'"),
        ("{not json", "line 2 is not valid JSON"),
        ('["prompt"]', "line 2 is not a JSON object"),
        ('{"prompt": "a", "correct": " b", "incorrect": " b"}', "line 2 has the same correct and incorrect"),
    ],
)
def test_bad_lines_are_one_line_errors_naming_the_line(tmp_path, line, message):
    path = _write(tmp_path / "bad.jsonl", [{"prompt": "ok", "correct": " x", "incorrect": " y"}, line])
    with pytest.raises(ExciseError, match=re.escape(message)):
        load_task(str(path))


def test_bad_task_file_exits_2_with_one_line(tmp_path, tiny_llama_dir, capsys):
    path = _write(tmp_path / "bad.jsonl", ['{"prompt": "", "correct": " x", "incorrect": " y"}'])
    out = tmp_path / "circuit"
    code = main(["circuit", "--model", str(tiny_llama_dir), "--task", str(path), "--method", "wanda", "--out", str(out)])
    error = capsys.readouterr().err.strip()
    assert code == 2
    assert len(error.splitlines()) == 1 and "line 1 has an empty" in error
    assert not out.exists()


def test_missing_task_file_is_an_error(tmp_path):
    with pytest.raises(ExciseError, match="does not exist"):
        load_task(str(tmp_path / "none.jsonl"))


def test_an_optional_corrupted_prompt_gives_the_task_corrupted_counterparts(tmp_path, tokenizer):
    records = [{"prompt": f"The quick brown fox {i}", "correct": " jumps", "incorrect": " dog",
                "corrupted": f"The slow brown cat {i}"} for i in range(4)]
    task = load_task(str(_write(tmp_path / "fox.jsonl", records)))
    assert task.has_corrupted
    split = split_task(task, tokenizer, reference=2, heldout=2)
    assert split.encode(tokenizer, "heldout", corrupted=True).input_ids.shape[0] == 2
    assert not load_task(str(_write(tmp_path / "plain.jsonl", [{k: v for k, v in records[0].items() if k != "corrupted"}]))).has_corrupted
    with pytest.raises(ExciseError, match="non-string 'corrupted'"):
        load_task(str(_write(tmp_path / "bad.jsonl", [records[0] | {"corrupted": 3}])))
