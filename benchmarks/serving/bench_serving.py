"""Serving benchmark: vLLM's own OpenAI server vs excise (dense, + toxicity
scoring, base + LoRA correction on one engine), same model, same bounded load.

All servers are started first (same engine settings: fp32, enforce_eager on CPU,
max_model_len 2048, vLLM's default thread binding); then R rounds each send the same load
to every server in turn, one server at a time, so drifting machine load hits all of them
alike. Load: N streamed completions of a fixed 32-token prompt, 64 output tokens each
(ignore_eos), C concurrent. Ratios are per round against vLLM's server in the same round,
then the median over rounds. After each load, S requests one at a time measure the TTFT the
server itself adds (no queueing). Writes benchmarks/results/serving.md, serving.json (command,
machine, settings, the table's numbers and every round's raw figures; rewritten after each round)
and serving.png.

    python benchmarks/serving/bench_serving.py [--model smollm2] [--requests 64] [--concurrency 8] [--rounds 3] [--single 32]
    python benchmarks/serving/bench_serving.py --render   # rewrite the .md and .png from the saved .json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(Path(__file__).resolve().parent), str(REPO)]  # report; benchmarks and correction
from report import render, summarize  # noqa: E402
from benchmarks.results_files import CpuWatch, machine, write_json  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "serving.md"
PROMPT_TOKENS = 32
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

    def as_dict(self) -> dict:
        return {**asdict(self), "throughput": self.throughput}


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


def neuron_correction(model: str, out: Path, per_layer: int) -> tuple[Path, int]:
    """A correction removing about `per_layer` MLP neurons of every layer (the smallest by weight
    magnitude), built the way a user would: `excise prune --granularity neuron`, then
    `excise export --to lora`. Returns the adapter folder and its LoRA rank."""
    from excise.data.windows import DataSpec
    from excise.export.pipeline import export_artifact
    from excise.models.loading import resolve_model_path
    from excise.pruning.run import PruneConfig, prune
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2", help="embedded name or HF folder")
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--out-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds over all servers")
    parser.add_argument("--single", type=int, default=32, help="requests sent one at a time after each load (TTFT)")
    parser.add_argument("--only", help="comma-separated scenario numbers (1-4) to run; 1 (vLLM) is the reference")
    parser.add_argument("--render", action="store_true", help="only rewrite the .md and .png from the saved .json")
    args = parser.parse_args()
    json_path = RESULTS.with_suffix(".json")
    if args.render and not json_path.is_file():
        parser.error(f"--render needs {json_path}, which does not exist")
    chosen = [1, 2, 3, 4]
    if args.only:
        try:
            chosen = sorted({int(i) for i in args.only.split(",")})
        except ValueError:
            chosen = []
        if not chosen or not set(chosen) <= {1, 2, 3, 4}:
            parser.error(f"--only takes scenario numbers 1-4 separated by commas, not {args.only!r}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if not args.render:
        measure(args, chosen, json_path)
    render(json.loads(json_path.read_text()), RESULTS)
    log.info("wrote %s and its .json, .png", RESULTS)


def measure(args, chosen: list[int], json_path: Path) -> None:
    """Starts the servers, runs the rounds and rewrites the JSON record after each round."""
    os.environ.update({k: v for k, v in ENV.items() if k not in os.environ})
    from excise.models.loading import resolve_model_path
    from transformers import AutoTokenizer

    watch = CpuWatch()
    model = resolve_model_path(args.model)
    tok = AutoTokenizer.from_pretrained(model)
    words = tok.encode(" ".join(["The river bank near the old mill was quiet in the morning."] * 8))
    prompt = words[:PROMPT_TOKENS]
    settings = {k: getattr(args, k) for k in ("requests", "concurrency", "out_tokens", "rounds", "single")}
    record = {
        "command": " ".join(["python benchmarks/serving/bench_serving.py", *sys.argv[1:]]),
        "machine": machine(with_torch=False), "model": f"{args.model} ({model})",
        "settings": {**settings, "prompt_tokens": PROMPT_TOKENS, "max_model_len": MAX_MODEL_LEN, "scenarios": chosen},
        "rounds": [], "complete": False,
    }
    with tempfile.TemporaryDirectory() as tmp_name, contextlib.ExitStack() as servers:
        tmp = Path(tmp_name)
        lora, rank = neuron_correction(args.model, tmp, per_layer=16)
        record["settings"]["lora_rank"] = rank
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
        for round_ in range(1, args.rounds + 1):
            results = []
            for name, url, models in running:
                result = asyncio.run(load(url, models, prompt, args.requests, args.concurrency, args.out_tokens, name))
                result.single_ttfts = asyncio.run(load(url, models, prompt, args.single, 1, 2, name)).ttfts
                log.info("round %d, %s: %.1f tok/s, TTFT p50 %.0f ms", round_, name, result.throughput,
                         1000 * statistics.median(result.ttfts))
                results.append(result.as_dict())
            record["rounds"].append(results)
            record["summary"], record["cpu"] = summarize(record["rounds"]), watch.summary()
            write_json(json_path, record)
    # after the servers stopped, so their whole CPU time counts as the benchmark's
    record["complete"], record["cpu"] = True, watch.close()
    write_json(json_path, record)


if __name__ == "__main__":
    main()
