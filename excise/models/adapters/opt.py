"""OPT decoders (facebook/opt-*): LayerNorm, ReLU MLP fc1/fc2, learned positions."""

from __future__ import annotations

import sys

from torch import nn

from excise.artifacts.families import OPT
from excise.errors import ExciseError
from excise.models.adapters.base import ModelAdapter


class OptAdapter(ModelAdapter):
    family = OPT

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
