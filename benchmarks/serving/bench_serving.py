"""Serving benchmark: vLLM's own OpenAI server vs excise (dense, + toxicity
scoring, base + LoRA correction on one engine), same model, same bounded load.

All servers are started first (same engine settings: fp32, enforce_eager on CPU,
max_model_len 2048, vLLM's default thread binding); then R rounds each send the same load
to every server in turn, one server at a time, so drifting machine load hits all of them
alike. Load: N streamed completions of a fixed 32-token prompt, 64 output tokens each
(ignore_eos), C concurrent. Ratios are per round against vLLM's server in the same round,
then the median over rounds. After each load, S requests one at a time measure the TTFT the
server itself adds (no queueing). Writes benchmarks/results/serving.md.

    python benchmarks/serving/bench_serving.py [--model smollm2] [--requests 64] [--concurrency 8] [--rounds 3] [--single 32]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "benchmarks" / "results" / "serving.md"
ENV = {
    "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_HOST_IP": "127.0.0.1", "VLLM_NO_USAGE_STATS": "1", "HF_HUB_OFFLINE": "1",
    "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "1",
}
MAX_MODEL_LEN = 2048
log = logging.getLogger("bench_serving")


@dataclass
class RunResult:
    name: str
    wall_s: float
    output_tokens: int
    latencies: list[float]
    ttfts: list[float]
    errors: int
    # TTFT of requests sent one at a time after the load: the server's own added delay, without queueing.
    single_ttfts: list[float] = field(default_factory=list)

    @property
    def throughput(self) -> float:
        return self.output_tokens / self.wall_s


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd: list[str], log_path: Path) -> subprocess.Popen:
    env = {**os.environ, **ENV, "PYTHONPATH": str(REPO)}
    log.info("starting: %s", " ".join(cmd))
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=open(log_path, "w"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def wait_ready(url: str, proc: subprocess.Popen, path: str, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if httpx.get(url + path, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise TimeoutError(f"{url} not ready after {timeout} s")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


async def one_request(client: httpx.AsyncClient, url: str, model: str, prompt: list[int], out_tokens: int):
    body = {"model": model, "prompt": prompt, "max_tokens": out_tokens, "temperature": 0, "stream": True,
            "ignore_eos": True, "stream_options": {"include_usage": True}}
    began = time.perf_counter()
    ttft, tokens = None, 0
    async with client.stream("POST", url + "/v1/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            if event.get("choices") and ttft is None:
                ttft = time.perf_counter() - began
            if event.get("usage"):
                tokens = event["usage"]["completion_tokens"]
    return time.perf_counter() - began, ttft, tokens


async def load(url: str, models: list[str], prompt: list[int], n: int, concurrency: int, out_tokens: int, name: str):
    gate = asyncio.Semaphore(concurrency)
    results, errors = [], 0

    async def run(i: int):
        nonlocal errors
        async with gate:
            try:
                results.append(await one_request(client, url, models[i % len(models)], prompt, out_tokens))
            except httpx.HTTPError as exc:
                errors += 1
                log.warning("request %d failed: %s", i, exc)

    async with httpx.AsyncClient(timeout=600) as client:
        # Warm-up (first requests pay one-off costs), not measured.
        await asyncio.gather(*(one_request(client, url, m, prompt, 4) for m in models))
        began = time.perf_counter()
        await asyncio.gather(*(run(i) for i in range(n)))
        wall = time.perf_counter() - began
    return RunResult(name, wall, sum(r[2] for r in results), [r[0] for r in results],
                     [r[1] for r in results if r[1] is not None], errors)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def neuron_correction(model: str, out: Path, per_layer: int) -> tuple[Path, int]:
    """A correction removing about `per_layer` MLP neurons of every layer (the smallest by weight
    magnitude), built the way a user would: `excise prune --granularity neuron`, then
    `excise export --to lora`. Returns the adapter folder and its LoRA rank."""
    from correction.data.windows import DataSpec
    from correction.export.pipeline import export_artifact
    from correction.models.loading import resolve_model_path
    from correction.pruning import PruneConfig, prune
    from transformers import AutoConfig

    width = AutoConfig.from_pretrained(resolve_model_path(model)).intermediate_size
    config = PruneConfig(
        model=model, method="magnitude", granularity="neuron", sparsity=per_layer / width,
        calibration=DataSpec(count=1, length=32), evaluation=None,
    )
    mask = prune(config, out / "mask")
    manifest = export_artifact(mask, "lora", out / "lora")
    return out / "lora", manifest.metrics["lora"]["rank"]


def excise_config(tmp: Path, model: Path, lora: Path | None, rank: int) -> Path:
    variants = [{"name": "m", "base": str(model)}]
    if lora is not None:
        variants.append({"name": "m-fixed", "base": str(model), "correction": str(lora)})
    config = {"engine_defaults": {"dtype": "float32", "max_model_len": MAX_MODEL_LEN, "max_lora_rank": rank},
              "variants": variants}
    path = tmp / f"excise-{'lora' if lora else 'dense'}.json"
    path.write_text(json.dumps(config))
    return path


def scenarios(model: Path, tmp: Path, lora: Path, rank: int):
    py = sys.executable
    vllm_cmd = [py, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model), "--served-model-name", "m",
                "--dtype", "float32", "--max-model-len", str(MAX_MODEL_LEN), "--enforce-eager"]
    dense = excise_config(tmp, model, None, rank)
    both = excise_config(tmp, model, lora, rank)
    return [
        ("vLLM OpenAI server", vllm_cmd, "/health", ["m"]),
        ("excise dense", [py, "-m", "server", "--config", str(dense), "--no-toxicity"], "/ready", ["m"]),
        ("excise dense + toxicity scoring", [py, "-m", "server", "--config", str(dense)], "/ready", ["m"]),
        ("excise base + LoRA on one engine (50/50 traffic)", [py, "-m", "server", "--config", str(both)], "/ready",
         ["m", "m-fixed"]),
    ]


def write_report(rounds: list[list[RunResult]], args, model_desc: str, command: str, load_start: float) -> None:
    names = [r.name for r in rounds[0]]
    lines = [
        "# Serving benchmark", "",
        f"Command: `{command}`", "",
        f"Model: {model_desc}. Load: {args.requests} streamed completions, concurrency {args.concurrency}, "
        f"32-token prompt, {args.out_tokens} output tokens each (ignore_eos), greedy, after a warm-up. fp32, "
        f"enforce_eager, max_model_len {MAX_MODEL_LEN}, vLLM's default CPU thread binding. All servers up at once, "
        f"{len(rounds)} rounds, each sending the load to one server after another; ratios per round against vLLM's "
        "server in the same round, median over rounds; latency and TTFT pooled over rounds.",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores (load average {load_start:.1f} at start, "
        f"{os.getloadavg()[0]:.1f} at the end).", "",
        "| server | output tok/s (median) | vs vLLM (median of rounds) | per round | latency p50 (s) | latency p95 (s) "
        "| TTFT p50 (ms) | TTFT vs vLLM (ms) | TTFT p50, one at a time (ms) | vs vLLM (ms) | errors |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    ref_ttft = statistics.median(t for round_ in rounds for t in round_[0].ttfts)
    ref_single = statistics.median(t for round_ in rounds for t in round_[0].single_ttfts)
    for i, name in enumerate(names):
        runs = [round_[i] for round_ in rounds]
        ratios = [round_[i].throughput / round_[0].throughput for round_ in rounds]
        latencies = [x for r in runs for x in r.latencies]
        ttft = statistics.median(t for r in runs for t in r.ttfts)
        single = statistics.median(t for r in runs for t in r.single_ttfts)
        lines.append(
            f"| {name} | {statistics.median(r.throughput for r in runs):.1f} | {statistics.median(ratios):.3f} | "
            f"{', '.join(f'{x:.2f}' for x in ratios)} | {pct(latencies, 0.5):.2f} | {pct(latencies, 0.95):.2f} | "
            f"{1000 * ttft:.0f} | {1000 * (ttft - ref_ttft):+.0f} | {1000 * single:.1f} | {1000 * (single - ref_single):+.1f} | "
            f"{sum(r.errors for r in runs)} |"
        )
    lines += [
        "", "Targets (issue 5): excise >= 0.95 of vLLM's throughput, <= 10 ms added TTFT p50, scoring included.",
        f"TTFT under load is mostly queueing and moves by tens of ms between runs; the one-at-a-time column "
        f"({args.single} requests per round, 2 output tokens) is the delay the server itself adds.", "",
    ]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines))
    log.info("wrote %s", RESULTS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2", help="embedded name or HF folder")
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--out-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds over all servers")
    parser.add_argument("--single", type=int, default=32, help="requests sent one at a time after each load (TTFT)")
    parser.add_argument("--only", help="comma-separated scenario numbers (1-4) to run; 1 (vLLM) is the reference")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    os.environ.update({k: v for k, v in ENV.items() if k not in os.environ})
    sys.path.insert(0, str(REPO))
    from correction.models.loading import resolve_model_path
    from transformers import AutoTokenizer

    model = resolve_model_path(args.model)
    tok = AutoTokenizer.from_pretrained(model)
    words = tok.encode(" ".join(["The river bank near the old mill was quiet in the morning."] * 8))
    prompt = words[:32]
    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp_name, contextlib.ExitStack() as servers:
        tmp = Path(tmp_name)
        lora, rank = neuron_correction(args.model, tmp, per_layer=16)
        chosen = [int(i) for i in args.only.split(",")] if args.only else [1, 2, 3, 4]
        running = []
        for number, (name, cmd, ready_path, models) in enumerate(scenarios(model, tmp, lora, rank), start=1):
            if number not in chosen:
                continue
            port = free_port()
            proc = start([*cmd, "--port", str(port)], tmp / f"server-{number}.log")
            servers.callback(stop, proc)
            url = f"http://127.0.0.1:{port}"
            wait_ready(url, proc, ready_path)
            running.append((name, url, models))
        rounds = []
        for round_ in range(1, args.rounds + 1):
            results = []
            for name, url, models in running:
                result = asyncio.run(load(url, models, prompt, args.requests, args.concurrency, args.out_tokens, name))
                result.single_ttfts = asyncio.run(load(url, models, prompt, args.single, 1, 2, name)).ttfts
                log.info("round %d, %s: %.1f tok/s, TTFT p50 %.0f ms", round_, name, result.throughput,
                         1000 * statistics.median(result.ttfts))
                results.append(result)
            rounds.append(results)
    command = "python benchmarks/serving/bench_serving.py " + " ".join(sys.argv[1:])
    write_report(rounds, args, f"{args.model} ({model})", command.strip(), load_start)


if __name__ == "__main__":
    main()
