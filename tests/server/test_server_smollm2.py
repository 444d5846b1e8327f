"""Integration: the real server on the embedded SmolLM2, dense and with a LoRA correction.

The tiny-model tests cover the API surface; these check what only a real model shows:
its chat template, its tokenizer's usage counts, and vLLM computing what transformers
computes on 30 layers (greedy tokens and log-probabilities, fp32).
"""

from __future__ import annotations

import json

import openai
import pytest
from server_helpers import ServerProcess, masked_greedy, neuron_lora
from transformers import AutoTokenizer

pytestmark = pytest.mark.slow

PROMPT = "The capital of France is"
STEPS = 10
#: 48 MLP neurons in each of two layers, removed by the correction
NEURONS = {3: list(range(0, 96, 2)), 20: list(range(7, 55))}


@pytest.fixture(scope="module")
def smollm2_server(smollm2_dir, tmp_path_factory):
    lora = neuron_lora(smollm2_dir, tmp_path_factory.mktemp("smollm2-lora") / "fix", NEURONS)
    config = {
        "engine_defaults": {"dtype": "float32", "max_lora_rank": 64, "max_model_len": 1024},
        "variants": [
            {"name": "smollm2", "base": "smollm2"},
            {"name": "smollm2-fixed", "base": "smollm2", "correction": str(lora)},
        ],
    }
    folder = tmp_path_factory.mktemp("smollm2-server")
    (folder / "serve.json").write_text(json.dumps(config))
    proc = ServerProcess(["--config", str(folder / "serve.json")], folder / "server.log")
    try:
        proc.wait_ready(timeout=300)
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def client(smollm2_server) -> openai.OpenAI:
    return openai.OpenAI(base_url=smollm2_server.url + "/v1", api_key="unused", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def tokenizer(smollm2_dir):
    return AutoTokenizer.from_pretrained(smollm2_dir)


@pytest.mark.parametrize(("model", "neurons"), [("smollm2", {}), ("smollm2-fixed", NEURONS)])
def test_greedy_completion_is_what_transformers_computes(client, smollm2_dir, tokenizer, model, neurons):
    ids = tokenizer(PROMPT)["input_ids"]
    served = client.completions.create(model=model, prompt=PROMPT, max_tokens=STEPS, temperature=0, logprobs=0)
    expected_ids, expected_logprobs = masked_greedy(smollm2_dir, ids, neurons, STEPS)
    choice = served.choices[0]
    assert choice.text == tokenizer.decode(expected_ids)
    assert choice.logprobs.token_logprobs == pytest.approx(expected_logprobs, abs=2e-3)
    assert (served.usage.prompt_tokens, served.usage.completion_tokens) == (len(ids), STEPS)


def test_the_correction_changes_the_model(client):
    def logprobs(model: str) -> list[float]:
        served = client.completions.create(model=model, prompt=PROMPT, max_tokens=STEPS, temperature=0, logprobs=0)
        return served.choices[0].logprobs.token_logprobs

    assert max(abs(a - b) for a, b in zip(logprobs("smollm2"), logprobs("smollm2-fixed"), strict=True)) > 1e-2


def test_chat_uses_the_models_template_and_streams_the_same_answer(client, tokenizer):
    messages = [{"role": "user", "content": "Name one colour of the rainbow."}]
    whole = client.chat.completions.create(model="smollm2", messages=messages, max_tokens=16, temperature=0)
    templated = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True)["input_ids"]
    assert whole.usage.prompt_tokens == len(templated)
    assert whole.choices[0].message.role == "assistant" and whole.choices[0].message.content.strip()
    stream = client.chat.completions.create(
        model="smollm2", messages=messages, max_tokens=16, temperature=0, stream=True
    )
    streamed = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert streamed == whole.choices[0].message.content
