"""artifacts.md and artifacts.png, entirely from the benchmark's JSON record (see run.py)."""

from __future__ import annotations

from pathlib import Path

from benchmarks.results_files import figure, save_figure, sharing

NOT_RUN = ["| not run |"]


def size_table(rows: list[dict]) -> list[str]:
    return [
        f"| {r['sparsity']:.0%} | {r['dtype']} | {r['dense_bytes'] / 1e6:.1f} | {r['sparse_bytes'] / 1e6:.1f} | "
        f"{r['ratio']:.3f} | {r['pruned_tensors_ratio']:.3f} | {r['sparse_to_dense_s']:.1f} |"
        for r in rows
    ]


def vllm_table(rows: list[dict]) -> list[str]:
    return [
        f"| {r['model']} | {r['decode_tokens_per_s']:.1f} | {r['ms_per_output_token']:.1f} | {r['speedup']:.2f}× "
        f"({', '.join(f'{x:.2f}' for x in r['speedup_repeats'])}) | {r['engine_load_s']:.1f} |"
        for r in rows
    ]


def perplexity_table(ppl: dict) -> list[str]:
    return [
        f"| masked model (50% neurons zeroed) | {ppl['masked']:.4f} |",
        f"| shrunk export (50% neurons removed) | {ppl['shrunk']:.4f} |",
        f"| relative difference | {ppl['relative_difference']:.2e} |",
    ]


def markdown(record: dict) -> list[str]:
    settings, sections = record["settings"], record["sections"]
    vllm = sections.get("vllm")
    binding = (vllm[0]["environment"].get("VLLM_CPU_OMP_THREADS_BIND") if vllm else None) or "auto (default)"
    cpu = f"; {sharing(record['cpu'])}" if "cpu" in record else ""
    batch, prompt, out, repeats = (settings[k] for k in ("batch", "prompt_tokens", "output_tokens", "repeats"))
    return [
        "# Artifacts: sparse checkpoint size, load time, vLLM decode speed of shrunk models",
        "",
        f"Command: `{record['command']}` (one run; numbers also in `artifacts.json`, with the per-repeat timings). "
        "Model: SmolLM2-135M-Instruct as embedded (Q4_1 GGUF dequantized to fp32). Masks: magnitude (row-wise |W| for "
        "unstructured; neuron = ‖input rows‖·‖output column‖, the same count per layer); sizes depend only on the count "
        "pruned, speed only on the shrunk shape, not on the method.",
        "",
        f"Machine: {record['machine']}{cpu}.",
        "",
        "## Sparse checkpoint size (unstructured, row-wise)",
        "",
        "Embeddings (tied, 28.3M of 134.5M parameters) and norms are never pruned and stay dense, so the whole "
        "checkpoint cannot reach the pruned tensors' ratio; the 0.57 target holds for the pruned tensors "
        "(closed form at 50%: 0.531 fp32, 0.5625 bf16).",
        "",
        "| sparsity | dtype | dense MB | sparse MB | whole file ratio | pruned tensors ratio | sparse → dense (s) |",
        "|---|---|---|---|---|---|---|",
        *(size_table(sections["sizes"]) if "sizes" in sections else NOT_RUN),
        "",
        f"## Load time in transformers (fp32, best of {settings['load_rounds']}, seconds)",
        "",
        "| format | load s |",
        "|---|---|",
        *([f"| {r['format']} | {r['load_s']:.2f} |" for r in sections["loads"]] if "loads" in sections else NOT_RUN),
        "",
        f"## vLLM decode: dense vs shrunk (vllm-cpu 0.32, fp32, enforce_eager, batch {batch}, "
        f"{prompt}-token prompts, {out} output tokens, median of {repeats})",
        "",
        f"Decode time = time(max_tokens={out}) − time(max_tokens=1) for the same batch; all engines with the same "
        f"thread binding (VLLM_CPU_OMP_THREADS_BIND={binding}, which binds 1 of the 2 cores). Absolute numbers are "
        "for this shared 2-core CPU; the ratio is the result. Per repeat: dense's median decode time / this "
        "engine's decode time in that repeat.",
        "",
        "| model | decode tokens/s | time per output token (ms, per batch step) | speed-up vs dense (per repeat) "
        "| engine load s |",
        "|---|---|---|---|---|",
        *(vllm_table(vllm) if vllm else NOT_RUN),
        "",
        f"## Perplexity: shrunk == masked ({settings['perplexity_spec']}, evaluation split, sequential windows)",
        "",
        "| model | perplexity |",
        "|---|---|",
        *(perplexity_table(sections["perplexity"]) if "perplexity" in sections else NOT_RUN),
        "",
        "![sparse checkpoint ratio and vLLM decode speed-up](artifacts.png)",
        "",
    ]


def plot(record: dict, path: Path) -> Path:
    """Left: sparse checkpoint / dense size vs sparsity per dtype. Right: vLLM decode speed-up per model."""
    fig, (left, right) = figure(ncols=2, size=(11, 4.2))
    rows = record["sections"].get("sizes", [])
    for dtype in dict.fromkeys(r["dtype"] for r in rows):
        points = sorted((100 * r["sparsity"], r["ratio"], r["pruned_tensors_ratio"]) for r in rows if r["dtype"] == dtype)
        x, whole, pruned = zip(*points)
        line = left.plot(x, whole, marker="o", label=f"{dtype}, whole file")[0]
        left.plot(x, pruned, marker="s", linestyle="--", color=line.get_color(), label=f"{dtype}, pruned tensors")
    left.axhline(1, color="grey", linewidth=1)
    left.set(xlabel="row-wise sparsity (%)", ylabel="sparse checkpoint / dense size", title="Sparse checkpoint size")
    vllm = record["sections"].get("vllm", [])
    for i, r in enumerate(vllm):
        right.bar(i, r["speedup"], color="tab:blue" if i else "grey", alpha=0.6)
        right.plot([i] * len(r["speedup_repeats"]), r["speedup_repeats"], "k.", label="per repeat" if i == 0 else None)
    right.axhline(1, color="grey", linewidth=1)
    right.set_xticks(range(len(vllm)), [r["model"] for r in vllm])
    right.set(ylabel="decode speed-up vs dense (median)", title="vLLM decode, shrunk MLP")
    for axis, empty in ((left, not rows), (right, not vllm)):
        if empty:
            axis.text(0.5, 0.5, "not run", ha="center", transform=axis.transAxes)
        else:
            axis.legend(fontsize=7)
    return save_figure(fig, path)


def render(record: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(markdown(record)))
    plot(record, out.with_suffix(".png"))
