import pytest
import torch
from safetensors.torch import load_file

from excise.errors import ExciseError
from excise.export.pipeline import export_artifact
from excise.artifacts.masks import MaskSet
from excise.models.adapters import get_adapter
from excise.models.loading import load_model, read_config

from export_helpers import logits, masked_model, neuron_masks, row_masks


def test_shrunk_neurons_compute_the_masked_model(tiny_model_dir, mask_artifact, tmp_path):
    masks = neuron_masks(2, 128, 48)
    manifest = export_artifact(mask_artifact(tiny_model_dir, masks), "shrunk", tmp_path / "shrunk")

    model = load_model(tmp_path / "shrunk").model
    adapter = get_adapter(model)
    assert read_config(tmp_path / "shrunk")[adapter.mlp_width_key] == 80
    assert manifest.metrics["shrunk"] == {"mlp_width": 80}
    assert all(layer.mlp.num_neurons == 80 for layer in adapter.layers())
    difference = (logits(model) - logits(masked_model(tiny_model_dir, masks))).abs().max()
    assert difference < 1e-4
    dense = load_model(tiny_model_dir).model
    assert (logits(dense) - logits(model)).abs().max() > 1e-2  # the removal changes the model


def test_shrunk_keeps_remaining_weights_in_order(tiny_llama_dir, mask_artifact, tmp_path):
    masks = neuron_masks(2, 128, 16, seed=3)
    export_artifact(mask_artifact(tiny_llama_dir, masks), "shrunk", tmp_path / "shrunk")
    base = load_file(tiny_llama_dir / "model.safetensors")
    shrunk = load_file(tmp_path / "shrunk" / "model.safetensors")
    for layer, kept in masks.neurons.items():
        prefix = f"model.layers.{layer}.mlp."
        assert torch.equal(shrunk[prefix + "up_proj.weight"], base[prefix + "up_proj.weight"][kept])
        assert torch.equal(shrunk[prefix + "down_proj.weight"], base[prefix + "down_proj.weight"][:, kept])


def test_shrunk_heads_where_the_config_can_say_so(tiny_llama_dir, mask_artifact, tmp_path):
    # 4 heads in 2 KV groups: keep one query head in each group, in both layers
    heads = {0: torch.tensor([True, False, False, True]), 1: torch.tensor([False, True, True, False])}
    masks = MaskSet(neurons=neuron_masks(2, 128, 32).neurons, heads=heads)
    manifest = export_artifact(mask_artifact(tiny_llama_dir, masks), "shrunk", tmp_path / "shrunk")

    config = read_config(tmp_path / "shrunk")
    assert (config["num_attention_heads"], config["num_key_value_heads"], config["head_dim"]) == (2, 2, 16)
    assert manifest.metrics["shrunk"] == {"mlp_width": 96, "heads": 2}
    model = load_model(tmp_path / "shrunk").model
    assert (logits(model) - logits(masked_model(tiny_llama_dir, masks))).abs().max() < 1e-4


def test_heads_a_config_cannot_express_stay_as_zeros(tiny_opt_dir, mask_artifact, tmp_path):
    masks = MaskSet(neurons=neuron_masks(2, 128, 32).neurons, heads={0: torch.tensor([True, False, True, True])})
    manifest = export_artifact(mask_artifact(tiny_opt_dir, masks), "shrunk", tmp_path / "shrunk")

    assert "kept as zeros" in manifest.notes and "kept as zeros" in (tmp_path / "shrunk" / "README.md").read_text()
    assert read_config(tmp_path / "shrunk")["num_attention_heads"] == 4
    model = load_model(tmp_path / "shrunk").model
    assert (logits(model) - logits(masked_model(tiny_opt_dir, masks))).abs().max() < 1e-4


@pytest.mark.parametrize(
    ("masks", "message"),
    [
        (neuron_masks(2, 128, [16, 32]), "same number of kept MLP neurons in every layer"),
        (None, "removes no whole MLP neurons"),
    ],
)
def test_shrunk_refuses_what_a_config_cannot_hold(tiny_llama_dir, mask_artifact, tmp_path, masks, message):
    masks = masks or row_masks(tiny_llama_dir, 0.5)
    with pytest.raises(ExciseError, match=message):
        export_artifact(mask_artifact(tiny_llama_dir, masks), "shrunk", tmp_path / "shrunk")
    assert not (tmp_path / "shrunk").exists()
