"""validate_artifact: what a server (and export itself) refuses to load."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from excise.errors import ExciseError
from excise.export.pipeline import export_artifact
from excise.artifacts import validation
from excise.artifacts.manifest import MANIFEST_NAME, Manifest
from excise.artifacts.masks import MaskSet
from excise.artifacts.validation import validate_artifact, validate_derived

from export_helpers import neuron_masks, row_masks


@pytest.fixture
def hf_export(tiny_llama_dir, mask_artifact, tmp_path):
    export_artifact(mask_artifact(tiny_llama_dir, row_masks(tiny_llama_dir, 0.5)), "hf", tmp_path / "hf")
    return tmp_path / "hf"


def rehash(folder):
    """What someone who tampers on purpose would do: make the manifest's hashes match again."""
    Manifest.load(folder, verify=False).save(folder)


def edit_json(path, change):
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_a_clean_export_validates(hf_export, tiny_llama_dir):
    validated = validate_artifact(hf_export)
    assert validated.manifest.kind == "hf" and validated.base_path == tiny_llama_dir


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c: c.update(auto_map={"AutoModelForCausalLM": "modeling.Custom"}), "custom code"),
        (lambda c: c.update(sparsity_config={"format": "sparse-bitmask"}), "sparsity_config"),
        (lambda c: c.update(quantization_config={"quant_method": "mystery"}), "quantization_config"),
    ],
)
def test_configs_that_load_code_or_non_dense_weights_are_refused(hf_export, change, message):
    edit_json(hf_export / "config.json", change)
    rehash(hf_export)
    with pytest.raises(ExciseError, match=message):
        validate_artifact(hf_export)


def test_pickle_files_are_refused(hf_export):
    torch.save({}, hf_export / "pytorch_model.bin")
    with pytest.raises(ExciseError, match="pickle files.*safetensors only"):
        validate_artifact(hf_export)


def test_unlisted_files_are_refused(hf_export):
    shutil.copy(hf_export / "config.json", hf_export / "extra.json")
    with pytest.raises(ExciseError, match="does not list.*extra.json"):
        validate_artifact(hf_export)


def test_newer_manifest_version_is_refused(hf_export):
    edit_json(hf_export / MANIFEST_NAME, lambda m: m.update(format_version=99))
    with pytest.raises(ExciseError, match="format version 99, newer"):
        validate_artifact(hf_export)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda w: w.update({"model.norm.weight": w["model.norm.weight"][:32]}), r"shape \[32\].*\[64\]"),
        (lambda w: w.update({"model.norm.weight": w["model.norm.weight"].to(torch.int32)}), "dtype I32"),
        (lambda w: w.pop("model.norm.weight"), "missing"),
    ],
)
def test_tensors_must_match_the_base(hf_export, change, message):
    weights = load_file(hf_export / "model.safetensors")
    change(weights)
    save_file(weights, hf_export / "model.safetensors", metadata={"format": "pt"})
    rehash(hf_export)
    with pytest.raises(ExciseError, match=message):
        validate_artifact(hf_export)


def test_lora_config_and_shapes_are_checked(tiny_llama_dir, mask_artifact, tmp_path):
    folder = tmp_path / "lora"
    export_artifact(mask_artifact(tiny_llama_dir, neuron_masks(2, 128, 4)), "lora", folder)
    validate_artifact(folder)
    edit_json(folder / "adapter_config.json", lambda c: c.update(r=12, lora_alpha=12))
    rehash(folder)
    with pytest.raises(ExciseError, match="r in"):
        validate_artifact(folder)
    edit_json(folder / "adapter_config.json", lambda c: c.update(r=8, lora_alpha=8))
    weights = load_file(folder / "adapter_model.safetensors")
    name = "base_model.model.model.layers.0.mlp.down_proj.lora_B.weight"
    weights[name] = torch.zeros(128, 8)
    save_file(weights, folder / "adapter_model.safetensors")
    rehash(folder)
    with pytest.raises(ExciseError, match=r"lora_B.weight has shape \[128, 8\].*\[64, 8\]"):
        validate_artifact(folder)


def test_a_mask_that_does_not_fit_the_base_is_refused(tiny_llama_dir, tiny_opt_dir, mask_artifact):
    artifact = mask_artifact(tiny_llama_dir, neuron_masks(2, 128, 4))
    opt_masks = row_masks(tiny_opt_dir, 0.5)
    opt_masks.save(artifact)
    rehash(artifact)
    with pytest.raises(ExciseError, match="does not fit the base model"):
        validate_artifact(artifact)


def test_an_export_reads_the_masks_and_hashes_the_base_once(tiny_llama_dir, mask_artifact, tmp_path, monkeypatch):
    artifact = mask_artifact(tiny_llama_dir, row_masks(tiny_llama_dir, 0.5))
    calls = {"masks": 0, "base": 0}
    load_masks, hash_base = MaskSet.load.__func__, validation.weights_sha256

    def counted_load(cls, folder):
        calls["masks"] += 1
        return load_masks(cls, folder)

    def counted_hash(folder):
        calls["base"] += 1
        return hash_base(folder)

    monkeypatch.setattr(MaskSet, "load", classmethod(counted_load))
    monkeypatch.setattr(validation, "weights_sha256", counted_hash)
    export_artifact(artifact, "sparse", tmp_path / "sparse")
    assert calls == {"masks": 1, "base": 1}


def test_a_derived_artifact_must_name_its_parents_base(hf_export, tiny_opt_dir, mask_artifact):
    parent = validate_artifact(hf_export)
    other = validate_artifact(mask_artifact(tiny_opt_dir, row_masks(tiny_opt_dir, 0.5), name="opt-mask"))
    assert validate_derived(hf_export, parent).base_path == parent.base_path
    with pytest.raises(ExciseError, match="names another base model"):
        validate_derived(hf_export, other)
