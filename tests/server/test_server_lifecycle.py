"""Start-up and shutdown of a server process of its own: fail fast on a bad
config, 503 while engines load, 429 over the in-flight cap, graceful drain of
in-flight requests on SIGTERM."""

from __future__ import annotations

import concurrent.futures
import json
import signal
import subprocess
import sys
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
def test_503_while_loading_429_over_the_cap_then_graceful_drain(tiny_dir, tmp_path):
    """One sequence at a time in the engine, so an admitted request (16 x 400 tokens) stays in
    flight for seconds: the cap of one is then full for certain, and SIGTERM meets it running."""
    config = tmp_path / "serve.json"
    engine = {"dtype": "float32", "max_num_seqs": 1}
    config.write_text(json.dumps({"engine_defaults": engine, "variants": [{"name": "t", "base": str(tiny_dir)}]}))
    proc = ServerProcess(["--config", str(config), "--no-toxicity", "--max-in-flight", "1"], tmp_path / "server.log")
    try:
        _wait_health(proc)
        early = httpx.post(proc.url + "/v1/completions", json={"model": "t", "prompt": "x", "max_tokens": 1})
        assert early.status_code == 503 and "Retry-After" in early.headers
        assert early.json()["error"]["message"].startswith("the model engines are still loading")
        assert httpx.get(proc.url + "/ready").status_code == 503

        proc.wait_ready()
        # the first request pays one-off costs in the API process; keep them out of the timing below
        assert httpx.post(proc.url + "/v1/completions", json={"model": "t", "prompt": "x", "max_tokens": 1}).status_code == 200
        body = {"model": "t", "prompt": "When Mary and John", "max_tokens": 400, "n": 16, "ignore_eos": True}
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            held = [pool.submit(_post_and_time, proc.url, body)]
            _wait_in_flight(proc, 1, held)
            limited = httpx.post(proc.url + "/v1/completions", json=body)
            assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 0
            assert limited.json()["error"]["type"] == "rate_limit_error"
            assert not any(f.done() for f in held), "a held request ended before the 429 check; make them longer"
            signalled = time.monotonic()
            proc.proc.send_signal(signal.SIGTERM)
            for response, ended in (f.result(timeout=120) for f in held):
                assert response.status_code == 200 and ended > signalled  # running at SIGTERM, drained, not cut off
                assert [len(c["text"]) > 0 for c in response.json()["choices"]] == [True] * 16
        # uvicorn re-raises the signal it handled once shutdown is complete.
        assert proc.proc.wait(60) in (0, -signal.SIGTERM)
        assert "shut down" in proc.log_path.read_text()
    finally:
        proc.stop()


def _post_and_time(url: str, body: dict) -> tuple[httpx.Response, float]:
    response = httpx.post(url + "/v1/completions", json=body, timeout=120)
    return response, time.monotonic()


def _wait_in_flight(proc: ServerProcess, count: int, held, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while _in_flight(proc) < count:
        assert not any(f.done() for f in held), "the held request ended before the cap was full"
        assert time.monotonic() < deadline, "the requests were not admitted"
        time.sleep(0.05)


def _in_flight(proc: ServerProcess) -> float:
    for line in httpx.get(proc.url + "/metrics").text.splitlines():
        if line.startswith('excise_requests_in_flight{endpoint="completions"}'):
            return float(line.split()[-1])
    return 0.0


def _wait_health(proc: ServerProcess, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(proc.url + "/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise TimeoutError(proc.log_tail())
