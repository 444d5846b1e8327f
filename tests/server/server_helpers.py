"""Models, corrections and a running server for the server tests.

vLLM's CPU attention supports head sizes 32 and up, so the server tests use
`tiny_models.build_tiny_llama_vllm` (head_dim 32), re-exported here.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM

import tiny_models
from excise.artifacts.lora import served_rank
from tiny_models import build_tiny_llama_vllm  # noqa: F401  (re-exported for the server tests)

REPO = Path(__file__).resolve().parents[2]


# The shared server of the server tests (tests/server/conftest.py).
API_KEYS = ("key-a", "key-b")
ADMIN_KEY = "admin-secret"
MAX_IN_FLIGHT = 6
# The configured correction: this share of each layer's MLP neurons (115 of 256, rank 128), chosen by magnitude.
FIXED_SPARSITY = 0.45


def excise_lora(base: Path | str, out: Path, sparsity: float) -> tuple[Path, dict[int, list[int]]]:
    """A correction made the way users make one: `excise prune --granularity neuron` (magnitude scores,
    per-layer share `sparsity`) then `excise export --to lora`. Returns the LoRA folder and the removed
    neurons per layer, read back from the mask artifact."""
    from excise.data.windows import DataSpec
    from excise.export.pipeline import export_artifact
    from excise.artifacts.masks import MaskSet
    from excise.pruning.run import PruneConfig, prune

    masks = out.with_name(out.name + "-mask")
    config = PruneConfig(
        model=str(base), method="magnitude", sparsity=sparsity, granularity="neuron", evaluation=None,
        calibration=DataSpec.parse("wiki:2x32", split="calibration", order="random"),
    )
    prune(config, masks)
    export_artifact(masks, "lora", out)
    removed = {layer: (~kept).nonzero().squeeze(1).tolist() for layer, kept in MaskSet.load(masks).neurons.items()}
    return out, {layer: chosen for layer, chosen in removed.items() if chosen}


def excise_hf_export(base: Path, out: Path, sparsity: float = 0.5) -> Path:
    """A pruned model as users make one: `excise prune` (magnitude, row-wise) then `excise export --to hf`."""
    from excise.data.windows import DataSpec
    from excise.export.pipeline import export_artifact
    from excise.pruning.run import PruneConfig, prune

    masks = out.with_name(out.name + "-mask")
    config = PruneConfig(
        model=str(base), method="magnitude", sparsity=sparsity, granularity="row", evaluation=None,
        calibration=DataSpec.parse("wiki:2x32", split="calibration", order="random"),
    )
    prune(config, masks)
    export_artifact(masks, "hf", out)
    return out


def peft_lora(base: Path, out: Path, neurons: dict[int, list[int]]) -> Path:
    """A third-party style PEFT LoRA without an excise manifest (served only with `verify: false`):
    removal of MLP neurons, B = -W_down[:, S], A = E_S^T, rank padded, scaling 1."""
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    width = max(len(s) for s in neurons.values())
    rank = served_rank(width)
    tensors = {}
    for layer, chosen in neurons.items():
        w_down = model.model.layers[layer].mlp.down_proj.weight.detach()  # [hidden, intermediate]
        a = torch.zeros(rank, w_down.shape[1])  # [rank, intermediate]
        b = torch.zeros(w_down.shape[0], rank)  # [hidden, rank]
        for j, neuron in enumerate(chosen):
            a[j, neuron] = 1.0
            b[:, j] = -w_down[:, neuron]
        prefix = f"base_model.model.model.layers.{layer}.mlp.down_proj"
        tensors[f"{prefix}.lora_A.weight"] = a.contiguous()
        tensors[f"{prefix}.lora_B.weight"] = b.contiguous()
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / "adapter_model.safetensors"))
    config = {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": rank, "lora_alpha": rank, "lora_dropout": 0.0,
        "target_modules": ["down_proj"], "bias": "none", "fan_in_fan_out": False, "use_rslora": False,
        "base_model_name_or_path": str(base),
    }
    (out / "adapter_config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
    return out


def flip_byte(path: Path, offset: int = -1) -> None:
    """Tamper as an attacker or a bad disk would: one byte changed, size kept."""
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


@torch.no_grad()
def masked_greedy(base: Path, prompt_ids: list[int], neurons: dict[int, list[int]], n_tokens: int):
    """Greedy continuation with MLP neurons zeroed, in transformers (fp32): (token ids, their log-probs)."""
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).eval()
    for layer, chosen in neurons.items():
        model.model.layers[layer].mlp.down_proj.weight[:, chosen] = 0.0
    ids = torch.tensor([prompt_ids])
    logprobs = []
    for _ in range(n_tokens):
        step = model(ids).logits[0, -1].log_softmax(-1)  # [vocab]
        next_id = step.argmax()
        logprobs.append(step[next_id].item())
        ids = torch.cat([ids, next_id.view(1, 1)], dim=1)
    return ids[0, len(prompt_ids):].tolist(), logprobs


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def error_envelope(response: httpx.Response) -> dict:
    """An error answer's OpenAI-style envelope: exactly its four fields, no traceback."""
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert "Traceback" not in error["message"]
    return error


def metric(server, name: str, **labels) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    text = httpx.get(server.url + "/metrics").text
    total = 0.0
    for line in text.splitlines():
        match = re.match(r"^([a-zA-Z_:][\w:]*)(\{[^}]*\})? (\S+)$", line)
        if not match or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(match.group(3))
    return total


class ServerProcess:
    """`python -m server` in a subprocess (its own process group, killed on stop)."""

    def __init__(self, args: list[str], log_path: Path, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log = open(log_path, "w")
        full_env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", **(env or {})}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "server", "--port", str(self.port), *args],
            cwd=REPO, env=full_env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
        )

    def wait_ready(self, timeout: float = 240) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}; log:\n{self.log_tail()}")
            try:
                if httpx.get(self.url + "/ready", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"server not ready after {timeout} s; log:\n{self.log_tail()}")

    def log_tail(self, n: int = 60) -> str:
        return "\n".join(self.log_path.read_text().splitlines()[-n:])

    def stop(self, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._log.close()
        return self.proc.returncode
