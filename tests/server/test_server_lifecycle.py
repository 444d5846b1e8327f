"""Start-up and shutdown of a server process of its own: fail fast on a bad
config, 503 while engines load, 429 over the in-flight cap, graceful drain of
in-flight requests on SIGTERM."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from server_helpers import REPO, ServerProcess, metric


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
    config = tmp_path / "serve.json"
    config.write_text(json.dumps({"engine_defaults": {"dtype": "float32"}, "variants": [{"name": "t", "base": str(tiny_dir)}]}))
    proc = ServerProcess(["--config", str(config), "--no-toxicity", "--max-in-flight", "1"], tmp_path / "server.log")
    try:
        _wait_health(proc)
        early = httpx.post(proc.url + "/v1/completions", json=SMALL)
        assert early.status_code == 503 and "Retry-After" in early.headers
        assert early.json()["error"]["message"].startswith("the model engines are still loading")
        assert httpx.get(proc.url + "/ready").status_code == 503

        proc.wait_ready()
        _check_429_while_a_stream_is_held(proc)
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


SMALL = {"model": "t", "prompt": "x", "max_tokens": 1}


def _check_429_while_a_stream_is_held(proc: ServerProcess) -> None:
    """Hold the one admitted request in flight for certain, whatever the timing: a stream whose
    client reads nothing and whose output (~10 MB: 16 choices x ~500 tokens x 20 top log-probs)
    is larger than the socket buffers can hold, so the server waits on the send until we read.

    A request merely *generating* is not enough on 2 cores: while vLLM's engine runs flat out the
    kernel can leave every other process, this test included, without CPU until it is done
    (seen in about half of our runs), so the second request would only arrive afterwards.
    """
    send_buffer_max = int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2])
    if send_buffer_max > 8 << 20:
        pytest.skip(f"this machine's TCP send buffers (up to {send_buffer_max} bytes) can absorb the held stream")
    held = socket.socket()
    held.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    held.connect(("127.0.0.1", proc.port))
    try:
        body = json.dumps({
            "model": "t", "messages": [{"role": "user", "content": "hi"}], "stream": True, "n": 16,
            "logprobs": True, "top_logprobs": 20, "ignore_eos": True,
        }).encode()
        held.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
            b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        head = b""
        while b"\r\n\r\n" not in head:
            head += held.recv(1)
        assert head.startswith(b"HTTP/1.1 200"), head  # admitted: the cap of one is now full
        limited = httpx.post(proc.url + "/v1/completions", json=SMALL, timeout=120)
        assert limited.status_code == 429, limited.text
        assert int(limited.headers["retry-after"]) >= 0
        assert limited.json()["error"]["type"] == "rate_limit_error"
        assert metric(proc, "excise_requests_rejected_total", endpoint="completions", status="429") == 1

        stream = _read_to_end(held)
        assert len(stream) > send_buffer_max, "the held stream fit in the socket buffers, so it was not held"
        assert stream.endswith(b"data: [DONE]\n\n\r\n0\r\n\r\n")  # the SSE end, then HTTP's last (empty) chunk
    finally:
        held.close()
    assert httpx.post(proc.url + "/v1/completions", json=SMALL, timeout=120).status_code == 200  # the cap freed


def _read_to_end(sock: socket.socket) -> bytes:
    sock.settimeout(120)
    parts = []
    while chunk := sock.recv(1 << 20):
        parts.append(chunk)
    return b"".join(parts)


def _wait_health(proc: ServerProcess, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(proc.url + "/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise TimeoutError(proc.log_tail())
