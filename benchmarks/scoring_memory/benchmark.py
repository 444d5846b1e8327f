"""Scoring memory and time: the measurement behind `run.py` (and `../scoring_gpu/run.py`).

    python benchmarks/scoring_memory/run.py [--models smollm2 tinyllama-1.1b] [--lengths 512 1024 2048]
        [--tokens 2048] [--device cpu] [--dtype float32] [--memory-limit-gb 20] [--report-only]

Models: the embedded SmolLM2-135M, and random-weight Llama models of TinyLlama-1.1B's and
Llama-2-7B's shapes (time and memory do not depend on the weights' values; no such weights
are on this machine), fed random token windows. Every configuration scores the same number
of tokens (`--tokens`: 4 x 512, 2 x 1024, 1 x 2048 by default), at granularity weight, the
pruning default (one fp32 running sum per weight), lrp with its pruning aggregation.

Each measurement runs alone in its own spawned process, so its peak is that process's own:
on CPU the peak resident memory (VmHWM: model plus scoring), on a GPU the peak allocated
memory. "over model" is the peak minus the memory right after the model was built, i.e.
what scoring itself needs. A CPU worker whose resident memory passes --memory-limit-gb is
stopped and reported as exceeding it. Results are kept per measurement in the state folder
(default `EXCISE_HOME/bench/<name>`), so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import torch
import torch.multiprocessing as mp

from excise.home import excise_home
from excise.pruning.config import PRUNE_SCORER_DEFAULTS
from excise.scoring.run import peak_rss_bytes

from benchmarks.results_files import CpuWatch
from report import write_report  # noqa: E402  (beside this file; the scripts put it on sys.path)

logger = logging.getLogger("benchmarks.scoring_memory")

RESULTS = Path(__file__).resolve().parents[1] / "results"
#: Llama-architecture shapes of random-weight models (SmolLM2 itself is loaded from its folder)
SHAPES = {
    "tinyllama-1.1b": dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
                           num_key_value_heads=4, vocab_size=32000, max_position_embeddings=2048),
    "llama2-7b": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                      num_key_value_heads=32, vocab_size=32000, max_position_embeddings=4096),
}
#: (method, recompute): wanda runs no backward pass, so it has nothing to recompute
CONFIGS = (("wanda", False), ("gradient", False), ("gradient", True), ("lrp", False), ("lrp", True))


def _resident_bytes(pid: int | str = "self") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _build(model: str, device: str, dtype: str):
    from excise.models.loading import load_model
    from transformers import LlamaConfig, LlamaForCausalLM

    if model == "smollm2":
        return load_model("smollm2", dtype=dtype, device=device).model
    torch.manual_seed(0)
    with torch.device(device):
        built = LlamaForCausalLM(LlamaConfig(**SHAPES[model])).to(getattr(torch, dtype))
    return built.eval()


def _measure(results, model: str, method: str, recompute: bool, length: int, args: dict) -> None:
    from excise.scoring import score_model

    torch.set_num_threads(args["threads"])
    built = _build(model, args["device"], args["dtype"])
    cuda = args["device"].startswith("cuda")
    loaded = torch.cuda.memory_allocated() if cuda else _resident_bytes()
    windows = torch.randint(0, built.config.vocab_size, (args["tokens"] // length, length),
                            generator=torch.Generator().manual_seed(0))
    params = PRUNE_SCORER_DEFAULTS.get(method, {})
    started = time.perf_counter()
    result = score_model(built, windows, method, progress=False, recompute=recompute, **params)
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    peak = result.peak_cuda_bytes if cuda else peak_rss_bytes()
    results.send({"status": "ok", "seconds": seconds, "tokens": int(windows.numel()), "peak_bytes": peak,
                 "loaded_bytes": loaded, "memory": "peak allocated (GPU)" if cuda else "peak RSS (VmHWM)"})


def measure(model: str, method: str, recompute: bool, length: int, args: dict, limit_bytes: int) -> dict:
    """One configuration in a fresh spawned process, stopped if it passes the memory limit (CPU)."""
    context = mp.get_context("spawn")
    results, sender = context.Pipe(duplex=False)
    worker = context.Process(target=_measure, args=(sender, model, method, recompute, length, args))
    worker.start()
    seen = 0
    try:
        while True:
            if results.poll(0.5):
                return results.recv()
            if not worker.is_alive():
                return {"status": "failed", "exit_code": worker.exitcode}
            if not args["device"].startswith("cuda"):
                seen = max(seen, _resident_bytes(worker.pid))
                if seen > limit_bytes:
                    return {"status": "exceeded", "limit_bytes": limit_bytes}
    finally:
        if worker.is_alive():
            worker.kill()
        worker.join()


def _parameter_counts(shape: str) -> tuple[int, int]:
    """(all parameters, parameters of the linears excise prunes) of a shape, counted on `meta`."""
    from transformers import LlamaConfig, LlamaForCausalLM

    with torch.device("meta"):
        model = LlamaForCausalLM(LlamaConfig(**SHAPES[shape]))
    prunable = sum(m.weight.numel() for layer in model.model.layers for m in layer.modules() if isinstance(m, torch.nn.Linear))
    return sum(p.numel() for p in model.parameters()), prunable


def projection(state: dict, source: str = "tinyllama-1.1b", target: str = "llama2-7b") -> dict | None:
    """`target`'s lrp + recompute peak at each measured length, scaled from `source`'s measurements.

    Not a measurement: the memory over the model is fitted as intercept + slope * tokens on the
    source; the intercept (the fp32 sums and the score tensors, per prunable weight) scales with
    the prunable weights, the slope (layer inputs kept, one layer's activations, logits) with
    layers x hidden size; the model's own weights are counted in float32 and in bfloat16 (the
    fitted part keeps the run's own activation dtype, so it errs high for a bfloat16 run).
    """
    runs = {int(k.split("|")[3]): v for k, v in state["measurements"].items()
            if k.startswith(f"{source}|lrp|True|") and v["status"] == "ok"}
    if len(runs) < 2:
        return None
    short, long = min(runs), max(runs)
    over = {n: runs[n]["peak_bytes"] - runs[n]["loaded_bytes"] for n in (short, long)}
    slope = (over[long] - over[short]) / (long - short)
    intercept = over[short] - slope * short
    (_, prunable_s), (total_t, prunable_t) = _parameter_counts(source), _parameter_counts(target)
    width = {name: SHAPES[name]["num_hidden_layers"] * SHAPES[name]["hidden_size"] for name in (source, target)}
    peaks = {dtype: {n: total_t * size + intercept * prunable_t / prunable_s + slope * n * width[target] / width[source]
                     for n in sorted(runs)}
             for dtype, size in (("float32", 4), ("bfloat16", 2))}
    return {"source": source, "target": target, "peak_bytes": peaks,
            "bytes_per_prunable_weight": intercept / prunable_s, "bytes_per_token": slope}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["smollm2", "tinyllama-1.1b"], choices=["smollm2", *SHAPES])
    parser.add_argument("--lengths", nargs="+", type=int, default=[512, 1024, 2048])
    parser.add_argument("--tokens", type=int, default=2048, help="tokens scored per configuration (default 2048)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--memory-limit-gb", type=float, default=20.0, help="stop a CPU worker above this RSS")
    parser.add_argument("--name", default="scoring_memory", help="results file name (scoring_gpu for a GPU run)")
    parser.add_argument("--state", type=Path, help="resume folder (default EXCISE_HOME/bench/<name>)")
    parser.add_argument("--report-only", action="store_true", help="rewrite the report from the saved state")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    if any(args.tokens % length for length in args.lengths):
        parser.error(f"--tokens {args.tokens} must be a multiple of every length in --lengths")
    state_file = (args.state or excise_home() / "bench" / args.name) / "state.json"
    state_file.parent.mkdir(parents=True, exist_ok=True)
    state = json.loads(state_file.read_text()) if state_file.is_file() else {"measurements": {}}
    settings = {"device": args.device, "dtype": args.dtype, "tokens": args.tokens, "threads": args.threads}
    if state.get("settings", settings) != settings:
        parser.error(f"{state_file} holds a run with other settings {state['settings']}; pass another --state")
    state["settings"] = settings
    command = "python benchmarks/scoring_memory/run.py " + " ".join(
        [f"--models {' '.join(args.models)}", f"--lengths {' '.join(map(str, args.lengths))}",
         f"--tokens {args.tokens}", f"--device {args.device}", f"--dtype {args.dtype}", f"--name {args.name}"])
    if not args.report_only:
        watch = CpuWatch()
        for model in args.models:  # each model's configurations by growing length, so a stop loses little
            for length in args.lengths:
                for method, recompute in CONFIGS:
                    key = f"{model}|{method}|{recompute}|{length}"
                    if key in state["measurements"]:
                        continue
                    logger.info("measuring %s", key)
                    state["measurements"][key] = measure(model, method, recompute, length, settings,
                                                         int(args.memory_limit_gb * 2**30))
                    logger.info("%s: %s", key, state["measurements"][key])
                    state_file.write_text(json.dumps(state, indent=2))
        state["cpu"] = watch.close()
        state_file.write_text(json.dumps(state, indent=2))
    state["limit_bytes"] = int(args.memory_limit_gb * 2**30)
    state["projection"] = projection(state)
    write_report(state, RESULTS, args.name, command)

