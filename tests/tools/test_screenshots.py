"""`make screenshots`' pure parts: its command line (one line, exit 2, before any server starts) and the
experiment it adds to make serve's variants."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tools import screenshots  # noqa: E402
from tools.serve_process import ServeError  # noqa: E402

from server.config import parse_config  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(autouse=True)
def chromium_present(monkeypatch, tmp_path):
    # The command line checks that Debian's chromium is there; these tests do not launch it.
    fake = tmp_path / "chromium"
    fake.write_text("")
    monkeypatch.setattr(screenshots, "CHROMIUM", fake)


def _refused(capsys, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        screenshots.parse_args(argv)
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    return lines[-1]  # argparse prints the usage line, then the one-line error


def test_defaults_and_flags_become_the_config(tmp_path):
    port = _free_port()
    config = screenshots.parse_args(["--port", str(port), "--out", str(tmp_path / "shots"), "--traffic", "8"])
    assert (config.port, config.out, config.traffic) == (port, tmp_path / "shots", 8)
    assert config.temperature == 0.0 and config.prompt  # greedy: the same answer every run
    assert screenshots.CaptureConfig().out == screenshots.REPO / "docs" / "screenshots"


@pytest.mark.parametrize(("argv", "flag"), [
    (["--port", "0"], "--port"),
    (["--port", "70000"], "--port"),
    (["--traffic", "1"], "--traffic"),
    (["--timeout", "-5"], "--timeout"),
])
def test_bad_values_name_their_flag(capsys, argv, flag):
    line = _refused(capsys, argv)
    assert "error: " + flag in line


def test_a_busy_port_is_refused_before_any_server_starts(capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        line = _refused(capsys, ["--port", str(port)])
    assert f"--port {port} is in use" in line


def test_an_out_folder_that_cannot_be_made_is_refused(capsys, tmp_path):
    (tmp_path / "a-file").write_text("")
    line = _refused(capsys, ["--port", str(_free_port()), "--out", str(tmp_path / "a-file" / "shots")])
    assert "--out" in line and "not a writable folder" in line


def test_missing_chromium_is_refused(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(screenshots, "CHROMIUM", tmp_path / "no-chromium")
    assert "chromium" in _refused(capsys, ["--port", str(_free_port())])


def _served(variants: list[dict]):
    return parse_config({"variants": variants}, origin="test")


def test_the_experiment_sets_each_base_against_its_correction():
    # What discover_artifacts makes of make serve's folder: the base (of the correction), the correction,
    # and the pruned export served as a model of its own.
    config = _served([
        {"name": "smollm2", "base": "smollm2"},
        {"name": "smollm2-detox", "base": "smollm2", "correction": "/a/smollm2-detox"},
        {"name": "smollm2-lrp50", "base": "/a/smollm2-lrp50"},
    ])
    with_ab = screenshots.with_experiment(config)
    assert with_ab.variants == config.variants
    [experiment] = with_ab.experiments
    assert experiment.name == screenshots.EXPERIMENT
    assert [arm.variant for arm in experiment.arms] == ["smollm2", "smollm2-detox"]  # the first arm is the control
    assert parse_config(with_ab.model_dump(mode="json"), origin="round trip") == with_ab  # what is written is valid


def test_no_correction_means_no_experiment():
    config = _served([{"name": "smollm2", "base": "smollm2"}, {"name": "pruned", "base": "/a/pruned"}])
    with pytest.raises(ServeError, match="no correction"):
        screenshots.with_experiment(config)
