import subprocess
import sys

import pytest


def run_cli(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "correction.cli", *args], capture_output=True, text=True, timeout=600, env=env
    )


def test_help_lists_subcommands():
    result = run_cli("--help")
    assert result.returncode == 0
    for command in ("models", "eval"):
        assert command in result.stdout


def test_eval_ppl_on_a_folder(tiny_llama_dir):
    result = run_cli("eval", "ppl", "--model", str(tiny_llama_dir), "--data", "news:2x64")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("perplexity ")
    assert "2 x 64 tokens of news (evaluation split" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["eval", "ppl", "--model", "no-such-model"], "neither a folder nor a known name"),
        (["models", "prepare", "gpt5"], "unknown embedded model"),
        (["eval", "ppl", "--data", "wiki:2x100000"], "exceed the model's context"),
    ],
)
def test_bad_input_is_one_line_exit_2(args, message, tiny_llama_dir):
    if "--data" in args:
        args = [*args, "--model", str(tiny_llama_dir)]
    result = run_cli(*args)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("excise: error:")]
    assert len(errors) == 1 and message in errors[0]
    assert "Traceback" not in result.stderr
