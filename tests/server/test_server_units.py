"""Fast tests of the server's pure parts: config, experiments, statistics,
correction validation, keys, settings. No engine starts here."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError
from safetensors.torch import save_file

from correction.errors import ExciseError
from server.adapters import validate_correction
from server.config import ExperimentConfig, load_config, parse_config
from server.experiments import ArmStats, Experiment, bucket, latency_test, two_proportion_z_test
from server.security import matches_any
from server.settings import ServerSettings
from server_helpers import build_tiny_llama_vllm, neuron_lora


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
    assert config.engine_options(config.variants[0]).dtype == "auto"  # defaults kept


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


def test_valid_correction_passes(tiny, tmp_path):
    lora = neuron_lora(tiny, tmp_path / "lora", {0: [1, 2, 3]})
    assert validate_correction(lora, tiny, max_rank=64).rank == 8


def test_correction_over_the_engine_rank_is_refused(tiny, tmp_path):
    lora = neuron_lora(tiny, tmp_path / "lora", {0: list(range(20))})
    with pytest.raises(ExciseError, match="max_lora_rank 16"):
        validate_correction(lora, tiny, max_rank=16)


def test_correction_for_another_model_is_refused(tiny, tmp_path):
    lora = neuron_lora(tiny, tmp_path / "lora", {0: [1]}, manifest=False)
    save_file({"base_model.model.model.layers.0.mlp.down_proj.lora_A.weight": torch.zeros(8, 999),
               "base_model.model.model.layers.0.mlp.down_proj.lora_B.weight": torch.zeros(128, 8)},
              str(lora / "adapter_model.safetensors"))
    with pytest.raises(ExciseError, match="another model"):
        validate_correction(lora, tiny, max_rank=64)


def test_tampered_correction_is_refused(tiny, tmp_path):
    lora = neuron_lora(tiny, tmp_path / "lora", {0: [1]})
    with open(lora / "adapter_model.safetensors", "ab") as f:
        f.write(b"x")
    with pytest.raises(ExciseError, match="tampered"):
        validate_correction(lora, tiny, max_rank=64)


def test_pickled_correction_is_refused(tiny, tmp_path):
    lora = neuron_lora(tiny, tmp_path / "lora", {0: [1]}, manifest=False)
    (lora / "adapter_model.bin").write_bytes(b"pickle")
    with pytest.raises(ExciseError, match="pickle"):
        validate_correction(lora, tiny, max_rank=64)


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


def _hf_export(tiny: Path, out: Path) -> Path:
    """A copy of the tiny model carrying an `hf` export manifest."""
    import shutil

    from correction.manifest import BaseModelRef, Manifest

    shutil.copytree(tiny, out)
    ref = BaseModelRef(spec=str(tiny), path=str(tiny), model_type="llama", weights_sha256="test")
    Manifest(kind="hf", base_model=ref).save(out)
    return out


def test_plan_shares_one_engine_per_base_and_serves_corrections_as_lora(tiny, tmp_path):
    from server.variants import plan

    lora = neuron_lora(tiny, tmp_path / "fix", {1: [4, 5]})
    pruned = _hf_export(tiny, tmp_path / "pruned")
    config = parse_config({"variants": [
        {"name": "dense", "base": str(tiny)},
        {"name": "fixed", "base": str(tiny), "correction": str(lora)},
        {"name": "pruned", "base": str(tiny), "weights": str(pruned)},
    ]}, origin="test")
    the_plan = plan(config, runtime_corrections=False)
    assert [(s.key, s.enable_lora) for s in the_plan.specs] == [("tiny", True), ("pruned", False)]
    v = the_plan.variants
    assert v["dense"].engine_key == v["fixed"].engine_key == "tiny" and v["dense"].lora is None
    assert v["fixed"].lora.lora_path == str(lora)
    assert v["pruned"].engine_key == "pruned"


def test_plan_fails_fast_on_a_bad_correction(tiny, tmp_path):
    from server.variants import plan

    lora = neuron_lora(tiny, tmp_path / "fix", {0: list(range(20))})
    config = parse_config({"engine_defaults": {"max_lora_rank": 16},
                           "variants": [{"name": "fixed", "base": str(tiny), "correction": str(lora)}]}, origin="t")
    with pytest.raises(ExciseError, match="max_lora_rank"):
        plan(config, runtime_corrections=False)


def test_artifacts_folder_becomes_variants(tiny, tmp_path):
    from server.config import discover_artifacts

    neuron_lora(tiny, tmp_path / "artifacts" / "tiny-detox", {0: list(range(70))})  # rank 128
    _hf_export(tiny, tmp_path / "artifacts" / "tiny-pruned")
    (tmp_path / "artifacts" / "notes").mkdir()
    config = discover_artifacts(tmp_path / "artifacts")
    by_name = {v.name: v for v in config.variants}
    assert set(by_name) == {"tiny", "tiny-detox", "tiny-pruned"}
    assert by_name["tiny-detox"].correction == tmp_path / "artifacts" / "tiny-detox"
    assert by_name["tiny"].base == str(tiny) and by_name["tiny"].correction is None
    assert config.engine_defaults.max_lora_rank == 128  # sized to the largest correction
    with pytest.raises(ExciseError, match="no servable artifact"):
        discover_artifacts(tmp_path / "artifacts" / "notes")
