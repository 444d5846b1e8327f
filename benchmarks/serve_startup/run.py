"""How long `make serve` takes on a fresh clone with a fresh EXCISE_HOME, until the server answers.

    python benchmarks/serve_startup/run.py [--home DIR] [--out benchmarks/results/serve_startup.md]

Clones this repository's HEAD into a temporary folder, runs `make install` there (timed: the install),
then `make serve` (timed until `GET /ready` answers 200: building the default artifacts and starting the
engines), and stops the server with SIGINT. The build's steps are timed from the timestamps of
`make serve`'s own log lines. `--home` keeps EXCISE_HOME (e.g. for `make screenshots` afterwards);
without it a temporary one is used and removed. Run it alone on the machine (under the CPU lock):
the build is CPU-bound.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from datetime import datetime
from pathlib import Path

logger = logging.getLogger("benchmarks.serve_startup")

REPO = Path(__file__).resolve().parents[2]
COMMAND = "python benchmarks/serve_startup/run.py"
#: make serve's log line format (correction/cli.py): "2026-12-02 00:41:07,123 INFO name: message"
LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) \w+ ([\w.]+): (.*)$")
#: the loggers whose lines start a phase of the build (defaults' steps, the model conversion) or the server
PHASE_LOGGERS = ("correction.defaults", "correction.models.embedded")
SERVER_LOGGER = "server."


def clone(target: Path) -> str:
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(target)], check=True)
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=target, check=True, capture_output=True, text=True).stdout.strip()


def timed_make(args: list[str], cwd: Path, env: dict, log: Path) -> float:
    started = time.time()
    with log.open("w") as out:
        subprocess.run(["make", *args], cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, check=True)
    return time.time() - started


def ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/ready", timeout=5) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def serve_until_ready(cwd: Path, env: dict, port: int, log: Path, timeout: float) -> tuple[float, float]:
    """Start `make serve`, wait for /ready; return (start time, seconds until ready)."""
    started = time.time()
    with log.open("w") as out:
        process = subprocess.Popen(["make", "serve", f"PORT={port}"], cwd=cwd, env=env, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    try:
        while not ready(f"http://127.0.0.1:{port}"):
            if process.poll() is not None:
                raise RuntimeError(f"make serve exited with {process.returncode} before it was ready; see {log}")
            if time.time() - started > timeout:
                raise RuntimeError(f"make serve not ready after {timeout:.0f} s; see {log}")
            time.sleep(2)
        return started, time.time() - started
    finally:
        os.killpg(process.pid, signal.SIGINT)  # the whole group: make, excise and vLLM's engine processes
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def phases(log: Path, started: float, ready_s: float) -> list[dict]:
    """Each phase runs from its log line to the next phase's; the last one (the server) until ready."""
    marks: list[tuple[float, str]] = []
    server_seen = False
    for line in log.read_text(errors="replace").splitlines():
        match = LOG_LINE.match(line)
        if not match:
            continue
        stamp, name, message = match.groups()
        at = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()  # asctime is local time
        if name in PHASE_LOGGERS:
            marks.append((at, message))
        elif name.startswith(SERVER_LOGGER) and not server_seen:
            server_seen = True
            marks.append((at, "server: engines loading until /ready"))
    ends = [at for at, _ in marks[1:]] + [started + ready_s]
    return [{"phase": what, "seconds": round(end - at, 1)} for (at, what), end in zip(marks, ends)]


def write(out: Path, result: dict) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    rows = [f"| {p['phase']} | {p['seconds']:.1f} |" for p in result["phases"]]
    out.write_text("\n".join([
        "# `make serve` from a fresh clone with a fresh EXCISE_HOME",
        "",
        f"Command: `{result['command']}` (commit `{result['commit']}`). Machine: {result['machine']}.",
        f"pip read wheels from its cache and `PIP_FIND_LINKS` where present: {result['pip']}.",
        "",
        "| part | seconds |",
        "| --- | --- |",
        f"| `make install` (venv, pip) | {result['install_s']:.1f} |",
        f"| `make serve` until `/ready` answers 200 | {result['serve_ready_s']:.1f} |",
        "",
        "`make serve`'s phases, from the timestamps of its log lines:",
        "",
        "| phase (its first log line) | seconds |",
        "| --- | --- |",
        *rows,
        "",
    ]))
    figure(out.with_suffix(".png"), result)


def figure(path: Path, result: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = ["make install"] + [p["phase"][:60] for p in result["phases"]]
    seconds = [result["install_s"]] + [p["seconds"] for p in result["phases"]]
    fig, ax = plt.subplots(figsize=(9, 0.5 * len(labels) + 1.2))
    ax.barh(labels[::-1], seconds[::-1])
    ax.set_xlabel("seconds")
    ax.set_title(f"make serve on a fresh clone: ready {result['serve_ready_s']:.0f} s after install")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--home", type=Path, help="EXCISE_HOME to build into (must not exist yet); kept afterwards")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--timeout", type=float, default=3600, help="seconds to wait for /ready")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "serve_startup.md")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.home and args.home.exists():
        parser.error(f"--home {args.home} exists; a fresh EXCISE_HOME is the point, pass a new folder")
    work = Path(tempfile.mkdtemp(prefix="serve-startup-"))
    done = False
    try:
        commit = clone(work / "repo")
        home = args.home or work / "home"
        env = {**os.environ, "EXCISE_HOME": str(home)}
        env.pop("PYTHONPATH", None)  # the clone's own code only
        logger.info("make install in %s", work / "repo")
        install_s = timed_make(["install"], work / "repo", env, work / "install.log")
        logger.info("installed in %.1f s; make serve until /ready", install_s)
        started, ready_s = serve_until_ready(work / "repo", env, args.port, work / "serve.log", args.timeout)
        logger.info("ready %.1f s after make serve started", ready_s)
        shutil.copy(work / "serve.log", args.out.with_suffix(".log"))
        write(args.out, {
            "command": COMMAND + (f" --home {args.home}" if args.home else ""), "commit": commit,
            "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f} at the end",
            "pip": f"PIP_FIND_LINKS={os.environ.get('PIP_FIND_LINKS', '')!r}, cache {'off' if os.environ.get('PIP_NO_CACHE_DIR') else 'on'}",
            "install_s": round(install_s, 1), "serve_ready_s": round(ready_s, 1),
            "phases": phases(work / "serve.log", started, ready_s),
        })
        logger.info("wrote %s", args.out)
        done = True
        return 0
    except (subprocess.CalledProcessError, RuntimeError) as error:
        print(f"serve_startup: {error} (logs in {work})", file=sys.stderr)
        return 1
    finally:
        if done:  # a failed run keeps its clone and logs to look at
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
