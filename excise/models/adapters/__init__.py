"""Registry of model-family adapters: the only place that maps `model_type` to code."""

from __future__ import annotations

from torch import nn

from excise.artifacts.families import UNSUPPORTED
from excise.models.adapters.base import (
    AttentionBlock,
    DecoderLayer,
    MlpBlock,
    ModelAdapter,
)
from excise.models.adapters.llama import LlamaAdapter
from excise.models.adapters.opt import OptAdapter
from excise.registry import Registry

#: by `config.json`'s `model_type`; one adapter serves every type it lists
ADAPTERS: Registry[type[ModelAdapter]] = Registry(
    "model type",
    unknown=UNSUPPORTED,
    duplicate="model_type {name!r} already has adapter {existing}",
)
for _adapter in (LlamaAdapter, OptAdapter):
    for _model_type in _adapter.model_types:
        ADAPTERS.add(_model_type, _adapter)


def adapter_class(model_type: str) -> type[ModelAdapter]:
    return ADAPTERS[model_type]


def get_adapter(model: nn.Module) -> ModelAdapter:
    return adapter_class(model.config.model_type)(model)


__all__ = [
    "ADAPTERS",
    "AttentionBlock",
    "DecoderLayer",
    "MlpBlock",
    "ModelAdapter",
    "adapter_class",
    "get_adapter",
]
