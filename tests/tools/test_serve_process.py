"""tools/serve_process.py on a real (tiny) HTTP server process: waits for /ready, says when the command
dies first, refuses a busy port, and leaves no process of the group behind."""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tools.serve_process import ServeError, ServerProcess, answers_ready  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie no one reaped yet counts as gone
    return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"


def _server(tmp_path: Path, port: int, **kwargs) -> ServerProcess:
    # A file named `ready` answers GET /ready with 200; a background `sleep` that ignores SIGINT (as
    # background jobs of a non-interactive shell do) stands for an engine process that outlives its parent.
    (tmp_path / "ready").write_text("ok")
    script = (f"sleep 300 & echo $! > {tmp_path}/child.pid; "
              f"exec {sys.executable} -m http.server {port} --bind 127.0.0.1 --directory {tmp_path}")
    return ServerProcess(["bash", "-c", script], cwd=tmp_path, port=port, log=tmp_path / "server.log",
                         timeout=30, **kwargs)


def test_ready_then_the_whole_group_is_stopped(tmp_path):
    port = _free_port()
    with _server(tmp_path, port, stop_timeout=3) as server:
        assert answers_ready(server.url) and server.ready_s > 0
        child = int((tmp_path / "child.pid").read_text())
        assert _alive(child)
    assert not answers_ready(server.url)
    deadline = time.time() + 5
    while _alive(child) and time.time() < deadline:
        time.sleep(0.1)
    assert not _alive(child)


def test_a_command_that_dies_first_names_its_log(tmp_path):
    server = ServerProcess(["bash", "-c", "echo broken; exit 3"], cwd=tmp_path, port=_free_port(),
                           log=tmp_path / "server.log", timeout=30)
    with pytest.raises(ServeError, match=r"exited with 3 before it was ready; see .*server\.log"):
        server.__enter__()
    assert (tmp_path / "server.log").read_text() == "broken\n"


def test_a_busy_port_is_refused(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ServeError, match=f"port {port} is already in use"):
            _server(tmp_path, port).__enter__()
    assert not (tmp_path / "server.log").exists()
