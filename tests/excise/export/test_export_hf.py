import torch
from safetensors.torch import load_file

from excise.export.pipeline import export_artifact
from excise.models.loading import load_model, read_config
from excise.artifacts.validation import validate_artifact

from export_helpers import logits, masked_model, neuron_masks, row_masks


def test_hf_export_is_the_masked_model(tiny_model_dir, mask_artifact, tmp_path):
    masks = row_masks(tiny_model_dir, 0.5)
    out = tmp_path / "hf"
    manifest = export_artifact(mask_artifact(tiny_model_dir, masks), "hf", out)

    assert manifest.kind == "hf" and manifest.parent.endswith("mask")
    exported = load_file(out / "model.safetensors")
    base = load_file(tiny_model_dir / "model.safetensors")
    for name, mask in masks.weights.items():  # independent of MaskSet.apply: W where kept, +0.0 elsewhere
        expected = torch.where(mask, base[name], torch.zeros(()))
        assert torch.equal(exported[name].view(torch.int32), expected.view(torch.int32)), name
    for name in set(base) - set(masks.weights):
        assert torch.equal(exported[name], base[name]), name
    config = read_config(out)
    assert "sparsity_config" not in config and "quantization_config" not in config
    reloaded = load_model(out).model
    assert torch.equal(logits(reloaded), logits(masked_model(tiny_model_dir, masks)))
    assert (out / "README.md").read_text().startswith("# excise `hf` export")
    validate_artifact(out)


def test_hf_export_in_bfloat16(tiny_llama_dir, mask_artifact, tmp_path):
    masks = neuron_masks(2, 128, 32)
    out = tmp_path / "hf-bf16"
    export_artifact(mask_artifact(tiny_llama_dir, masks), "hf", out, dtype="bfloat16")
    exported = load_file(out / "model.safetensors")
    assert {t.dtype for t in exported.values()} == {torch.bfloat16}
    down = exported["model.layers.0.mlp.down_proj.weight"]
    assert (down[:, ~masks.neurons[0]] == 0).all() and (down[:, masks.neurons[0]] != 0).all()
