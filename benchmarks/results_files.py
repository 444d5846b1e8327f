"""What every benchmark's results files share: the machine line, a watch on who else used the CPU during the
run, the JSON record and matplotlib figures written to files (Agg backend, never a display)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import threading
import time
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def machine(*, with_torch: bool = True) -> str:
    """CPU model and cores; with torch's version and thread count where the benchmark computes in-process."""
    lines = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), platform.processor())
    text = f"{os.cpu_count()}-core CPU ({cpu or platform.machine()})"
    if with_torch:
        import torch

        text += f", torch {torch.__version__}, {torch.get_num_threads()} threads"
    return text


def commit() -> str:
    """The short hash of the checkout that measured a result ("unknown" outside git), recorded with every
    stage of a benchmark that is measured in pieces over several commits."""
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def resumed_state(paths: tuple[Path, ...], key: dict) -> dict:
    """What a benchmark measured in pieces goes on from: the first of `paths` (its work folder's state, then
    its committed results JSON, so a run cut short goes on in a later session on another machine) that was
    measured with the same settings `key`, less the one-run fields `command` and `machine`; else nothing."""
    for path in paths:
        state = json.loads(path.read_text()) if path.is_file() else {}
        if state.get("key") == key:
            return {k: v for k, v in state.items() if k not in ("command", "machine")}
    return {"key": key, "rows": {}}


def _busy_ticks() -> int:
    """CPU ticks this machine spent running anything since boot, all cores: user, nice, system, irq,
    softirq (not idle, iowait, or time the hypervisor stole; guest time is inside user already)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return sum(fields[0:3]) + fields[5] + fields[6]


def _processes() -> dict[tuple[int, int], tuple[int, int]]:
    """(pid, start time) -> (parent pid, user + system ticks) of every process now."""
    out = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{name}/stat").read_text()
        except OSError:  # ended meanwhile
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # the command name may hold spaces and parentheses
        out[(int(name), int(fields[19]))] = (int(fields[1]), int(fields[11]) + int(fields[12]))
    return out


class CpuWatch:
    """Samples, every `interval` seconds, the CPU time of this process and its descendants (vLLM engines,
    servers, workers); at the end, the rest of the machine's busy time is what other jobs used meanwhile.
    The last `interval` of a descendant that ends between two samples counts as someone else's, so the
    figure for other jobs errs on the high side."""

    def __init__(self, interval: float = 2.0):
        self._interval, self._stop = interval, threading.Event()
        self._started, self._busy = time.monotonic(), _busy_ticks()
        self.load_start = os.getloadavg()[0]
        self._first: dict[tuple[int, int], int] = {}  # ticks a process had when first seen (0 if born later)
        self._last: dict[tuple[int, int], int] = {}
        self._sample(first=True)
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _sample(self, first: bool = False) -> None:
        processes = _processes()
        children: dict[int, list[tuple[int, int]]] = {}
        for key, (parent, _) in processes.items():
            children.setdefault(parent, []).append(key)
        ours = [key for key in processes if key[0] == os.getpid()]
        for key in ours:  # breadth first over the tree below this process
            ours += [child for child in children.get(key[0], []) if child not in ours]
        for key in ours:
            ticks = processes[key][1]
            self._first.setdefault(key, ticks if first else 0)
            self._last[key] = ticks

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            self._sample()

    def summary(self) -> dict:
        """Wall time, and core-seconds used by this benchmark and by everything else, so far."""
        self._sample()
        wall = time.monotonic() - self._started
        busy = (_busy_ticks() - self._busy) / CLOCK_TICKS
        ours = sum(self._last[key] - self._first[key] for key in self._last) / CLOCK_TICKS
        return {"wall_s": wall, "busy_core_s": busy, "benchmark_core_s": ours, "others_core_s": max(0.0, busy - ours),
                "load_start": self.load_start, "load_end": os.getloadavg()[0]}

    def close(self) -> dict:
        self._stop.set()
        self._thread.join()
        return self.summary()


def sharing(cpu: dict) -> str:
    """The machine's load during the run, in words, from a `CpuWatch.summary()`."""
    others = cpu["others_core_s"] / cpu["wall_s"]
    return (f"over the {cpu['wall_s'] / 60:.0f}-minute run, other jobs used {others:.2f} cores on average "
            f"({cpu['others_core_s']:.0f} core-seconds; the benchmark itself {cpu['benchmark_core_s']:.0f}); load "
            f"average {cpu['load_start']:.1f} at the start, {cpu['load_end']:.1f} at the end")


def write_json(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    tmp.replace(path)  # a crash never leaves half a record


def figure(ncols: int = 1, size: tuple[float, float] = (6.4, 4.2)):
    """A figure and its axes (one per column) for a PNG file."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, ncols, figsize=size, squeeze=False)
    return fig, list(axes[0])


def save_figure(fig, path: Path, dpi: int = 120) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
