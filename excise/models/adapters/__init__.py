"""Registry of model-family adapters: the only place that maps `model_type` to code."""

from __future__ import annotations

from torch import nn

from excise.errors import ExciseError
from excise.models.adapters.base import (
    AttentionBlock,
    DecoderLayer,
    MlpBlock,
    ModelAdapter,
)
from excise.models.adapters.llama import LlamaAdapter
from excise.models.adapters.opt import OptAdapter

ADAPTERS: dict[str, type[ModelAdapter]] = {}


def register_adapter(adapter: type[ModelAdapter]) -> type[ModelAdapter]:
    for model_type in adapter.model_types:
        if model_type in ADAPTERS:
            raise ValueError(f"model_type {model_type!r} already has adapter {ADAPTERS[model_type].__name__}")
        ADAPTERS[model_type] = adapter
    return adapter


register_adapter(LlamaAdapter)
register_adapter(OptAdapter)


def supported_model_types() -> list[str]:
    return sorted(ADAPTERS)


def adapter_class(model_type: str) -> type[ModelAdapter]:
    try:
        return ADAPTERS[model_type]
    except KeyError:
        raise ExciseError(
            f"model type {model_type!r} is not supported; supported: {', '.join(supported_model_types())}"
        ) from None


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
    "register_adapter",
    "supported_model_types",
]
