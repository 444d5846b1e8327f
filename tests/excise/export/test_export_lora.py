import json

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file

from excise.errors import ExciseError
from excise.export.lora import lora_rank
from excise.export.pipeline import export_artifact
from excise.artifacts.masks import MaskSet
from excise.models.loading import load_model

from export_helpers import logits, masked_model, neuron_masks


def test_lora_is_the_exact_low_rank_delta(tiny_llama_dir, mask_artifact, tmp_path):
    masks = neuron_masks(2, 128, [5, 3])
    manifest = export_artifact(mask_artifact(tiny_llama_dir, masks), "lora", tmp_path / "lora")

    config = json.loads((tmp_path / "lora" / "adapter_config.json").read_text())
    assert (config["r"], config["lora_alpha"], config["target_modules"]) == (8, 8, ["down_proj"])
    assert manifest.metrics["lora"] == {"rank": 8, "max_removed_neurons": 5}
    tensors = load_file(tmp_path / "lora" / "adapter_model.safetensors")
    base = load_file(tiny_llama_dir / "model.safetensors")
    for layer, kept in masks.neurons.items():
        name = f"model.layers.{layer}.mlp.down_proj"
        lora_a = tensors[f"base_model.model.{name}.lora_A.weight"].double()  # [8, 128]
        lora_b = tensors[f"base_model.model.{name}.lora_B.weight"].double()  # [64, 8]
        weight = base[f"{name}.weight"].double()
        expected = weight.clone()
        expected[:, ~kept] = 0.0  # closed form: the removed neurons' columns gone
        assert torch.equal(weight + lora_b @ lora_a, expected)


@pytest.mark.parametrize("family", ["llama", "opt"])
def test_base_plus_adapter_equals_masked_model(family, request, mask_artifact, tmp_path):
    model_dir = request.getfixturevalue(f"tiny_{family}_dir")
    masks = neuron_masks(2, 128, 20)
    export_artifact(mask_artifact(model_dir, masks), "lora", tmp_path / "lora")

    # the masked model also zeroes the removed neurons' gate/up (fc1) rows; the adapter touches down_proj
    # (fc2) only and is still exact, because a removed neuron reaches the output through its column alone
    masked = masked_model(model_dir, masks)
    inputs = [layer.mlp.gate_proj if family == "llama" else layer.fc1 for layer in _layers(masked)]
    assert all((projection.weight[~masks.neurons[i]] == 0).all() for i, projection in enumerate(inputs))
    adapted = PeftModel.from_pretrained(load_model(model_dir).model, tmp_path / "lora").eval()
    assert (logits(adapted) - logits(masked)).abs().max() < 1e-4
    assert (logits(load_model(model_dir).model) - logits(masked)).abs().max() > 1e-2


def _layers(model):
    return model.model.layers if hasattr(model.model, "layers") else model.model.decoder.layers


def test_rank_is_padded_to_a_vllm_rank_or_refused():
    assert lora_rank(neuron_masks(1, 64, 9)) == (9, 16)
    assert lora_rank(neuron_masks(1, 640, 320)) == (320, 320)
    with pytest.raises(ExciseError, match="more than vLLM's largest LoRA rank.*--to hf"):
        lora_rank(neuron_masks(2, 1024, [10, 513]))


def test_lora_of_unstructured_or_head_mask_is_refused(tiny_llama_dir, mask_artifact, tmp_path):
    masks = MaskSet(neurons=neuron_masks(2, 128, 4).neurons, heads={0: torch.tensor([True, True, False, True])})
    with pytest.raises(ExciseError, match="not a neuron-only mask.*--to hf"):
        export_artifact(mask_artifact(tiny_llama_dir, masks), "lora", tmp_path / "lora")
    assert not (tmp_path / "lora").exists()
