import pytest
import torch
from transformers import AutoModelForCausalLM

from excise.errors import ExciseError
from excise.models.adapters import ADAPTERS, adapter_class, get_adapter
from excise.models.adapters.llama import LlamaAdapter

EXPECTED_LINEARS_PER_LAYER = {"llama": 7, "qwen2": 7, "opt": 6}


def load(folder):
    return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()


def test_layers_heads_and_neurons_are_found(tiny_model_dir):
    model = load(tiny_model_dir)
    adapter = get_adapter(model)
    layers = adapter.layers()
    assert len(layers) == model.config.num_hidden_layers == 2
    for layer in layers:
        attention = layer.attention
        assert attention.q_proj.out_features == attention.num_heads * attention.head_dim
        assert attention.k_proj.out_features == attention.num_kv_heads * attention.head_dim
        assert attention.o_proj.in_features == attention.num_heads * attention.head_dim
        assert layer.mlp.num_neurons == getattr(model.config, adapter.mlp_width_key) == 128
        assert all(p.out_features == layer.mlp.num_neurons for p in layer.mlp.inputs)


def test_prunable_linears_exclude_embeddings_and_head(tiny_model_dir):
    model = load(tiny_model_dir)
    adapter = get_adapter(model)
    linears = adapter.prunable_linears()
    assert len(linears) == 2 * EXPECTED_LINEARS_PER_LAYER[model.config.model_type]
    excluded = {id(adapter.lm_head()), *(id(m) for m in adapter.embeddings())}
    assert not excluded & {id(m) for m in linears.values()}
    assert all(name.startswith("model.") for name in linears)


def test_grouped_query_attention_is_described(tiny_llama_dir):
    layer = get_adapter(load(tiny_llama_dir)).layers()[0]
    assert (layer.attention.num_heads, layer.attention.num_kv_heads, layer.attention.heads_per_group) == (4, 2, 2)


@torch.no_grad()
def test_neuron_index_maps_to_output_column(tiny_model_dir):
    """Zeroing the activation of neuron i equals zeroing column i of the output projection."""
    model = load(tiny_model_dir)
    mlp = get_adapter(model).layers()[1].mlp
    ids = torch.arange(12).view(1, 12)
    neuron = 5

    def silence(_module, args):
        hidden = args[0].clone()
        hidden[..., neuron] = 0
        return (hidden,)

    handle = mlp.output.register_forward_pre_hook(silence)
    expected = model(input_ids=ids).logits
    handle.remove()
    mlp.output.weight[:, neuron] = 0
    assert torch.allclose(model(input_ids=ids).logits, expected, atol=1e-6)


def test_unknown_architecture_names_supported_ones():
    with pytest.raises(ExciseError, match="supported: .*llama.*opt"):
        adapter_class("gpt_neox")
    assert {"llama", "qwen2", "opt"} <= set(ADAPTERS)


def test_registry_refuses_duplicates():
    with pytest.raises(ValueError, match="already has adapter"):
        ADAPTERS.add("llama", LlamaAdapter)
