"""Scoring cost on a GPU: LRP next to Wanda, gradient and a plain forward+backward.

Cost does not depend on the weights' values, so the models are Llama-architecture models
of SmolLM2-135M, TinyLlama-1.1B and Llama-2-7B shape with random weights (no weights can
reach the GPU machine), fed random token windows. Every method scores the same windows in
the same process, after one warm-up window; times are CUDA-synchronised wall clock.
The table reports seconds per 1k reference tokens and the ratio to one plain
forward+backward pass (the issue's target for LRP: at most 3x), and LRP / Wanda
(the paper: about 5x on an A100).

    python benchmarks/scoring_gpu/run.py --device cuda --dtype bfloat16
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from correction.scoring import score_model

SHAPES = {
    "smollm2-135m": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                         num_key_value_heads=3, vocab_size=49152, tie_word_embeddings=True),
    "tinyllama-1.1b": dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
                           num_key_value_heads=4, vocab_size=32000),
    "llama2-7b": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                      num_key_value_heads=32, vocab_size=32000),
}
METHODS = ("wanda", "gradient", "lrp")
RESULTS = Path(__file__).resolve().parents[1] / "results"


def build(shape: str, device: str, dtype: torch.dtype) -> LlamaForCausalLM:
    config = LlamaConfig(max_position_embeddings=4096, **SHAPES[shape])
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM(config).to(dtype)
    return model.eval()


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def plain_forward_backward(model, windows: torch.Tensor, device: str) -> float:
    """Seconds for a plain LM-loss forward+backward over every window (weights' grads on)."""
    started = time.perf_counter()
    for window in windows:
        ids = window[None].to(device)
        model(input_ids=ids, labels=ids).loss.backward()
        model.zero_grad(set_to_none=True)
    synchronize(device)
    return time.perf_counter() - started


def method_seconds(model, windows: torch.Tensor, method: str, device: str) -> tuple[float, int | None]:
    score_model(model, windows[:1], method, progress=False)  # warm-up (kernels, allocator)
    synchronize(device)
    started = time.perf_counter()
    result = score_model(model, windows, method, progress=False)
    synchronize(device)
    return time.perf_counter() - started, result.peak_cuda_bytes


def measure(shape: str, args) -> list[dict]:
    dtype = getattr(torch, args.dtype)
    model = build(shape, args.device, dtype)
    windows = torch.randint(0, model.config.vocab_size, (args.windows, args.length),
                            generator=torch.Generator().manual_seed(0))
    tokens = windows.numel()
    plain_forward_backward(model, windows[:1], args.device)
    plain = plain_forward_backward(model, windows, args.device)
    rows = [dict(shape=shape, method="forward+backward", seconds=plain, tokens=tokens, peak=None)]
    for method in METHODS:
        try:
            seconds, peak = method_seconds(model, windows, method, args.device)
        except Exception:  # one failing method must not lose the others' numbers
            logging.exception("%s %s failed", shape, method)
            continue
        rows.append(dict(shape=shape, method=method, seconds=seconds, tokens=tokens, peak=peak))
        logging.info("%s %s: %.3f s", shape, method, seconds)
    del model
    if args.device.startswith("cuda"):
        torch.cuda.empty_cache()
    return rows


def table(rows: list[dict], args, device_name: str) -> str:
    lines = [
        "# Scoring cost on GPU: LRP vs Wanda vs gradient vs plain forward+backward",
        "",
        f"Command: `python benchmarks/scoring_gpu/run.py --device {args.device} --dtype {args.dtype} "
        f"--windows {args.windows} --length {args.length}`",
        f"Machine: {device_name}; {args.windows} random windows x {args.length} tokens, batch 1, {args.dtype}, "
        "random-weight Llama-architecture models of the named shapes (cost does not depend on weight values).",
        "",
        "| model shape | method | s / 1k tokens | x forward+backward | x wanda | peak GPU memory (GiB) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for shape in dict.fromkeys(r["shape"] for r in rows):
        group = {r["method"]: r for r in rows if r["shape"] == shape}
        plain = group["forward+backward"]["seconds"]
        wanda = group["wanda"]["seconds"] if "wanda" in group else float("nan")
        for method, row in group.items():
            peak = f"{row['peak'] / 2**30:.1f}" if row["peak"] else "-"
            lines.append(
                f"| {shape} | {method} | {1000 * row['seconds'] / row['tokens']:.4f} | "
                f"{row['seconds'] / plain:.2f} | {row['seconds'] / wanda:.2f} | {peak} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    parser.add_argument("--shapes", default=",".join(SHAPES))
    parser.add_argument("--windows", type=int, default=8)
    parser.add_argument("--length", type=int, default=2048)
    parser.add_argument("--out", type=Path, default=RESULTS / "scoring_gpu.md")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    rows = [row for shape in args.shapes.split(",") for row in measure(shape, args)]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(table(rows, args, device_name))
    print(args.out.read_text())


if __name__ == "__main__":
    main()
