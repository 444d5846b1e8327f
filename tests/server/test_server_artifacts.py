"""Fast tests of what the server loads: correction validation, the corrections root, engine
planning and artifact discovery, on a tiny random Llama and artifacts excise makes of it.
No engine starts here."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from excise.errors import ExciseError
from server.config import parse_config
from server.validation import validate_correction
from server_helpers import build_tiny_llama_vllm, excise_hf_export, excise_lora, flip_byte, peft_lora

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


def test_an_embedded_base_not_prepared_is_refused_in_one_line(tmp_path, monkeypatch):
    """The server only locates prepared models (preparing is the library's, done by `excise serve`)."""
    monkeypatch.setenv("EXCISE_HOME", str(tmp_path / "home"))
    with pytest.raises(ExciseError, match="'smollm2' is not prepared.*excise models prepare smollm2") as info:
        _plan({"name": "dense", "base": "smollm2"})
    assert "\n" not in str(info.value)
    assert not (tmp_path / "home" / "models" / "smollm2").exists()  # nothing converted, nothing half-written
