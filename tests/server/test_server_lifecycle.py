"""Start-up and shutdown of a server process of its own: fail fast on a bad
config, 503 while engines load, graceful drain of in-flight requests on SIGTERM."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest

from server_helpers import REPO, ServerProcess


def test_bad_config_fails_fast_with_one_clear_line(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("variants:\n  - {name: a, base: /no/such/model}\n")
    result = subprocess.run(
        [sys.executable, "-m", "server", "--config", str(config)], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2
    assert "/no/such/model" in result.stderr and "neither a folder nor a known name" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


@pytest.mark.slow
def test_503_while_loading_then_graceful_drain(tiny_dir, tmp_path):
    config = tmp_path / "serve.json"
    config.write_text(json.dumps({"engine_defaults": {"dtype": "float32"}, "variants": [{"name": "t", "base": str(tiny_dir)}]}))
    proc = ServerProcess(["--config", str(config), "--no-toxicity"], tmp_path / "server.log")
    try:
        _wait_health(proc)
        early = httpx.post(proc.url + "/v1/completions", json={"model": "t", "prompt": "x", "max_tokens": 1})
        assert early.status_code == 503 and "Retry-After" in early.headers
        assert early.json()["error"]["message"].startswith("the model engines are still loading")
        assert httpx.get(proc.url + "/ready").status_code == 503

        proc.wait_ready()
        result = {}
        body = {"model": "t", "prompt": "When Mary and John", "max_tokens": 400, "temperature": 0}
        worker = threading.Thread(
            target=lambda: result.update(r=httpx.post(proc.url + "/v1/completions", json=body, timeout=120))
        )
        worker.start()
        time.sleep(1.0)  # the request is generating
        proc.proc.send_signal(signal.SIGTERM)
        worker.join(120)
        assert result["r"].status_code == 200  # drained, not cut off
        # uvicorn re-raises the signal it handled once shutdown is complete.
        assert proc.proc.wait(60) in (0, -signal.SIGTERM)
        assert "shut down" in proc.log_path.read_text()
    finally:
        proc.stop()


def _wait_health(proc: ServerProcess, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(proc.url + "/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise TimeoutError(proc.log_tail())
