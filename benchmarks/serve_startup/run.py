"""How long `make serve` takes on a fresh clone with a fresh EXCISE_HOME, until the server answers.

    python benchmarks/serve_startup/run.py [--home DIR] [--out benchmarks/results/serve_startup.md]

Clones this repository's HEAD into a temporary folder, runs `make install` there (timed: the install),
then `make serve` (timed until `GET /ready` answers 200: building the default artifacts and starting the
engines), and stops the server with SIGINT. The build's steps are timed from the times of `make serve`'s
own log lines; its log is saved next to the table, and `--rewrite` rebuilds table and plot from the two. `--home` keeps EXCISE_HOME (e.g. for `make screenshots` afterwards);
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
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
from tools.serve_process import HOST, POLL_S, ServeError, ServerProcess  # noqa: E402

logger = logging.getLogger("benchmarks.serve_startup")

COMMAND = "python benchmarks/serve_startup/run.py"
#: excise's log line format (excise/cli/main.py): "00:41:07 INFO excise.defaults: message"
LOG_LINE = re.compile(r"^(\d\d:\d\d:\d\d) \w+ ([\w.]+): (.*)$")
#: excise's own loggers (vLLM's lines are left out)
PHASE_LOGGERS = ("excise.", "server.")
REQUIRED_S = 600.0  # the project's requirement: serving within 10 minutes of a fresh install on 2 cores
READY = re.compile(r"^all \d+ engine\(s\) ready")
PATH = re.compile(r"(/[^\s/]+)+/([^\s/]+)")


def clone(target: Path) -> str:
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(target)], check=True)
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=target, check=True, capture_output=True, text=True).stdout.strip()


def timed_make(args: list[str], cwd: Path, env: dict, log: Path) -> float:
    started = time.time()
    with log.open("w") as out:
        subprocess.run(["make", *args], cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, check=True)
    return time.time() - started


def phases(log_text: str) -> list[dict]:
    """`make serve`'s steps from its log: from each of excise's log lines to the next, named by the line that
    ends the step (what was done), the last one the line saying every engine is ready. Log times have whole
    seconds; a line before the one above it is after midnight."""
    marks: list[tuple[datetime, str]] = []
    day = timedelta(0)
    for line in log_text.splitlines():
        match = LOG_LINE.match(line)
        if not match or not match.group(2).startswith(PHASE_LOGGERS):
            continue
        at = datetime.strptime(match.group(1), "%H:%M:%S") + day
        if marks and at < marks[-1][0]:
            day += timedelta(days=1)
            at += timedelta(days=1)
        marks.append((at, PATH.sub(r"\2", match.group(3))))  # folder names, not this machine's paths
        if READY.match(match.group(3)):
            break
    return [{"phase": done, "start": at.strftime("%H:%M:%S"), "seconds": (end - at).total_seconds()}
            for (at, _), (end, done) in zip(marks, marks[1:])]


def write(out: Path, result: dict, log_text: str) -> None:
    result = {**result, "phases": phases(log_text)}
    logged = sum(p["seconds"] for p in result["phases"])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".log").write_text(log_text)
    rows = [f"| {p['start']} | {p['phase']} | {p['seconds']:.0f} |" for p in result["phases"]]
    out.write_text("\n".join([
        "# `make serve` from a fresh clone with a fresh EXCISE_HOME",
        "",
        f"Command: `{result['command']}` (clone of commit `{result['commit']}`). Machine: {result['machine']}. "
        f"pip: {result['pip']}.",
        "",
        "| part | seconds |",
        "| --- | --- |",
        f"| `make install` (venv, pip install, uninstalls) | {result['install_s']:.1f} |",
        f"| `make serve` until `GET /ready` answers 200 (polled every {POLL_S:.0f} s) | {result['serve_ready_s']:.1f} |",
        "",
        f"Requirement: ready within {REQUIRED_S:.0f} s after the install: "
        f"**{'met' if result['serve_ready_s'] <= REQUIRED_S else 'not met'}**.",
        "",
        f"`make serve`'s steps from the times of its own log lines (whole seconds; "
        f"[serve_startup.log](serve_startup.log)): they add up to {logged:.0f} s; the other "
        f"{result['serve_ready_s'] - logged:.0f} s are make, Python's imports before the first line and the polling.",
        "",
        "| from | until the log line | seconds |",
        "| --- | --- | --- |",
        *rows,
        "",
    ]))
    figure(out.with_suffix(".png"), result)


def figure(path: Path, result: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = ["make install"] + [p["phase"][:80] for p in result["phases"]]
    seconds = [result["install_s"]] + [p["seconds"] for p in result["phases"]]
    fig, ax = plt.subplots(figsize=(11, 0.4 * len(labels) + 1.2))
    ax.barh(labels[::-1], seconds[::-1])
    ax.set_xlabel("seconds")
    ax.set_title(f"make serve on a fresh clone: install {result['install_s']:.0f} s, "
                 f"then ready after {result['serve_ready_s']:.0f} s")
    ax.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def measure(args: argparse.Namespace, work: Path) -> tuple[dict, str]:
    commit = clone(work / "repo")
    env = {**os.environ, "EXCISE_HOME": str(args.home or work / "home")}
    env.pop("PYTHONPATH", None)  # the clone's own code only
    logger.info("make install in %s", work / "repo")
    install_s = timed_make(["install"], work / "repo", env, work / "install.log")
    logger.info("installed in %.1f s; make serve until /ready", install_s)
    command = ["make", "serve", f"HOST={HOST}", f"PORT={args.port}"]
    with ServerProcess(command, cwd=work / "repo", env=env, port=args.port, log=work / "serve.log",
                       timeout=args.timeout) as server:
        ready_s = server.ready_s
    result = {
        "command": COMMAND + (f" --home {args.home}" if args.home else ""), "commit": commit,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f} at the end",
        "pip": f"PIP_FIND_LINKS={os.environ.get('PIP_FIND_LINKS', '')!r}, "
               f"cache {'off' if os.environ.get('PIP_NO_CACHE_DIR') else 'on'}",
        "install_s": round(install_s, 1), "serve_ready_s": round(ready_s, 1),
    }
    return result, (work / "serve.log").read_text(errors="replace")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--home", type=Path, help="EXCISE_HOME to build into (must not exist yet); kept afterwards")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--timeout", type=float, default=3600, help="seconds to wait for /ready")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "serve_startup.md")
    parser.add_argument("--rewrite", action="store_true",
                        help="measure nothing: rewrite the table, plot and phases from the saved .json and .log")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.rewrite:
        try:
            saved = json.loads(args.out.with_suffix(".json").read_text())
            log_text = args.out.with_suffix(".log").read_text()
        except (OSError, json.JSONDecodeError) as error:
            parser.error(f"--rewrite needs {args.out.with_suffix('.json')} and its .log from a run: {error}")
        write(args.out, saved, log_text)
        return 0
    if args.home and args.home.exists():
        parser.error(f"--home {args.home} exists; a fresh EXCISE_HOME is the point, pass a new folder")
    work = Path(tempfile.mkdtemp(prefix="serve-startup-"))
    try:
        result, log_text = measure(args, work)
    except (subprocess.CalledProcessError, ServeError) as error:
        print(f"serve_startup: {error} (logs in {work})", file=sys.stderr)
        return 1
    write(args.out, result, log_text)
    logger.info("wrote %s", args.out)
    shutil.rmtree(work, ignore_errors=True)  # a failed run keeps its clone and logs to look at
    return 0


if __name__ == "__main__":
    sys.exit(main())
