"""The one description of a decoder-only transformer that the rest of excise uses.

An adapter maps a model family onto: decoder layers, each with an attention block
(q/k/v/o projections, query heads and key/value groups) and an MLP block (the
projections whose output rows are neurons and the projection whose input columns
are neurons), plus norms, embeddings and the LM head. Nothing outside the
adapters looks at `model_type`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from functools import reduce
from typing import ClassVar

from torch import nn

from excise.artifacts.families import Family
from excise.errors import ExciseError


@dataclass(frozen=True)
class AttentionBlock:
    """One layer's attention. Head h owns rows h*head_dim:(h+1)*head_dim of q_proj and
    columns of the same range of o_proj; KV group g owns those rows of k_proj/v_proj."""

    q_proj: nn.Linear
    k_proj: nn.Linear
    v_proj: nn.Linear
    o_proj: nn.Linear
    num_heads: int
    num_kv_heads: int
    head_dim: int

    @property
    def heads_per_group(self) -> int:
        return self.num_heads // self.num_kv_heads


@dataclass(frozen=True)
class MlpBlock:
    """One layer's MLP. Neuron i is row i of every `inputs` projection and column i of `output`."""

    inputs: tuple[nn.Linear, ...]
    output: nn.Linear

    @property
    def num_neurons(self) -> int:
        return self.output.in_features


@dataclass(frozen=True)
class DecoderLayer:
    index: int
    attention: AttentionBlock
    mlp: MlpBlock
    norms: tuple[nn.Module, ...]


def submodule(root: nn.Module, path: str) -> nn.Module:
    """The module at dotted `path` under `root` (a path of `excise.artifacts.families`)."""
    return reduce(getattr, path.split("."), root)


class ModelAdapter(ABC):
    """Knows where things are in one model family; built around a loaded model.

    Config keys and module names come from the family's `excise.artifacts.families.Family`,
    which the artifact contract reads too; a subclass adds what needs the loaded model."""

    family: ClassVar[Family]
    model_types: ClassVar[tuple[str, ...]]
    mlp_width_key: ClassVar[str]
    head_config_keys: ClassVar[dict[str, tuple[str, str, str]]]

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if "family" in cls.__dict__:
            cls.model_types = cls.family.model_types
            cls.mlp_width_key = cls.family.mlp_width_key
            cls.head_config_keys = cls.family.head_config_keys

    def __init__(self, model: nn.Module):
        self.model = model
        self.config = model.config

    def layer_modules(self) -> list[nn.Module]:
        """The decoder layers in order."""
        return list(submodule(self.model, self.family.layers))

    def describe_layer(self, index: int, layer: nn.Module) -> DecoderLayer:
        num_heads = self.config.num_attention_heads
        q, k, v, o = (submodule(layer, path) for path in self.family.attention)
        attention = AttentionBlock(
            q_proj=q, k_proj=k, v_proj=v, o_proj=o,
            num_heads=num_heads,
            num_kv_heads=getattr(self.config, "num_key_value_heads", None) or num_heads,
            head_dim=getattr(self.config, "head_dim", None) or self.config.hidden_size // num_heads,
        )
        mlp = MlpBlock(
            inputs=tuple(submodule(layer, path) for path in self.family.mlp_inputs),
            output=submodule(layer, self.family.mlp_output),
        )
        return DecoderLayer(index=index, attention=attention, mlp=mlp,
                            norms=tuple(submodule(layer, path) for path in self.family.norms))

    @abstractmethod
    def embeddings(self) -> tuple[nn.Module, ...]: ...

    @abstractmethod
    def final_norm(self) -> nn.Module: ...

    def lm_head(self) -> nn.Module:
        return self.model.lm_head

    def layers(self) -> list[DecoderLayer]:
        return [self.describe_layer(i, layer) for i, layer in enumerate(self.layer_modules())]

    def prunable_linears(self) -> dict[str, nn.Linear]:
        """Every linear layer inside the decoder layers, by module name.

        Embeddings, norms and the LM head are not in this set: they are never pruned.
        """
        inside = {id(m) for layer in self.layer_modules() for m in layer.modules()}
        return {
            name: module
            for name, module in self.model.named_modules()
            if isinstance(module, nn.Linear) and id(module) in inside
        }

    def lrp_patches(self) -> list:
        """The lxt AttnLRP rules for this family as `excise.lrp.Patch`es (see excise/lrp)."""
        raise ExciseError(f"LRP rules are not defined for model type {self.config.model_type!r}")

    def module_name(self, module: nn.Module) -> str:
        for name, candidate in self.model.named_modules():
            if candidate is module:
                return name
        raise KeyError("module is not part of this model")
