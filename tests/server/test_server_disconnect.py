"""A client that leaves mid-generation: the server aborts the engine's work and records 499.

Over HTTP on the session's shared server (conftest), and `run_until_disconnect` itself on a fake ASGI
receive, where nothing depends on timing."""

from __future__ import annotations

import asyncio
import json
import socket
import time

import httpx
import pytest
from server_helpers import API_KEYS, metric

from server.serving import ClientDisconnected, run_until_disconnect

PROMPT = "When Mary and John went to the store, John gave a drink to"


def test_run_until_disconnect_cancels_the_work_when_the_client_goes():
    async def scenario() -> tuple[bool, str]:
        gone, cancelled = asyncio.Event(), asyncio.Event()
        messages = iter([{"type": "http.request", "body": b"{}", "more_body": False}])

        async def receive():
            message = next(messages, None)
            if message is None:
                await gone.wait()
                message = {"type": "http.disconnect"}
            return message

        async def work():
            try:
                await asyncio.Event().wait()  # never finishes by itself
            except asyncio.CancelledError:
                cancelled.set()
                raise

        asyncio.get_running_loop().call_soon(gone.set)
        try:
            await run_until_disconnect(receive, work())
        except ClientDisconnected:
            return cancelled.is_set(), "disconnected"
        return cancelled.is_set(), "returned"

    assert asyncio.run(scenario()) == (True, "disconnected")


def test_run_until_disconnect_returns_the_result_while_the_client_stays():
    async def scenario():
        async def receive():
            await asyncio.Event().wait()  # the client never leaves

        async def work():
            return 42

        return await run_until_disconnect(receive, work())

    assert asyncio.run(scenario()) == 42


def _wait_until_idle(server, seconds: float = 30) -> None:
    """Earlier tests' generations must be gone, or the next request may be refused instead of served."""
    deadline = time.monotonic() + seconds
    while metric(server, "excise_requests_in_flight", endpoint="completions") > 0:
        assert time.monotonic() < deadline, "requests of earlier tests are still in flight"
        time.sleep(0.1)


def _answered(server) -> dict[str, float]:
    return {s: metric(server, "excise_requests_total", endpoint="completions", status=s) for s in ("200", "499")}


def _wait_until_admitted_or_done(server, admitted: float, finished: float, seconds: float = 60) -> None:
    """Polling can miss the whole life of a request the engine finished between two polls, so a finished
    count that moved ends the wait as well as the request seen in flight."""
    deadline = time.monotonic() + seconds
    while (metric(server, "excise_requests_in_flight", endpoint="completions") < admitted
           and sum(_answered(server).values()) == finished):
        assert time.monotonic() < deadline, "the request was neither admitted nor answered"
        time.sleep(0.05)


def _wait_until_engine_idle(server, seconds: float = 15) -> None:
    deadline = time.monotonic() + seconds
    while metric(server, "vllm:num_requests_running") > 0:
        assert time.monotonic() < deadline, "the engine kept generating for a gone client"
        time.sleep(0.05)


def _hang_up_early(server, body: dict) -> bool:
    """Send `body` on a raw socket and close the connection while the server works on it.

    A stream is left after its first bytes, any other request once the server has admitted it. True if the
    server recorded the request as abandoned (499); False if it was done before it saw the client go: on
    2 cores the engine can starve this process until the whole answer is written, and then 200 is right.
    """
    payload = json.dumps(body).encode()
    url = httpx.URL(server.url)
    counts = _answered(server)
    admitted = metric(server, "excise_requests_in_flight", endpoint="completions") + 1
    with socket.create_connection((url.host, url.port), timeout=60) as sock:
        sock.sendall(
            f"POST /v1/completions HTTP/1.1\r\nHost: {url.host}\r\nAuthorization: Bearer {API_KEYS[0]}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n".encode() + payload
        )
        if body["stream"]:
            assert sock.recv(12) == b"HTTP/1.1 200"
        else:
            _wait_until_admitted_or_done(server, admitted, sum(counts.values()))
    _wait_until_idle(server)
    after = _answered(server)
    assert sum(after.values()) == sum(counts.values()) + 1, (counts, after)
    return after["499"] == counts["499"] + 1


@pytest.mark.slow
@pytest.mark.parametrize("stream", [True, False], ids=["stream", "whole"])
def test_client_disconnect_aborts_generation(server, stream):
    """16 x 480 tokens take seconds, so the client leaves mid-generation; an attempt where the answer was
    nevertheless done first tested nothing and does not count."""
    _wait_until_idle(server)
    body = {"model": "tiny", "prompt": PROMPT, "max_tokens": 480, "ignore_eos": True, "stream": stream, "n": 16,
            "logprobs": 5}
    assert any(_hang_up_early(server, body) for _ in range(5)), "in 5 tries the answer was always done first"
    _wait_until_engine_idle(server)
