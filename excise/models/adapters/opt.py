"""OPT decoders (facebook/opt-*): LayerNorm, ReLU MLP fc1/fc2, learned positions."""

from __future__ import annotations

import sys

from torch import nn

from excise.errors import ExciseError
from excise.models.adapters.base import AttentionBlock, DecoderLayer, MlpBlock, ModelAdapter


class OptAdapter(ModelAdapter):
    model_types = ("opt",)
    mlp_width_key = "ffn_dim"

    def layer_modules(self) -> list[nn.Module]:
        return list(self.model.model.decoder.layers)

    def describe_layer(self, index: int, layer: nn.Module) -> DecoderLayer:
        attn = layer.self_attn
        num_heads = self.config.num_attention_heads
        attention = AttentionBlock(
            q_proj=attn.q_proj,
            k_proj=attn.k_proj,
            v_proj=attn.v_proj,
            o_proj=attn.out_proj,
            num_heads=num_heads,
            num_kv_heads=num_heads,
            head_dim=self.config.hidden_size // num_heads,
        )
        return DecoderLayer(
            index=index,
            attention=attention,
            mlp=MlpBlock(inputs=(layer.fc1,), output=layer.fc2),
            norms=(layer.self_attn_layer_norm, layer.final_layer_norm),
        )

    def embeddings(self) -> tuple[nn.Module, ...]:
        decoder = self.model.model.decoder
        return (decoder.embed_tokens, decoder.embed_positions)

    def final_norm(self) -> nn.Module:
        return self.model.model.decoder.final_layer_norm

    def lrp_patches(self) -> list:
        """lxt has no OPT map; this one is built from its LayerNorm, Dropout and attention rules.

        The MLP needs no patch: through ReLU, gradient x input already is the identity rule
        (relu(x)/x is the ReLU gradient), so fc1 -> ReLU -> fc2 propagates LRP as it is.
        """
        from excise.lrp.patching import attention_patches, dropout_patches, layer_norm_patches

        if self.config.activation_function != "relu":
            raise ExciseError(
                f"LRP rules for OPT assume a ReLU MLP; this model uses {self.config.activation_function!r}"
            )
        layer = self.layer_modules()[0]
        return [
            *layer_norm_patches(type(layer.self_attn_layer_norm)),
            *dropout_patches(),
            *attention_patches(sys.modules[type(layer.self_attn).__module__]),
        ]
