"""Llama-style decoders: Llama 1-3, SmolLM2, TinyLlama, Mistral, Qwen2 (q/k/v biases)."""

from __future__ import annotations

import sys

from torch import nn

from excise.models.adapters.base import AttentionBlock, DecoderLayer, MlpBlock, ModelAdapter


class LlamaAdapter(ModelAdapter):
    model_types = ("llama", "mistral", "qwen2")
    mlp_width_key = "intermediate_size"
    # vLLM's Qwen2 derives the head size from hidden_size / heads, so fewer heads cannot be expressed there.
    head_config_keys = {t: ("num_attention_heads", "num_key_value_heads", "head_dim") for t in ("llama", "mistral")}

    def layer_modules(self) -> list[nn.Module]:
        return list(self.model.model.layers)

    def describe_layer(self, index: int, layer: nn.Module) -> DecoderLayer:
        attn, mlp = layer.self_attn, layer.mlp
        num_heads = self.config.num_attention_heads
        head_dim = getattr(self.config, "head_dim", None) or self.config.hidden_size // num_heads
        attention = AttentionBlock(
            q_proj=attn.q_proj,
            k_proj=attn.k_proj,
            v_proj=attn.v_proj,
            o_proj=attn.o_proj,
            num_heads=num_heads,
            num_kv_heads=getattr(self.config, "num_key_value_heads", None) or num_heads,
            head_dim=head_dim,
        )
        return DecoderLayer(
            index=index,
            attention=attention,
            mlp=MlpBlock(inputs=(mlp.gate_proj, mlp.up_proj), output=mlp.down_proj),
            norms=(layer.input_layernorm, layer.post_attention_layernorm),
        )

    def embeddings(self) -> tuple[nn.Module, ...]:
        return (self.model.model.embed_tokens,)

    def final_norm(self) -> nn.Module:
        return self.model.model.norm

    def lrp_patches(self) -> list:
        """lxt's Llama AttnLRP map, built from this model's own classes so that Mistral and
        Qwen2 (same structure, own modeling modules) get the same rules."""
        from excise.lrp.patching import attention_patches, dropout_patches, gated_mlp_patches, rms_norm_patches

        layer = self.layer_modules()[0]
        return [
            *gated_mlp_patches(type(layer.mlp)),
            *rms_norm_patches(type(layer.input_layernorm)),
            *dropout_patches(),
            *attention_patches(sys.modules[type(layer.self_attn).__module__]),
        ]
