"""One real excise server process for the server tests (started once, ~30-90 s on CPU).

It serves a tiny Llama (`tiny`), a neuron-removal correction of it made by
`excise prune` + `excise export --to lora` (`tiny-fixed`), a third-party style PEFT
LoRA without a manifest served with `verify: false` (`tiny-peft`), and an experiment
`ab` splitting 3:1 between tiny and tiny-fixed. Runtime corrections load from `corrections_root`.
"""

from __future__ import annotations

import json
from pathlib import Path

import openai
import pytest

from server_helpers import (
    ADMIN_KEY,
    API_KEYS,
    FIXED_SPARSITY,
    MAX_IN_FLIGHT,
    ServerProcess,
    build_tiny_llama_vllm,
    excise_lora,
    peft_lora,
)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    return build_tiny_llama_vllm(tmp_path_factory.mktemp("server-model") / "tiny")


@pytest.fixture(scope="session")
def corrections_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("corrections")


@pytest.fixture(scope="session")
def fixed(tiny_dir, tmp_path_factory) -> tuple[Path, dict[int, list[int]]]:
    """The configured correction's folder and the neurons it removes."""
    return excise_lora(tiny_dir, tmp_path_factory.mktemp("lora") / "tiny-fixed", FIXED_SPARSITY)


@pytest.fixture(scope="session")
def fixed_lora(fixed) -> Path:
    return fixed[0]


@pytest.fixture(scope="session")
def server_config(tiny_dir, fixed_lora, tmp_path_factory) -> Path:
    config = {
        "engine_defaults": {"max_lora_rank": 128},
        "variants": [
            {"name": "tiny", "base": str(tiny_dir)},
            {"name": "tiny-fixed", "base": str(tiny_dir), "correction": str(fixed_lora)},
            {"name": "tiny-peft", "base": str(tiny_dir), "verify": False,
             "correction": str(peft_lora(tiny_dir, tmp_path_factory.mktemp("peft") / "peft", {0: [1, 2, 3]}))},
        ],
        "experiments": [
            {"name": "ab", "arms": [{"variant": "tiny", "weight": 3}, {"variant": "tiny-fixed", "weight": 1}]}
        ],
    }
    path = tmp_path_factory.mktemp("config") / "serve.json"
    path.write_text(json.dumps(config))
    return path


@pytest.fixture(scope="session")
def server(server_config, corrections_root, tmp_path_factory):
    args = ["--config", str(server_config), "--admin-key", ADMIN_KEY, "--max-in-flight", str(MAX_IN_FLIGHT),
            "--corrections-root", str(corrections_root), "--docs"]
    for key in API_KEYS:
        args += ["--api-key", key]
    proc = ServerProcess(args, tmp_path_factory.mktemp("logs") / "server.log")
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="session")
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=API_KEYS[0], max_retries=0, timeout=120)
