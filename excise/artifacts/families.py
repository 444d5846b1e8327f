"""What each supported model family looks like on disk: config keys and module names, declared once.

The model adapters (`excise.models.adapters`) walk a loaded model through these names; the
artifact contract reads them to check a folder against a base model's `config.json` without
loading it (the MLP width of a mask, the modules a LoRA may target). Light: no torch here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from excise.errors import ExciseError


@dataclass(frozen=True)
class Family:
    name: str
    model_types: tuple[str, ...]
    #: config field holding the MLP width (changed by structured pruning)
    mlp_width_key: str
    #: dotted path from the model to its list of decoder layers
    layers: str
    #: dotted paths inside a decoder layer: q, k, v and output projection of attention
    attention: tuple[str, str, str, str]
    #: the MLP projections whose output rows are neurons, and the one whose input columns are
    mlp_inputs: tuple[str, ...]
    mlp_output: str
    norms: tuple[str, ...]
    #: per model_type, the config fields (query heads, key/value heads, head size) through which a
    #: model with fewer heads per layer is expressed; absent where transformers or vLLM cannot
    head_config_keys: dict[str, tuple[str, str, str]] = field(default_factory=dict)

    def linear_dims(self, config: dict) -> dict[str, tuple[int, int]]:
        """(in_features, out_features) of every linear module inside a decoder layer, by its path there."""
        hidden, heads = config["hidden_size"], config["num_attention_heads"]
        kv_heads = config.get("num_key_value_heads") or heads
        head_dim = config.get("head_dim") or hidden // heads
        width = config[self.mlp_width_key]
        q, k, v, o = self.attention
        return {
            q: (hidden, heads * head_dim), k: (hidden, kv_heads * head_dim), v: (hidden, kv_heads * head_dim),
            o: (heads * head_dim, hidden),
            **{name: (hidden, width) for name in self.mlp_inputs}, self.mlp_output: (width, hidden),
        }


LLAMA = Family(
    name="llama",
    model_types=("llama", "mistral", "qwen2"),
    mlp_width_key="intermediate_size",
    layers="model.layers",
    attention=("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj"),
    mlp_inputs=("mlp.gate_proj", "mlp.up_proj"),
    mlp_output="mlp.down_proj",
    norms=("input_layernorm", "post_attention_layernorm"),
    # vLLM's Qwen2 derives the head size from hidden_size / heads, so fewer heads cannot be expressed there.
    head_config_keys={t: ("num_attention_heads", "num_key_value_heads", "head_dim") for t in ("llama", "mistral")},
)
OPT = Family(
    name="opt",
    model_types=("opt",),
    mlp_width_key="ffn_dim",
    layers="model.decoder.layers",
    attention=("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj"),
    mlp_inputs=("fc1",),
    mlp_output="fc2",
    norms=("self_attn_layer_norm", "final_layer_norm"),
)
#: the one wording of "this architecture is not one excise knows"; the adapters' registry uses it too
UNSUPPORTED = "model type {name!r} is not supported; supported: {choices}"

FAMILIES: dict[str, Family] = {t: family for family in (LLAMA, OPT) for t in family.model_types}


def family_of(model_type: str) -> Family:
    try:
        return FAMILIES[model_type]
    except KeyError:
        raise ExciseError(UNSUPPORTED.format(name=model_type, choices=", ".join(FAMILIES))) from None
