"""Start-up and shutdown of a server process of its own: fail fast on a bad
config, 503 while engines load, 429 over the in-flight cap, graceful drain of
in-flight requests on SIGTERM."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from server_helpers import REPO, ServerProcess, excise_hf_export, flip_byte, metric


def _refused(*args: str) -> str:
    """Start `python -m server ARGS`; it must exit 2 with one error line, before any engine starts."""
    result = subprocess.run([sys.executable, "-m", "server", *args], cwd=REPO, capture_output=True, text=True, timeout=180)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr + result.stdout
    assert "starting engine" not in result.stderr + result.stdout
    errors = [line for line in result.stderr.splitlines() if line.startswith("excise: error:")]
    assert len(errors) == 1, result.stderr[-2000:]
    return errors[0]


def test_bad_config_fails_fast_with_one_clear_line(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("variants:\n  - {name: a, base: /no/such/model}\n")
    error = _refused("--config", str(config))
    assert "/no/such/model" in error and "neither a folder nor a known name" in error


def test_a_tampered_export_is_refused_by_config_and_by_artifacts_folder(tiny_dir, tmp_path):
    """The same one flipped byte, whichever way the export is named for serving."""
    artifacts = tmp_path / "artifacts"
    pruned = excise_hf_export(tiny_dir, artifacts / "pruned")
    flip_byte(pruned / "model.safetensors")
    config = tmp_path / "serve.yaml"
    config.write_text(f"variants:\n  - {{name: pruned, base: {tiny_dir}, weights: {pruned}}}\n")
    for args in (["--config", str(config)], ["--artifacts", str(artifacts)]):
        assert "model.safetensors does not match its hash" in _refused(*args)


def test_an_open_server_on_a_public_address_is_refused(tmp_path):
    config = tmp_path / "serve.yaml"
    config.write_text("variants:\n  - {name: a, base: smollm2}\n")
    assert "--allow-unauthenticated" in _refused("--config", str(config), "--host", "0.0.0.0")


@pytest.mark.slow
def test_503_while_loading_429_over_the_cap_then_graceful_drain(tiny_dir, tmp_path):
    config = tmp_path / "serve.json"
    config.write_text(json.dumps({"variants": [{"name": "t", "base": str(tiny_dir)}]}))
    proc = ServerProcess(["--config", str(config), "--no-toxicity", "--max-in-flight", "1"], tmp_path / "server.log")
    try:
        _wait_health(proc)
        early = httpx.post(proc.url + "/v1/completions", json=SMALL)
        assert early.status_code == 503 and "Retry-After" in early.headers
        assert early.json()["error"]["message"].startswith("the model engines are still loading")
        assert httpx.get(proc.url + "/ready").status_code == 503

        proc.wait_ready()
        _check_429_while_a_stream_is_held(proc)
        _check_a_request_in_flight_at_sigterm_completes(proc)
        # uvicorn re-raises the signal it handled once shutdown is complete.
        assert proc.proc.wait(60) in (0, -signal.SIGTERM)
        assert "shut down" in proc.log_path.read_text()
    finally:
        proc.stop()


SMALL = {"model": "t", "prompt": "x", "max_tokens": 1}
HELD_CHOICES, HELD_TOKENS = 16, 400


def _hold_a_stream(proc: ServerProcess) -> socket.socket:
    """Hold one request in flight for certain, whatever the timing: a stream whose client reads
    nothing and whose output (~8 MB: 16 choices x 400 tokens x 20 top log-probs) is larger than the
    socket buffers can hold, so the server waits on the send until we read. Returns once the
    request is admitted (its 200 status line has arrived).

    A request merely *generating* is not enough on 2 cores: while vLLM's engine runs flat out the
    kernel can leave every other process, this test included, without CPU until it is done
    (seen in about half of our runs), so the second request would only arrive afterwards.
    """
    send_buffer_max = int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2])
    if send_buffer_max > 6 << 20:
        pytest.skip(f"this machine's TCP send buffers (up to {send_buffer_max} bytes) can absorb the held stream")
    held = socket.socket()
    held.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    held.connect(("127.0.0.1", proc.port))
    body = json.dumps({
        "model": "t", "messages": [{"role": "user", "content": "hi"}], "stream": True, "n": HELD_CHOICES,
        "max_tokens": HELD_TOKENS, "logprobs": True, "top_logprobs": 20, "ignore_eos": True, "temperature": 1,
        "stream_options": {"include_usage": True},
    }).encode()
    held.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += held.recv(1)
    assert head.startswith(b"HTTP/1.1 200"), head  # admitted: the cap of one is now full
    return held


def _finish_held_stream(held: socket.socket) -> dict:
    """Read the held stream to its end; the usage it reports last."""
    send_buffer_max = int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2])
    raw = _read_to_end(held)
    assert len(raw) > send_buffer_max, "the held stream fit in the socket buffers, so it was not held"
    events = _dechunk(raw).decode().split("\n\n")
    assert [e for e in events if e][-1] == "data: [DONE]"
    return json.loads([e for e in events if e.startswith("data: {")][-1].removeprefix("data: "))["usage"]


def _check_429_while_a_stream_is_held(proc: ServerProcess) -> None:
    held = _hold_a_stream(proc)
    try:
        limited = httpx.post(proc.url + "/v1/completions", json=SMALL, timeout=120)
        assert limited.status_code == 429, limited.text
        assert int(limited.headers["retry-after"]) >= 0
        assert limited.json()["error"]["type"] == "rate_limit_error"
        assert metric(proc, "excise_requests_rejected_total", endpoint="completions", status="429") == 1
        assert _finish_held_stream(held)["completion_tokens"] == HELD_CHOICES * HELD_TOKENS
    finally:
        held.close()
    assert httpx.post(proc.url + "/v1/completions", json=SMALL, timeout=120).status_code == 200  # the cap freed


def _check_a_request_in_flight_at_sigterm_completes(proc: ServerProcess) -> None:
    held = _hold_a_stream(proc)
    try:
        # In flight for certain: admitted, counted, and stuck on its send until we read.
        assert metric(proc, "excise_requests_in_flight", endpoint="chat") == 1
        proc.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 30
        while "Waiting for connections to close" not in proc.log_path.read_text():  # uvicorn got the signal
            assert time.monotonic() < deadline, "the server never began its shutdown"
            time.sleep(0.1)
        assert proc.proc.poll() is None  # still there, for the held request
        assert _finish_held_stream(held)["completion_tokens"] == HELD_CHOICES * HELD_TOKENS  # drained, not cut off
    finally:
        held.close()


def _dechunk(rest: bytes) -> bytes:
    """The content of an HTTP/1.1 chunked body (what follows the headers)."""
    body = []
    while True:
        size_line, rest = rest.split(b"\r\n", 1)
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            return b"".join(body)
        body.append(rest[:size])
        rest = rest[size + 2:]


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
