"""The scoring-memory benchmark's report: Markdown tables, the same numbers as JSON, a PNG of peak memory vs length."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from benchmarks.results_files import figure, machine, save_figure, sharing, write_json

GB = 2**30


def describe_machine(device: str) -> str:
    if device.startswith("cuda"):
        return f"{torch.cuda.get_device_name()}, torch {torch.__version__}"
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GB
    return f"{machine(with_torch=False)}, {memory:.0f} GB memory, torch {torch.__version__}"


def _rows(state: dict) -> dict[str, dict[tuple[str, bool], dict[int, dict]]]:
    """model -> (method, recompute) -> length -> measurement."""
    rows: dict = {}
    for key, value in state["measurements"].items():
        model, method, recompute, length = key.split("|")
        rows.setdefault(model, {}).setdefault((method, recompute == "True"), {})[int(length)] = value
    return rows


def _peak(m: dict | None, limit: int, over_model: bool = False) -> str:
    if m is None:
        return "-"
    if m["status"] == "exceeded":
        return f"> {limit / GB:.0f}"
    if m["status"] != "ok":
        return "failed"
    if over_model:
        return f"{(m['peak_bytes'] - m['loaded_bytes']) / GB:.2f}"
    return f"{m['peak_bytes'] / GB:.2f}"


def _speed(m: dict | None) -> str:
    return "-" if m is None or m["status"] != "ok" else f"{1000 * m['seconds'] / m['tokens']:.2f}"


def _ratio(a: dict | None, b: dict | None, key: str) -> float | None:
    if not a or not b or a["status"] != "ok" or b["status"] != "ok":
        return None
    return a[key] / b[key]


def targets(rows: dict, lengths: list[int]) -> dict[str, dict]:
    """The issue's targets per model, at the longest and shortest lengths measured."""
    out = {}
    short, long = min(lengths), max(lengths)
    for model, configs in rows.items():
        lrp, lrp_kept, wanda = configs.get(("lrp", True), {}), configs.get(("lrp", False), {}), configs.get(("wanda", False), {})
        entry = {"length": long}
        entry["lrp_recompute_over_wanda_peak"] = _ratio(lrp.get(long), wanda.get(long), "peak_bytes")
        entry["lrp_kept_over_wanda_peak"] = _ratio(lrp_kept.get(long), wanda.get(long), "peak_bytes")
        if all(m and m["status"] == "ok" for m in (lrp.get(short), lrp.get(long), wanda.get(short), wanda.get(long))):
            entry["lrp_recompute_growth_gb"] = (lrp[long]["peak_bytes"] - lrp[short]["peak_bytes"]) / GB
            entry["wanda_growth_gb"] = (wanda[long]["peak_bytes"] - wanda[short]["peak_bytes"]) / GB
        entry["recompute_time_ratio"] = {
            method: {n: _ratio(configs.get((method, True), {}).get(n), configs.get((method, False), {}).get(n), "seconds")
                     for n in lengths}
            for method in ("gradient", "lrp")
        }
        out[model] = entry
    return out


def _fmt(value: float | None, digits: int = 2, suffix: str = "") -> str:
    return "-" if value is None else f"{value:.{digits}f}{suffix}"


def markdown(state: dict, command: str, name: str) -> str:
    rows, limit = _rows(state), state["limit_bytes"]
    lengths = sorted({int(k.split("|")[3]) for k in state["measurements"]})
    settings = state["settings"]
    load = f"; {sharing(state['cpu'])} (the last invocation, which measured what was missing)" if "cpu" in state else ""
    header = " / ".join(f"{n}" for n in lengths)
    lines = [
        f"# Scoring memory and time by window length ({settings['device']}, {settings['dtype']})",
        "",
        f"Command: `{command}`. Machine: {describe_machine(settings['device'])}{load}. Each configuration scores "
        f"{settings['tokens']} random tokens (as windows of the given length, batch 1) at granularity weight in its own "
        "process; peak = that process's peak resident memory (model + scoring) on CPU, peak allocated memory on a GPU; "
        "over model = peak minus the memory right after the model was built. lrp uses its pruning aggregation "
        f"(token_absolute). GB = 2^30 bytes. `> {limit / GB:.0f}` = stopped when it passed that much resident memory.",
        "",
    ]
    for model, configs in rows.items():
        lines += [f"## {model}", "", f"| method | recompute | peak GB at {header} | over model GB at {header} | "
                  f"s per 1k tokens at {header} |", "|---|---|---|---|---|"]
        for (method, recompute), by_length in configs.items():
            peaks = " / ".join(_peak(by_length.get(n), limit) for n in lengths)
            over = " / ".join(_peak(by_length.get(n), limit, over_model=True) for n in lengths)
            speed = " / ".join(_speed(by_length.get(n)) for n in lengths)
            lines.append(f"| {method} | {'yes' if recompute else 'no'} | {peaks} | {over} | {speed} |")
        lines.append("")
    lines += ["## Targets", "",
              "| model | lrp+recompute / wanda peak | lrp (kept) / wanda peak | peak growth lrp+recompute vs wanda "
              "(GB, shortest → longest) | time with / without recompute (gradient; lrp) |", "|---|---|---|---|---|"]
    for model, t in targets(rows, lengths).items():
        growth = "-" if "wanda_growth_gb" not in t else f"{t['lrp_recompute_growth_gb']:.2f} vs {t['wanda_growth_gb']:.2f}"
        times = "; ".join(" / ".join(_fmt(t["recompute_time_ratio"][m][n]) for n in lengths) for m in ("gradient", "lrp"))
        lines.append(f"| {model} (at {t['length']}) | {_fmt(t['lrp_recompute_over_wanda_peak'])} | "
                     f"{_fmt(t['lrp_kept_over_wanda_peak'])} | {growth} | {times} |")
    projected = state.get("projection")
    if projected:
        peaks = "; ".join(f"{dtype} weights: " + ", ".join(f"{n} tokens {p / GB:.1f} GB" for n, p in by_length.items())
                          for dtype, by_length in projected["peak_bytes"].items())
        lines += ["", f"Projection, not a measurement: {projected['target']} with lrp + recompute, "
                  f"from {projected['source']}'s fit (over the model: {projected['bytes_per_prunable_weight']:.1f} bytes per "
                  f"prunable weight + {projected['bytes_per_token'] / 2**20:.2f} MB per token, the latter scaled by layers × "
                  f"hidden size): {peaks}. `benchmarks/scoring_gpu/run.py` measures it on a GPU."]
    return "\n".join(lines) + "\n"


def plot(state: dict, path: Path) -> None:
    rows, limit = _rows(state), state["limit_bytes"]
    fig, axes = figure(len(rows), size=(6 * len(rows), 4.2))
    for ax, (model, configs) in zip(axes, rows.items()):
        for (method, recompute), by_length in configs.items():
            lengths = sorted(by_length)
            peaks = [by_length[n]["peak_bytes"] / GB if by_length[n]["status"] == "ok" else limit / GB for n in lengths]
            line, = ax.plot(lengths, peaks, marker="o", linestyle="-" if recompute or method == "wanda" else "--",
                            label=f"{method}{' + recompute' if recompute else ''}")
            for n, p in zip(lengths, peaks):
                if by_length[n]["status"] != "ok":
                    ax.plot([n], [p], marker="x", markersize=12, color=line.get_color())
        ax.set_title(model)
        ax.set_xlabel("window length (tokens)")
        ax.set_ylabel("peak memory (GB)")
        ax.set_xticks(sorted({n for c in configs.values() for n in c}))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Scoring peak memory vs window length (x: stopped at the memory limit)")
    save_figure(fig, path)


def write_report(state: dict, out: Path, name: str, command: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.md").write_text(markdown(state, command, name))
    lengths = sorted({int(k.split("|")[3]) for k in state["measurements"]})
    summary = {"command": command, "machine": describe_machine(state["settings"]["device"]), **state,
               "targets": targets(_rows(state), lengths)}
    write_json(out / f"{name}.json", summary)
    plot(state, out / f"{name}.png")
