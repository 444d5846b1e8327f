"""A server started as a user starts it (`make serve`, `excise serve ...`), waited on until `/ready`
answers 200, and stopped with its whole process group on exit, Ctrl-C or failure.

Used by `tools/screenshots.py` and `benchmarks/serve_startup/run.py`.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"  # `make serve`'s default: a loopback bind needs no API key
POLL_S = 2.0


class ServeError(RuntimeError):
    """The server did not come up; the message is one line and names its log."""


def port_free(port: int, host: str = HOST) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex((host, port)) != 0


def answers_ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/ready", timeout=5) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


class ServerProcess:
    """`with ServerProcess(command, cwd=..., port=..., log=...) as server:` runs `command` until the block ends.

    `started` (epoch seconds) and `ready_s` (seconds from start to the first 200 from /ready) are set on entry.
    """

    def __init__(self, command: list[str], *, cwd: Path, port: int, log: Path, timeout: float,
                 env: dict[str, str] | None = None, stop_timeout: float = 60.0) -> None:
        self.command, self.cwd, self.port, self.log, self.timeout = command, cwd, port, log, timeout
        self.env, self.stop_timeout = env, stop_timeout
        self.url = f"http://{HOST}:{port}"
        self.process: subprocess.Popen | None = None
        self.started = 0.0
        self.ready_s = 0.0

    def __enter__(self) -> ServerProcess:
        if not port_free(self.port):
            raise ServeError(f"port {self.port} is already in use; stop what listens there or pick another port")
        logger.info("starting `%s` (log: %s)", " ".join(self.command), self.log)
        self.started = time.time()
        with self.log.open("w") as out:
            # A session of its own, so stopping reaches make, excise and vLLM's engine processes alike.
            self.process = subprocess.Popen(self.command, cwd=self.cwd, env=self.env, stdout=out,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _wait_ready(self) -> None:
        last_note = self.started
        while not answers_ready(self.url):
            now = time.time()
            if self.process.poll() is not None:
                raise ServeError(f"`{' '.join(self.command)}` exited with {self.process.returncode} before it was "
                                 f"ready; see {self.log}")
            if now - self.started > self.timeout:
                raise ServeError(f"not ready after {self.timeout:.0f} s; see {self.log}")
            if now - last_note >= 60:  # a first build takes minutes: say that it is still going
                logger.info("waiting for %s/ready (%.0f s so far)", self.url, now - self.started)
                last_note = now
            time.sleep(POLL_S)
        self.ready_s = time.time() - self.started
        logger.info("ready after %.1f s", self.ready_s)

    def stop(self) -> None:
        """SIGINT to the process group (a clean shutdown, as Ctrl-C would); SIGKILL to whatever of the group
        is still there after `stop_timeout` (a hung server, or a child that ignores SIGINT)."""
        if self.process is None or not self._signal(0):
            return
        logger.info("stopping the server")
        self._signal(signal.SIGINT)
        deadline = time.time() + self.stop_timeout
        try:
            self.process.wait(timeout=self.stop_timeout)
        except subprocess.TimeoutExpired:
            pass
        while self._signal(0) and time.time() < deadline:  # the group outlives its leader while children exit
            time.sleep(0.2)
        if self._signal(0):
            logger.warning("the server did not stop within %.0f s; killing what is left of it", self.stop_timeout)
            self._signal(signal.SIGKILL)
        self.process.wait()

    def _signal(self, sig: int) -> bool:
        """Send `sig` to the server's process group; False when the group is gone."""
        try:
            os.killpg(self.process.pid, sig)
            return True
        except ProcessLookupError:
            return False
