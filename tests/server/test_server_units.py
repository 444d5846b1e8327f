"""Fast tests of the server's pure parts: config, experiments, statistics, keys, settings,
what it gives away. No engine starts here (what it loads: test_server_artifacts.py)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from pydantic import ValidationError

from excise.errors import ExciseError
from server.config import ExperimentConfig, load_config, parse_config
from server.experiments import ArmStats, Experiment, bucket, latency_test, two_proportion_z_test
from server.security import matches_any
from server.settings import ServerSettings
from server_helpers import build_tiny_llama_vllm


def _config(**extra) -> dict:
    return {"variants": [{"name": "a", "base": "smollm2"}, {"name": "b", "base": "smollm2"}], **extra}


# --- config ----------------------------------------------------------------------


def test_config_yaml_and_json_load_the_same(tmp_path):
    (tmp_path / "c.json").write_text(json.dumps(_config()))
    (tmp_path / "c.yaml").write_text("variants:\n  - {name: a, base: smollm2}\n  - {name: b, base: smollm2}\n")
    assert load_config(tmp_path / "c.json") == load_config(tmp_path / "c.yaml")


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"variants": []}, "variants"),
        (_config(bogus=1), "bogus"),
        ({"variants": [{"name": "a", "base": "x"}, {"name": "a", "base": "y"}]}, "unique"),
        ({"variants": [{"name": "bad name!", "base": "x"}]}, "name"),
        (_config(experiments=[{"name": "e", "arms": [{"variant": "a"}, {"variant": "zzz"}]}]), "unknown variants"),
        (_config(experiments=[{"name": "a", "arms": [{"variant": "a"}, {"variant": "b"}]}]), "name of a variant"),
        (_config(experiments=[{"name": "e", "arms": [{"variant": "a", "weight": 0}, {"variant": "b"}]}]), "weight"),
        (_config(engine_defaults={"max_lora_rank": 12}), "max_lora_rank"),
        (_config(engine_defaults={"dtype": "int4"}), "dtype"),
    ],
)
def test_bad_configs_fail_with_one_clear_line(raw, message):
    with pytest.raises(ExciseError) as info:
        parse_config(raw, origin="test")
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_unreadable_config_is_an_excise_error(tmp_path):
    (tmp_path / "c.yaml").write_text("variants: [\n")
    with pytest.raises(ExciseError, match="not valid YAML"):
        load_config(tmp_path / "c.yaml")
    with pytest.raises(ExciseError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")


def test_relative_paths_are_relative_to_the_config_file(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "c.yaml").write_text("variants:\n  - {name: a, base: model, engine: {max_model_len: 64}}\n")
    config = load_config(tmp_path / "c.yaml")
    assert config.variants[0].base == str(tmp_path / "model")
    assert config.engine_options(config.variants[0]).max_model_len == 64
    assert config.engine_options(config.variants[0]).dtype == "model"  # defaults kept


# --- experiments -------------------------------------------------------------------


def test_assignment_is_sticky_and_respects_weights():
    exp = Experiment(ExperimentConfig(name="e", arms=[{"variant": "a", "weight": 3}, {"variant": "b", "weight": 1}]), 0.5)
    callers = [f"user-{i}" for i in range(20_000)]
    counts = Counter(exp.assign(c) for c in callers)
    assert abs(counts["a"] / len(callers) - 0.75) < 0.015
    assert all(exp.assign(c) == exp.assign(c) for c in callers[:100])


def test_assignment_is_independent_across_experiments():
    same = sum((bucket("e1", f"u{i}") < 0.5) == (bucket("e2", f"u{i}") < 0.5) for i in range(10_000))
    assert 0.47 < same / 10_000 < 0.53


def _arm(name, toxic, scored, latencies=()):
    arm = ArmStats(name, 0.5)
    arm.toxic, arm.scored = toxic, scored
    arm.latencies.extend(latencies)
    return arm


def test_z_test_matches_a_hand_computed_value():
    # 30/200 vs 10/200: pooled p = 0.1, se = sqrt(0.1*0.9*(2/200)) = 0.03, z = 0.1/0.03.
    result = two_proportion_z_test(_arm("a", 30, 200), _arm("b", 10, 200))
    assert result.statistic == pytest.approx(3.3333, abs=1e-3)
    assert result.p_value == pytest.approx(0.000858, rel=1e-2)
    assert result.significant


def test_z_test_without_evidence():
    assert not two_proportion_z_test(_arm("a", 0, 50), _arm("b", 0, 50)).significant
    assert two_proportion_z_test(_arm("a", 0, 0), _arm("b", 3, 9)).p_value is None
    assert not two_proportion_z_test(_arm("a", 10, 100), _arm("b", 11, 100)).significant


def test_latency_test_separates_shifted_samples():
    slow = [1.0 + i / 100 for i in range(50)]
    fast = [0.5 + i / 100 for i in range(50)]
    assert latency_test(_arm("a", 0, 0, slow), _arm("b", 0, 0, fast)).significant
    assert not latency_test(_arm("a", 0, 0, slow), _arm("b", 0, 0, slow)).significant


def test_report_counts_and_percentiles():
    exp = Experiment(ExperimentConfig(name="e", arms=[{"variant": "a"}, {"variant": "b"}]), 0.5)
    for i in range(1, 101):
        exp.record("a", latency_s=i / 100, ttft_s=0.01)
    exp.record_toxicity("a", 0.9)
    exp.record_toxicity("a", 0.1)
    report = exp.report()
    arm = report.arms[0]
    assert arm.requests == 100 and arm.latency_p50_s == pytest.approx(0.505) and arm.latency_p95_s == pytest.approx(0.9505)
    assert arm.toxic_rate == 0.5 and arm.mean_toxicity == pytest.approx(0.5)
    assert report.arms[1].requests == 0 and report.arms[1].latency_p50_s is None


# --- keys and settings -------------------------------------------------------------


def test_key_matching():
    assert matches_any("b", ["a", "b"])
    assert not matches_any("c", ["a", "b"])
    assert not matches_any("", ["a"])
    assert not matches_any("a", [])


def test_settings_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("EXCISE_API_KEYS", "k1, k2")
    monkeypatch.setenv("EXCISE_PORT", "9001")
    settings = ServerSettings(config=tmp_path / "c.yaml")
    assert [k.get_secret_value() for k in settings.api_keys] == ["k1", "k2"]
    assert settings.port == 9001
    assert "k1" not in repr(settings)  # secrets stay out of logs


def test_settings_need_exactly_one_source(tmp_path):
    with pytest.raises(ValidationError, match="config file"):
        ServerSettings()
    with pytest.raises(ValidationError, match="not both"):
        ServerSettings(config=tmp_path, artifacts=tmp_path)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return build_tiny_llama_vllm(tmp_path_factory.mktemp("units") / "tiny")


# --- what the server gives away ------------------------------------------------------------


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "excise.example"])
def test_an_open_server_on_a_reachable_address_is_refused(tmp_path, host):
    with pytest.raises(ValidationError, match="allow-unauthenticated"):
        ServerSettings(config=tmp_path / "c.yaml", host=host)
    ServerSettings(config=tmp_path / "c.yaml", host=host, api_keys="k")
    ServerSettings(config=tmp_path / "c.yaml", host=host, allow_unauthenticated=True)


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost", "127.0.0.2"])
def test_loopback_needs_no_key(tmp_path, host):
    ServerSettings(config=tmp_path / "c.yaml", host=host)


def _app(tiny, tmp_path, **settings):
    from server.app import build_app

    (tmp_path / "c.json").write_text(json.dumps({"variants": [{"name": "t", "base": str(tiny)}]}))
    return build_app(ServerSettings(config=tmp_path / "c.json", toxicity=False, **settings))


def test_docs_are_off_unless_enabled_and_ready_says_only_ready_or_not(tiny, tmp_path):
    from fastapi.testclient import TestClient

    app = _app(tiny, tmp_path)  # no lifespan: no engine starts, so it is not ready
    app.state.ctx.pool.error = f"engine 't' ({tiny}) failed to start: RuntimeError: boom"
    client = TestClient(app)
    for path in ("/docs", "/redoc", "/openapi.json"):
        assert client.get(path).status_code == 404
    ready = client.get("/ready")
    assert ready.status_code == 503 and ready.json()["error"]["message"] == "not ready"
    assert str(tiny) not in ready.text and "boom" not in ready.text
    answer = client.post("/v1/completions", json={"model": "t", "prompt": "x"})
    assert answer.status_code == 503 and str(tiny) not in answer.text and "boom" not in answer.text
    assert TestClient(_app(tiny, tmp_path, docs=True)).get("/openapi.json").status_code == 200


def test_engine_dtype_defaults_to_the_model_folders_on_cpu(tiny):
    from server.config import EngineOptions
    from server.engines import EngineSpec, engine_dtype

    def dtype(**options) -> str:
        return engine_dtype(EngineSpec(key="t", model_path=tiny, options=EngineOptions(**options), enable_lora=False))

    assert json.loads((tiny / "config.json").read_text())["dtype"] == "float32"
    assert dtype() == "float32"  # vLLM's `auto` would be bfloat16 on CPU
    assert dtype(dtype="bfloat16") == "bfloat16" and dtype(dtype="auto") == "auto"


def test_a_failed_toxicity_batch_counts_as_skipped():
    from server.toxicity import LiveToxicityScorer

    skipped, scores = [], []
    scorer = LiveToxicityScorer(8, lambda: skipped.append(1))
    scorer.submit(None, scores.append)  # the classifier cannot score this: the whole batch fails
    scorer.close()
    assert (len(skipped), scores) == (1, [])


def test_chat_logprobs_are_what_vllm_returned(tiny):
    from transformers import AutoTokenizer
    from vllm.logprobs import Logprob
    from vllm.outputs import CompletionOutput

    from server.serving_chat import chat_logprobs

    tok = AutoTokenizer.from_pretrained(tiny)
    out = CompletionOutput(index=0, text="ab", token_ids=[5, 6], cumulative_logprob=None, logprobs=[
        {5: Logprob(-0.25, rank=1, decoded_token="a")},
        {7: Logprob(-0.5, rank=1, decoded_token="c")},  # vLLM gave nothing for the sampled token 6
    ])
    content = chat_logprobs(tok, out, k=1).content
    assert [t.logprob for t in content] == [-0.25, None]  # not an invented -9999
    assert content[1].top_logprobs[0].logprob == -0.5


def test_a_stream_chunk_delta_carries_only_what_changed():
    from server.protocol import ChatChunkChoice, ChatCompletionChunk, DeltaMessage

    first = ChatChunkChoice(index=0, delta=DeltaMessage(role="assistant", content=""))
    later = ChatChunkChoice(index=0, delta=DeltaMessage(content="hi"), finish_reason="stop")
    chunk = ChatCompletionChunk(id="c", created=1, model="m", choices=[first, later]).model_dump()
    assert chunk["object"] == "chat.completion.chunk"
    assert [c["delta"] for c in chunk["choices"]] == [{"role": "assistant", "content": ""}, {"content": "hi"}]
    assert [c["finish_reason"] for c in chunk["choices"]] == [None, "stop"]  # said, as null, until the last
