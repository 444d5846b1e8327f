"""Corrections on a running server, over HTTP on a real vLLM engine (tiny Llama, CPU): a LoRA
correction serves exactly the masked model, runtime corrections register and delete, and bad or
tampered ones are refused while serving goes on. Shares the session's server with test_server_api."""

from __future__ import annotations

import httpx
import openai
import pytest
from server_helpers import (ADMIN_KEY, API_KEYS, build_tiny_llama_vllm, error_envelope, excise_lora,
                            flip_byte, masked_greedy)
from transformers import AutoTokenizer

pytestmark = pytest.mark.slow

PROMPT = "When Mary and John went to the store, John gave a drink to"


def _auth(key: str = API_KEYS[0]) -> dict:
    return {"Authorization": f"Bearer {key}"}


# --- variants and corrections -------------------------------------------------------------


def _token_ids(tiny_dir, text: str) -> list[int]:
    return AutoTokenizer.from_pretrained(tiny_dir).encode(text)


def assert_served_like_masked(choice, tiny_dir, ids: list[int], neurons: dict[int, list[int]]) -> None:
    """Same greedy tokens and the same log-probabilities (fp32) as the masked model in transformers."""
    n = len(choice.logprobs.token_logprobs)
    expected_ids, expected_logprobs = masked_greedy(tiny_dir, ids, neurons, n)
    assert choice.text == AutoTokenizer.from_pretrained(tiny_dir).decode(expected_ids)
    assert choice.logprobs.token_logprobs == pytest.approx(expected_logprobs, abs=1e-4)


def test_correction_output_equals_the_masked_model(client, tiny_dir, fixed):
    ids = _token_ids(tiny_dir, PROMPT)
    served = client.completions.create(model="tiny-fixed", prompt=ids, max_tokens=12, temperature=0, logprobs=0)
    assert_served_like_masked(served.choices[0], tiny_dir, ids, fixed[1])
    base = client.completions.create(model="tiny", prompt=ids, max_tokens=12, temperature=0, logprobs=0)
    assert_served_like_masked(base.choices[0], tiny_dir, ids, {})
    # ...and the correction really changes the model: its log-probs move.
    shift = max(abs(a - b) for a, b in zip(base.choices[0].logprobs.token_logprobs,
                                           served.choices[0].logprobs.token_logprobs, strict=True))
    assert shift > 1e-2


def test_runtime_correction_register_serve_delete(server, client, tiny_dir, corrections_root):
    lora, neurons = excise_lora(tiny_dir, corrections_root / "rt", 0.1)  # 26 of 256 neurons a layer: rank 32
    body = {"name": "tiny-rt", "base": "tiny", "path": "rt"}  # relative to the corrections root
    created = httpx.post(server.url + "/v1/corrections", json=body, headers=_auth(ADMIN_KEY), timeout=60)
    assert created.status_code == 201, created.text
    assert created.json() == {"name": "tiny-rt", "base": "tiny", "path": "rt", "lora_rank": 32}
    assert "tiny-rt" in {m.id for m in client.models.list().data}

    ids = _token_ids(tiny_dir, PROMPT)
    r = client.completions.create(model="tiny-rt", prompt=ids, max_tokens=8, temperature=0, logprobs=0)
    assert_served_like_masked(r.choices[0], tiny_dir, ids, neurons)

    again = httpx.post(server.url + "/v1/corrections", json=body, headers=_auth(ADMIN_KEY), timeout=60)
    assert again.status_code == 409
    deleted = httpx.delete(server.url + "/v1/corrections/tiny-rt", headers=_auth(ADMIN_KEY), timeout=60)
    assert deleted.status_code == 200
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="tiny-rt", prompt="x", max_tokens=1)
    assert httpx.delete(server.url + "/v1/corrections/tiny-rt", headers=_auth(ADMIN_KEY)).status_code == 404
    assert "correction added: name=tiny-rt" in server.log_path.read_text()  # audited
    assert "correction removed: name=tiny-rt" in server.log_path.read_text()


def _register(server, path: str, name: str = "tiny-bad") -> httpx.Response:
    body = {"name": name, "base": "tiny", "path": path}
    return httpx.post(server.url + "/v1/corrections", json=body, headers=_auth(ADMIN_KEY), timeout=60)


def test_runtime_correction_refusals(server, tiny_dir, corrections_root):
    body = {"name": "tiny-bad", "base": "tiny", "path": "anything"}
    assert httpx.post(server.url + "/v1/corrections", json=body).status_code == 401
    assert httpx.post(server.url + "/v1/corrections", json=body, headers=_auth(API_KEYS[0])).status_code == 401
    assert httpx.post(server.url + "/v1/corrections", json={**body, "base": "nope"},
                      headers=_auth(ADMIN_KEY)).status_code == 404
    assert httpx.delete(server.url + "/v1/corrections/tiny-fixed", headers=_auth(ADMIN_KEY)).status_code == 409


def test_runtime_corrections_stay_inside_the_corrections_root(server, tiny_dir, fixed_lora, corrections_root, tmp_path):
    """Missing, outside, escaping by `..` or through a link: one answer, which says nothing about the file system."""
    outside, _ = excise_lora(tiny_dir, tmp_path / "outside", 0.05)
    (corrections_root / "link").symlink_to(outside, target_is_directory=True)
    answers = {_register(server, path).json()["error"]["message"] for path in (
        str(outside), "no-such-folder", f"../{tmp_path.name}/outside", "link", "/etc", str(fixed_lora),
    )}
    assert len(answers) == 1
    (answer,) = answers
    assert "corrections root" in answer and str(corrections_root) not in answer and str(tmp_path) not in answer


def _tampered(corrections_root, tiny_dir, name: str, tamper) -> str:
    folder, _ = excise_lora(tiny_dir, corrections_root / name, 0.05)
    tamper(folder)
    return name


@pytest.mark.parametrize(
    ("tamper", "names"),
    [
        (lambda f: flip_byte(f / "adapter_model.safetensors"), "adapter_model.safetensors"),
        (lambda f: flip_byte(f / "adapter_config.json", 5), "adapter_config.json"),
        (lambda f: flip_byte(f / "manifest.json", 3), "manifest.json"),
        (lambda f: (f / "adapter_model.safetensors").write_bytes((f / "adapter_model.safetensors").read_bytes()[:200]),
         "adapter_model.safetensors"),
    ],
    ids=["adapter-byte", "adapter-config-byte", "manifest-byte", "truncated"],
)
def test_tampered_runtime_corrections_are_refused_and_serving_goes_on(server, client, tiny_dir, corrections_root,
                                                                     tamper, names, request):
    name = _tampered(corrections_root, tiny_dir, f"tampered-{request.node.callspec.id}", tamper)
    refused = _register(server, name)
    assert refused.status_code == 400, refused.text
    message = error_envelope(refused)["message"]
    assert names in message and str(corrections_root) not in message
    assert "tiny-bad" not in {m.id for m in client.models.list().data}
    served = client.completions.create(model="tiny-fixed", prompt="x", max_tokens=2, extra_body={"ignore_eos": True})
    assert served.usage.completion_tokens == 2  # ignore_eos: a sampled end-of-text would stop it after one


def test_a_correction_for_another_base_is_refused(server, client, corrections_root, tmp_path):
    other = build_tiny_llama_vllm(tmp_path / "other", seed=1)  # same shapes, other weights
    excise_lora(other, corrections_root / "for-other", 0.05)
    refused = _register(server, "for-other")
    assert refused.status_code == 400
    message = error_envelope(refused)["message"]
    assert "made for a base model" in message and "base 'tiny'" in message and str(tmp_path) not in message
    assert client.completions.create(model="tiny", prompt="x", max_tokens=1).usage.completion_tokens == 1
