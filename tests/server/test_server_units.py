"""Fast tests of the server's pure parts: config, experiments, statistics,
correction validation, keys, settings. No engine starts here."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError
from safetensors.torch import save_file

from excise.errors import ExciseError
from server.validation import validate_correction
from server.config import ExperimentConfig, load_config, parse_config
from server.experiments import ArmStats, Experiment, bucket, latency_test, two_proportion_z_test
from server.security import matches_any
from server.settings import ServerSettings
from server_helpers import build_tiny_llama_vllm, excise_hf_export, excise_lora, flip_byte, peft_lora


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


# --- corrections -------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return build_tiny_llama_vllm(tmp_path_factory.mktemp("units") / "tiny")


@pytest.fixture(scope="module")
def tiny_lora(tiny, tmp_path_factory) -> Path:
    """A correction made by `excise prune --granularity neuron` + `excise export --to lora` (rank 8)."""
    return excise_lora(tiny, tmp_path_factory.mktemp("units-lora") / "lora", 0.02)[0]


def _copy(folder: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(folder, tmp_path / folder.name))


def test_valid_correction_passes(tiny, tiny_lora):
    correction = validate_correction(tiny_lora, tiny, max_rank=64)
    assert (correction.rank, correction.verified, correction.manifest.kind) == (8, True, "lora")


def test_a_served_correction_is_hashed_once(tiny, tiny_lora, monkeypatch):
    """Planning a corrected variant verifies its manifest's files once (the contract's check, no second pass)."""
    from excise.artifacts.manifest import Manifest
    from server.variants import plan

    verified, real = [], Manifest.verify_files
    monkeypatch.setattr(Manifest, "verify_files", lambda self, folder: (verified.append(Path(folder)), real(self, folder)))
    plan(parse_config({"variants": [{"name": "fix", "base": str(tiny), "correction": str(tiny_lora)}]}, origin="t"),
         runtime_corrections=False)
    assert verified == [tiny_lora]


def test_correction_over_the_engine_rank_is_refused(tiny, tmp_path):
    lora, _ = excise_lora(tiny, tmp_path / "lora", 0.1)  # 26 neurons a layer: rank 32
    with pytest.raises(ExciseError, match="max_lora_rank 16"):
        validate_correction(lora, tiny, max_rank=16)


def test_correction_for_another_model_is_refused(tiny, tiny_lora, tmp_path):
    other = build_tiny_llama_vllm(tmp_path / "other", seed=1)  # same shapes, other weights
    with pytest.raises(ExciseError, match=f"made for a base model.*{other}"):
        validate_correction(tiny_lora, other, max_rank=64)
    lora = peft_lora(tiny, tmp_path / "peft", {0: [1]})
    save_file({"base_model.model.model.layers.0.mlp.down_proj.lora_A.weight": torch.zeros(8, 999),
               "base_model.model.model.layers.0.mlp.down_proj.lora_B.weight": torch.zeros(128, 8)},
              str(lora / "adapter_model.safetensors"))
    with pytest.raises(ExciseError, match="another model"):
        validate_correction(lora, tiny, max_rank=64, verify=False)


@pytest.mark.parametrize(
    ("tamper", "named"),
    [
        (lambda f: flip_byte(f / "adapter_model.safetensors"), "adapter_model.safetensors does not match"),
        (lambda f: flip_byte(f / "manifest.json", 3), "manifest.json is not valid JSON"),
        (lambda f: (f / "adapter_model.safetensors").write_bytes(b"\0" * 16), "adapter_model.safetensors does not match"),
        (lambda f: (f / "manifest.json").unlink(), "not an excise artifact"),
    ],
    ids=["flipped-byte", "manifest-byte", "truncated", "no-manifest"],
)
def test_tampered_correction_is_refused(tiny, tiny_lora, tmp_path, tamper, named):
    lora = _copy(tiny_lora, tmp_path)
    tamper(lora)
    with pytest.raises(ExciseError, match=named):
        validate_correction(lora, tiny, max_rank=64)


def test_a_peft_lora_without_manifest_is_served_only_unverified(tiny, tmp_path):
    lora = peft_lora(tiny, tmp_path / "peft", {0: [1, 2]})
    with pytest.raises(ExciseError, match="verify: false"):
        validate_correction(lora, tiny, max_rank=64)
    assert validate_correction(lora, tiny, max_rank=64, verify=False).verified is False


def test_pickled_correction_is_refused(tiny, tmp_path):
    lora = peft_lora(tiny, tmp_path / "lora", {0: [1]})
    (lora / "adapter_model.bin").write_bytes(b"pickle")
    with pytest.raises(ExciseError, match="pickle"):
        validate_correction(lora, tiny, max_rank=64, verify=False)


def test_manifest_file_names_cannot_leave_the_artifact(tiny, tiny_lora, tmp_path):
    """A listed name is joined to the folder: `..`, absolute paths and links out of it are refused."""
    from excise.artifacts.atomic import sha256_file

    secret = tmp_path / "secret.txt"
    secret.write_text("outside")
    for name in ("../secret.txt", str(secret), "sub/x"):
        lora = _copy(tiny_lora, tmp_path / name.replace("/", "_"))
        manifest = json.loads((lora / "manifest.json").read_text())
        manifest["files"][name] = sha256_file(secret)
        (lora / "manifest.json").write_text(json.dumps(manifest))
        with pytest.raises(ExciseError, match="not a plain file name"):
            validate_correction(lora, tiny, max_rank=64)
    lora = _copy(tiny_lora, tmp_path / "linked")
    (lora / "adapter_model.safetensors").unlink()
    (lora / "adapter_model.safetensors").symlink_to(tiny_lora / "adapter_model.safetensors")
    with pytest.raises(ExciseError, match="outside the artifact folder"):
        validate_correction(lora, tiny, max_rank=64)


def test_confine_resolves_links_and_answers_every_refusal_alike(tmp_path):
    from server.corrections import OUTSIDE_ROOT, confine

    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "ok").mkdir(parents=True)
    outside.mkdir()
    (root / "link").symlink_to(outside)
    assert confine("ok", root) == (root / "ok").resolve()
    assert confine(str(root / "ok"), root) == (root / "ok").resolve()
    for path in ("link", "../outside", str(outside), "missing", "/"):
        with pytest.raises(ExciseError) as info:
            confine(path, root)
        assert str(info.value) == OUTSIDE_ROOT
    with pytest.raises(ExciseError, match="corrections root"):
        confine("ok", None)  # no root configured: runtime corrections load nothing


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


# --- planning engines and discovering artifacts ---------------------------------------


@pytest.fixture(scope="module")
def tiny_pruned(tiny, tmp_path_factory) -> Path:
    """A pruned model made by `excise prune` + `excise export --to hf`."""
    return excise_hf_export(tiny, tmp_path_factory.mktemp("units-hf") / "pruned")


def test_plan_shares_one_engine_per_base_and_serves_corrections_as_lora(tiny, tiny_lora, tiny_pruned):
    from server.variants import plan

    config = parse_config({"variants": [
        {"name": "dense", "base": str(tiny)},
        {"name": "fixed", "base": str(tiny), "correction": str(tiny_lora)},
        {"name": "pruned", "base": str(tiny), "weights": str(tiny_pruned)},
    ]}, origin="test")
    the_plan = plan(config, runtime_corrections=False)
    assert [(s.key, s.enable_lora) for s in the_plan.specs] == [("tiny", True), ("pruned", False)]
    v = the_plan.variants
    assert v["dense"].engine_key == v["fixed"].engine_key == "tiny" and v["dense"].lora is None
    assert v["fixed"].lora.lora_path == str(tiny_lora)
    assert v["pruned"].engine_key == "pruned" and v["pruned"].manifest.kind == "hf"
    assert all(variant.verified for variant in v.values())


def test_plan_fails_fast_on_a_bad_correction(tiny, tmp_path):
    from server.variants import plan

    lora, _ = excise_lora(tiny, tmp_path / "fix", 0.1)
    config = parse_config({"engine_defaults": {"max_lora_rank": 16},
                           "variants": [{"name": "fixed", "base": str(tiny), "correction": str(lora)}]}, origin="t")
    with pytest.raises(ExciseError, match="max_lora_rank"):
        plan(config, runtime_corrections=False)


def _plan(variant: dict):
    from server.variants import plan

    return plan(parse_config({"variants": [variant]}, origin="t"), runtime_corrections=False)


@pytest.mark.parametrize(
    ("tamper", "named"),
    [
        (lambda f: flip_byte(f / "model.safetensors"), "model.safetensors does not match"),
        (lambda f: flip_byte(f / "manifest.json", 3), "manifest.json is not valid JSON"),
        (lambda f: (f / "model.safetensors").write_bytes((f / "model.safetensors").read_bytes()[:4096]),
         "model.safetensors does not match"),
        (lambda f: (f / "manifest.json").unlink(), "not an excise artifact"),
    ],
    ids=["flipped-byte", "manifest-byte", "truncated", "no-manifest"],
)
def test_tampered_weights_in_a_config_are_refused_before_any_engine(tiny, tiny_pruned, tmp_path, tamper, named):
    pruned = _copy(tiny_pruned, tmp_path)
    tamper(pruned)
    with pytest.raises(ExciseError, match=named):
        _plan({"name": "pruned", "base": str(tiny), "weights": str(pruned)})


def test_exported_weights_must_come_from_the_variants_base(tiny_pruned, tmp_path):
    other = build_tiny_llama_vllm(tmp_path / "other", seed=1)
    with pytest.raises(ExciseError, match="made for a base model"):
        _plan({"name": "pruned", "base": str(other), "weights": str(tiny_pruned)})


def test_unverified_variants_are_marked(tiny, tmp_path):
    lora = peft_lora(tiny, tmp_path / "peft", {0: [3]})
    with pytest.raises(ExciseError, match="verify: false"):
        _plan({"name": "third-party", "base": str(tiny), "correction": str(lora)})
    variant = _plan({"name": "third-party", "base": str(tiny), "correction": str(lora), "verify": False}).variants
    assert variant["third-party"].verified is False and variant["third-party"].manifest is None


def test_artifacts_folder_becomes_variants(tiny, tmp_path):
    from server.config import discover_artifacts
    from server.variants import plan

    excise_lora(tiny, tmp_path / "artifacts" / "tiny-detox", 0.25)  # 64 neurons a layer: rank 64
    excise_hf_export(tiny, tmp_path / "artifacts" / "tiny-pruned")
    (tmp_path / "artifacts" / "notes").mkdir()
    config = discover_artifacts(tmp_path / "artifacts")
    by_name = {v.name: v for v in config.variants}
    assert set(by_name) == {"tiny", "tiny-detox", "tiny-pruned"}  # the mask artifacts are not served
    assert by_name["tiny-detox"].correction == tmp_path / "artifacts" / "tiny-detox"
    assert by_name["tiny"].base == str(tiny) and by_name["tiny"].correction is None
    assert config.engine_defaults.max_lora_rank == 64  # sized to the largest correction
    assert plan(config, runtime_corrections=False).variants["tiny-pruned"].manifest.kind == "hf"
    flip_byte(tmp_path / "artifacts" / "tiny-pruned" / "model.safetensors")
    with pytest.raises(ExciseError, match="model.safetensors does not match"):
        plan(discover_artifacts(tmp_path / "artifacts"), runtime_corrections=False)
    with pytest.raises(ExciseError, match="no servable artifact"):
        discover_artifacts(tmp_path / "artifacts" / "notes")


def test_two_artifacts_served_under_one_name_are_refused(tiny, tmp_path):
    from server.config import discover_artifacts

    excise_hf_export(tiny, tmp_path / "artifacts" / "a b")
    shutil.copytree(tmp_path / "artifacts" / "a b", tmp_path / "artifacts" / "a-b")
    with pytest.raises(ExciseError, match="both be served as 'a-b'"):
        discover_artifacts(tmp_path / "artifacts")


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
