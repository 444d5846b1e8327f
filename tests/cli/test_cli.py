import subprocess
import sys

import pytest


def run_cli(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "excise.cli.main", *args], capture_output=True, text=True, timeout=600, env=env
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


def _one_error_line(result) -> str:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and "usage:" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("excise: error:")]
    assert len(errors) == 1 and result.stderr.strip() == errors[0], result.stderr
    return errors[0]


# `--model /no/such/model` in each: the flag's error must come first, so it is found before
# any model is looked at, let alone loaded or scored.
NO_MODEL = ["--model", "/no/such/model"]


@pytest.mark.parametrize(
    ("args", "flag", "fix"),
    [
        (["correct", "--behaviour", "toxicity", "--sweep", "25,x"], "--sweep", "e.g. 25,50,100"),
        (["correct", "--behaviour", "toxicity", "--sweep", "25,0"], "--sweep", "positive budgets"),
        (["prune", "--method", "lrp", "--sparsity", "0.5", "--device", "quantum"], "--device", "use cpu"),
        (["prune", "--method", "lrp", "--sparsity", "0.5", "--device", "cuda:7"], "--device", "use cpu"),
        (["prune", "--method", "lrp", "--sparsity", "0.5", "--batch-size", "0"], "--batch-size", "positive"),
        (["circuit", "--batch-size", "two"], "--batch-size", "whole number"),
        (["eval", "ppl", "--device", "gpu"], "--device", "use cpu"),
        (["prune", "--method", "lrp", "--sparsity", "half"], "--sparsity", "invalid float value"),
        (["prune", "--method", "lrp", "--sparsity", "0.5", "--device-map", "/no/map.json"], "--device-map",
         "neither auto"),
        (["circuit", "--dtype", "float8"], "--dtype", "invalid choice"),
    ],
)
def test_bad_flags_are_one_line_naming_the_flag_before_any_model(args, flag, fix, tmp_path):
    out = [] if args[0] == "eval" else ["--out", str(tmp_path / "out")]
    error = _one_error_line(run_cli(*args, *NO_MODEL, *out))
    assert f"argument {flag}:" in error and fix in error
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", [["prune", "--method", "lrp", "--sparsity", "0.5"],
                                     ["correct", "--behaviour", "toxicity"], ["circuit"]])
def test_an_unwritable_out_is_refused_before_any_model(command):
    error = _one_error_line(run_cli(*command, *NO_MODEL, "--out", "/proc/excise/out"))
    assert "argument --out:" in error and "cannot write under /proc" in error


@pytest.mark.parametrize(
    "command",
    [
        ["prune", "--sparsity", "0.5", "--method", "activation", "--granularity", "row"],
        ["correct", "--behaviour", "toxicity", "--method", "activation", "--granularity", "weight"],
        ["circuit", "--method", "activation", "--granularity", "weight"],
    ],
)
def test_a_method_that_cannot_score_the_unit_is_refused_with_the_config(command, tmp_path):
    error = _one_error_line(run_cli(*command, *NO_MODEL, "--out", str(tmp_path / "out")))
    assert "method 'activation' cannot score" in error and "weights" in error and "lrp" in error


@pytest.mark.parametrize(
    ("command", "message"),
    [
        (["prune", "--sparsity", "0.5", "--method", "wanda", "--recompute"], "'wanda' runs no backward pass"),
        (["correct", "--behaviour", "toxicity", "--method", "aura", "--recompute"], "'aura' runs no backward pass"),
        (["prune", "--sparsity", "0.5", "--method", "sparsegpt", "--dtype", "bfloat16"], "in float32"),
        (["circuit", "--device-map", "MAP"], "leaves model.layers.1 on the meta device"),
    ],
)
def test_compute_settings_are_checked_with_the_config(command, message, tmp_path):
    device_map = tmp_path / "map.json"
    device_map.write_text('{"model.embed_tokens": "cpu", "model.layers.0": "cpu", "model.layers.1": "meta"}')
    command = [str(device_map) if arg == "MAP" else arg for arg in command]
    error = _one_error_line(run_cli(*command, *NO_MODEL, "--out", str(tmp_path / "out")))
    assert message in error


def test_calibration_windows_longer_than_the_context_are_refused(tiny_llama_dir, tmp_path):
    """Found when the windows are cut, after the model's config is read and before any scoring."""
    result = run_cli("prune", "--model", str(tiny_llama_dir), "--method", "lrp", "--sparsity", "0.5",
                     "--calibration", "wiki:1x600", "--out", str(tmp_path / "out"))
    errors = [line for line in result.stderr.splitlines() if line.startswith("excise: error:")]
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(errors) == 1 and "exceed the model's context of 512" in errors[0]
    assert not (tmp_path / "out").exists()


def test_an_unexpected_error_is_one_line_and_debug_shows_the_traceback(tiny_llama_dir, tmp_path):
    import shutil

    broken = shutil.copytree(tiny_llama_dir, tmp_path / "broken")
    (broken / "model.safetensors").write_bytes((broken / "model.safetensors").read_bytes()[:100])  # truncated
    result = run_cli("eval", "ppl", "--model", str(broken), "--data", "news:2x64")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("excise: error:")]
    assert len(errors) == 1 and errors[0].endswith("run with --debug for the traceback")
    debug = run_cli("--debug", "eval", "ppl", "--model", str(broken), "--data", "news:2x64")
    assert debug.returncode == 1 and "Traceback" in debug.stderr
