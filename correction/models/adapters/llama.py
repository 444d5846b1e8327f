"""Llama-style decoders: Llama 1-3, SmolLM2, TinyLlama, Mistral, Qwen2 (q/k/v biases)."""

from __future__ import annotations

from torch import nn

from correction.models.adapters.base import AttentionBlock, DecoderLayer, MlpBlock, ModelAdapter


class LlamaAdapter(ModelAdapter):
    model_types = ("llama", "mistral", "qwen2")
    mlp_width_key = "intermediate_size"

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
