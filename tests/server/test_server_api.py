"""The server over HTTP, driven by the official `openai` client, on a real vLLM
engine (tiny Llama, CPU). One server process is shared by every test here and by test_server_corrections."""

from __future__ import annotations

import concurrent.futures
import time

import httpx
import openai
import pytest
from server_helpers import API_KEYS, MAX_IN_FLIGHT, error_envelope, metric
from transformers import AutoTokenizer

pytestmark = pytest.mark.slow

PROMPT = "When Mary and John went to the store, John gave a drink to"


def _auth(key: str = API_KEYS[0]) -> dict:
    return {"Authorization": f"Bearer {key}"}


# --- basics ------------------------------------------------------------------------


def test_health_ready_and_models_list(server, client, tiny_dir, fixed_lora):
    assert httpx.get(server.url + "/health").json() == {"status": "ok"}
    assert httpx.get(server.url + "/ready").json() == {"status": "ready"}  # nothing more, unauthenticated
    ids = {m.id for m in client.models.list().data}
    assert ids == {"tiny", "tiny-fixed", "tiny-peft", "ab"}
    card = client.models.retrieve("tiny-fixed")
    assert (card.id, card.base, card.correction, card.verified) == ("tiny-fixed", "tiny", True, True)
    assert client.models.retrieve("tiny-peft").verified is False  # served with `verify: false`
    described = {v["name"]: v for v in httpx.get(server.url + "/ui/api/variants", headers=_auth()).json()}
    assert (described["tiny-peft"]["verified"], described["tiny-peft"]["manifest"]) == (False, None)
    assert described["tiny-fixed"]["verified"] and described["tiny-fixed"]["manifest"]["kind"] == "lora"
    listing = httpx.get(server.url + "/v1/models", headers=_auth()).text + httpx.get(
        server.url + "/ui/api/variants", headers=_auth()).text
    for server_path in (str(tiny_dir), str(fixed_lora), str(tiny_dir.parent)):
        assert server_path not in listing


def test_completion_with_usage_and_logprobs(client):
    r = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=6, temperature=0, logprobs=2)
    choice = r.choices[0]
    assert r.model == "tiny" and r.object == "text_completion"
    assert choice.finish_reason == "length"
    assert r.usage.completion_tokens == 6 and r.usage.total_tokens == r.usage.prompt_tokens + 6
    assert len(choice.logprobs.tokens) == 6 and "".join(choice.logprobs.tokens) == choice.text
    assert all(lp <= 0 for lp in choice.logprobs.token_logprobs)
    assert all(1 <= len(top) <= 3 for top in choice.logprobs.top_logprobs)


def test_greedy_is_deterministic_and_seed_reproduces(client):
    a = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=8, temperature=0).choices[0].text
    b = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=8, temperature=0).choices[0].text
    assert a == b
    s1 = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=8, temperature=1.0, seed=7).choices[0].text
    s2 = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=8, temperature=1.0, seed=7).choices[0].text
    assert s1 == s2


def test_stop_string_ends_the_completion(client):
    full = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=12, temperature=0).choices[0]
    stop = full.text[4:8]
    assume = full.text.find(stop)
    cut = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=12, temperature=0, stop=[stop]).choices[0]
    assert cut.finish_reason == "stop"
    assert cut.text == full.text[:assume]


def test_n_and_batched_prompts(client):
    r = client.completions.create(model="tiny", prompt=[PROMPT, "The quick brown fox"], n=3, max_tokens=4, temperature=0.9,
                               extra_body={"ignore_eos": True})  # a sampled end-of-text would cut a choice short
    assert sorted(c.index for c in r.choices) == list(range(6))
    assert r.usage.completion_tokens == sum(1 for _ in r.choices) * 4
    chat = client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "hi"}], n=2, max_tokens=3, temperature=0.9
    )
    assert sorted(c.index for c in chat.choices) == [0, 1]


def test_chat_uses_the_chat_template(client, tiny_dir):
    r = client.chat.completions.create(
        model="tiny", messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}],
        max_tokens=5, temperature=0, logprobs=True, top_logprobs=2,
    )
    tok = AutoTokenizer.from_pretrained(tiny_dir)
    templated = tok.apply_chat_template(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}],
        add_generation_prompt=True, tokenize=False,
    )
    assert r.usage.prompt_tokens == len(tok.encode(templated, add_special_tokens=False))
    assert r.choices[0].message.role == "assistant"
    assert len(r.choices[0].logprobs.content) == 5
    assert all(len(t.top_logprobs) == 2 for t in r.choices[0].logprobs.content)


def test_streaming_completion_equals_non_streaming(client):
    whole = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=10, temperature=0)
    chunks = list(client.completions.create(
        model="tiny", prompt=PROMPT, max_tokens=10, temperature=0, stream=True, stream_options={"include_usage": True}
    ))
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == whole.choices[0].text
    assert chunks[-1].usage.completion_tokens == 10
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"


def test_streaming_chat_equals_non_streaming_and_ends_with_done(server, client):
    messages = [{"role": "user", "content": "Tell me about pruning"}]
    whole = client.chat.completions.create(model="tiny", messages=messages, max_tokens=10, temperature=0)
    chunks = list(client.chat.completions.create(model="tiny", messages=messages, max_tokens=10, temperature=0, stream=True))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == whole.choices[0].message.content
    raw = httpx.post(server.url + "/v1/chat/completions", headers=_auth(), timeout=60,
                     json={"model": "tiny", "messages": messages, "max_tokens": 3, "stream": True})
    assert raw.headers["content-type"].startswith("text/event-stream")
    events = [line for line in raw.text.split("\n\n") if line]
    assert events[-1] == "data: [DONE]"
    assert all(e.startswith("data: ") for e in events)


# --- experiments ----------------------------------------------------------------------


def _arm_of(server, user: str | None = None, header: str | None = None) -> str:
    body = {"model": "ab", "prompt": "hi", "max_tokens": 1}
    if user is not None:
        body["user"] = user
    headers = {**_auth(), **({"X-User-Id": header} if header else {})}
    r = httpx.post(server.url + "/v1/completions", json=body, headers=headers, timeout=60)
    assert r.status_code == 200, r.text
    assert r.headers["x-excise-experiment"] == "ab"
    assert r.json()["model"] == r.headers["x-excise-variant"]
    return r.headers["x-excise-variant"]


def test_ab_assignment_is_sticky_and_weighted(server):
    callers = [f"caller-{i}" for i in range(240)]
    with concurrent.futures.ThreadPoolExecutor(MAX_IN_FLIGHT - 2) as pool:
        arms = list(pool.map(lambda u: _arm_of(server, user=u), callers))
    share = arms.count("tiny") / len(arms)
    assert abs(share - 0.75) < 4 * (0.75 * 0.25 / len(arms)) ** 0.5  # within 4 standard errors
    assert {_arm_of(server, user=u) for u in callers[:3] for _ in range(3)} <= set(arms)
    for u, arm in zip(callers[:10], arms[:10], strict=True):
        assert _arm_of(server, user=u) == arm
        assert _arm_of(server, header=u) == arm  # X-User-Id hashes the same way


def test_experiment_report(server):
    for i in range(6):
        _arm_of(server, user=f"report-{i}")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # toxicity scores arrive asynchronously
        report = httpx.get(server.url + "/v1/experiments/ab", headers=_auth()).json()
        if sum(a["scored"] for a in report["arms"]) >= sum(a["requests"] for a in report["arms"]):
            break
        time.sleep(0.2)
    arms = {a["variant"]: a for a in report["arms"]}
    assert set(arms) == {"tiny", "tiny-fixed"} and arms["tiny"]["weight"] == 0.75
    assert sum(a["requests"] for a in arms.values()) >= 6
    busy = max(arms.values(), key=lambda a: a["requests"])
    assert busy["latency_p50_s"] > 0 and busy["ttft_p50_s"] > 0 and busy["mean_toxicity"] is not None
    assert report["toxic_rate_tests"][0]["test"].startswith("two-proportion")
    assert report["latency_tests"][0]["arms"] == ["tiny", "tiny-fixed"]
    assert httpx.get(server.url + "/v1/experiments/nope", headers=_auth()).status_code == 404


# --- metrics ---------------------------------------------------------------------------


def test_metrics_present_and_moving(server, client):
    labels = {"variant": "tiny", "endpoint": "chat", "experiment": ""}
    before = {
        "requests": metric(server, "excise_requests_total", **labels, status="200"),
        "tokens": metric(server, "excise_output_tokens_total", **labels),
        "ttft": metric(server, "excise_time_to_first_token_seconds_count", **labels),
        "toxicity": metric(server, "excise_output_toxicity_count", variant="tiny", experiment=""),
    }
    client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=4)
    deadline = time.monotonic() + 10
    while metric(server, "excise_output_toxicity_count", variant="tiny", experiment="") <= before["toxicity"]:
        assert time.monotonic() < deadline, "toxicity score never recorded"
        time.sleep(0.1)
    assert metric(server, "excise_requests_total", **labels, status="200") == before["requests"] + 1
    assert metric(server, "excise_output_tokens_total", **labels) == before["tokens"] + 4
    assert metric(server, "excise_time_to_first_token_seconds_count", **labels) == before["ttft"] + 1
    text = httpx.get(server.url + "/metrics").text
    for name in ("excise_request_latency_seconds_bucket", "excise_prompt_tokens_total", "excise_requests_in_flight",
                 "excise_toxic_outputs_total", "excise_toxicity_skipped_total", "vllm:num_requests_running",
                 "vllm:generation_tokens_total"):
        assert name in text, name


# --- errors ------------------------------------------------------------------------------


def test_400_bad_parameters(server, client):
    with pytest.raises(openai.BadRequestError, match="temperature"):
        client.completions.create(model="tiny", prompt="x", n=2, temperature=0)
    r = httpx.post(server.url + "/v1/completions", headers=_auth(), json={"model": "tiny", "prompt": [99999]})
    assert r.status_code == 400 and "vocabulary" in error_envelope(r)["message"]


def test_401_without_or_with_a_wrong_key(server):
    for headers in ({}, _auth("wrong"), {"Authorization": "Basic key-a"}):
        r = httpx.get(server.url + "/v1/models", headers=headers)
        assert r.status_code == 401 and error_envelope(r)["type"] == "authentication_error"
    assert httpx.get(server.url + "/v1/models", headers=_auth(API_KEYS[1])).status_code == 200  # any key works
    for open_path in ("/health", "/ready", "/metrics"):
        assert httpx.get(server.url + open_path).status_code == 200
    for admin_path in ("/v1/corrections",):
        assert httpx.post(server.url + admin_path, json={}, headers=_auth(API_KEYS[0])).status_code == 401


def test_404_unknown_model_and_route(server, client):
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    r = httpx.get(server.url + "/v1/nothing", headers=_auth())
    assert r.status_code == 404 and error_envelope(r)


def test_413_prompt_over_the_context_and_body_too_large(server, client):
    with pytest.raises(openai.APIStatusError) as info:
        client.completions.create(model="tiny", prompt=[5] * 600, max_tokens=1)
    assert info.value.status_code == 413
    r = httpx.post(server.url + "/v1/completions", headers=_auth(), json={"model": "tiny", "prompt": "x", "max_tokens": 512})
    assert r.status_code == 413 and error_envelope(r)["param"] == "max_tokens"
    r = httpx.post(server.url + "/v1/completions", headers=_auth(), content=b"{" + b" " * 2_000_000 + b"}")
    assert r.status_code == 413 and error_envelope(r)["code"] == "body_too_large"


def test_422_schema_violations(server):
    for body in ({"model": "tiny"}, {"model": "tiny", "prompt": "x", "temperature": 5},
                 {"model": "tiny", "prompt": "x", "max_tokens": "many"}):
        r = httpx.post(server.url + "/v1/completions", headers=_auth(), json=body)
        assert r.status_code == 422 and error_envelope(r)["code"] == "invalid_schema"
    r = httpx.post(server.url + "/v1/chat/completions", headers={**_auth(), "content-type": "application/json"},
                   content=b"{not json")
    assert r.status_code == 422


@pytest.mark.parametrize(
    ("body", "param", "says"),
    [
        ({"prompt": "x", "stop": ["s"] * 1000}, "stop", "at most 4 items"),
        ({"prompt": [-1, 5]}, "prompt.0", "greater than or equal to 0 (got -1)"),
        ({"prompt": [[3, -7]]}, "prompt.0.1", "greater than or equal to 0 (got -7)"),
        ({"prompt": "x", "stop": "s" * 300}, "stop", "at most 256 characters"),
    ],
)
def test_422_on_a_field_of_several_types_says_what_was_wrong(server, body, param, says):
    """Not the message of a type the value is not (`stop.constrained-str: Input should be a valid string`)."""
    r = httpx.post(server.url + "/v1/completions", headers=_auth(), json={"model": "tiny", **body})
    error = error_envelope(r)
    assert r.status_code == 422 and error["param"] == param and says in error["message"], error
