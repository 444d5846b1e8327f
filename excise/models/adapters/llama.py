"""Llama-style decoders: Llama 1-3, SmolLM2, TinyLlama, Mistral, Qwen2 (q/k/v biases)."""

from __future__ import annotations

import sys

from torch import nn

from excise.artifacts.families import LLAMA
from excise.models.adapters.base import ModelAdapter


class LlamaAdapter(ModelAdapter):
    family = LLAMA

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
