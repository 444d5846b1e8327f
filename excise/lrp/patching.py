"""Apply a model family's AttnLRP rules (lxt efficient mode) for the duration of a block.

lxt patches classes and modeling modules in place and cannot undo that. Here every
change is a `Patch` (owner, attribute, replacement) recorded with what it replaced, so
`lrp_patched` restores the process exactly on exit. The patches are process-wide while
active (they change classes, not one model): never enter `lrp_patched` in a process that
serves or evaluates other models concurrently; `excise.scoring.score_in_worker` runs
LRP in a separate process for that reason.

Which classes get which rule is per-family knowledge and lives in the adapters
(`ModelAdapter.lrp_patches()`), built from the helpers below.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import MethodType, ModuleType
from typing import Any

from torch import nn

from excise.lrp.compat import load_lxt, lxt_attention_interface

_MISSING = object()
_active = threading.Lock()


@dataclass(frozen=True)
class Patch:
    """Set `owner.attribute = replacement` (owner: a class or a module)."""

    owner: Any
    attribute: str
    replacement: Any


def rms_norm_patches(norm_class: type) -> list[Patch]:
    """Identity rule through RMSNorm: the 1/rms factor is treated as a constant."""
    return [Patch(norm_class, "forward", load_lxt().rms_norm_forward)]


def layer_norm_patches(norm_class: type = nn.LayerNorm) -> list[Patch]:
    """Identity rule through LayerNorm: the standard deviation is treated as a constant."""
    return [Patch(norm_class, "forward", load_lxt().layer_norm_forward)]


def gated_mlp_patches(mlp_class: type) -> list[Patch]:
    """Identity rule through the activation, uniform rule (gradient / 2) on gate * up."""
    return [Patch(mlp_class, "forward", load_lxt().gated_mlp_forward)]


def dropout_patches() -> list[Patch]:
    """Dropout is the identity even in train mode (lxt's rule; eval mode already is)."""
    return [Patch(nn.Dropout, "forward", load_lxt().dropout_forward)]


def attention_patches(modeling: ModuleType) -> list[Patch]:
    """Uniform rule in attention for every attention implementation a modeling module uses."""
    wrap = load_lxt().wrap_attention_forward
    return [
        Patch(modeling, "eager_attention_forward", wrap(modeling.eager_attention_forward)),
        Patch(modeling, "ALL_ATTENTION_FUNCTIONS", lxt_attention_interface(modeling.ALL_ATTENTION_FUNCTIONS)),
    ]


def _dispatched_module_patches(model: nn.Module, patches: list[Patch]) -> list[Patch]:
    """accelerate's dispatch (device_map) binds a hooked module's forward as `_old_forward` when
    it hooks it, so patching the class misses that module: patch its `_old_forward` too."""
    forwards = {p.owner: p.replacement for p in patches if p.attribute == "forward" and isinstance(p.owner, type)}
    return [
        Patch(module, "_old_forward", MethodType(forwards[type(module)], module))
        for module in model.modules()
        if "_old_forward" in vars(module) and type(module) in forwards
    ]


@contextmanager
def lrp_patched(adapter) -> Iterator[None]:
    """Within the block, forward passes of the adapter's family follow AttnLRP's rules.

    Forward values are unchanged; gradients become relevances (gradient x input = LRP).
    Not re-entrant, and refused while another thread holds it, since the patches are global.
    """
    if not _active.acquire(blocking=False):
        raise RuntimeError("LRP patches are already active in this process; lrp_patched is not re-entrant")
    saved: list[tuple[Patch, Any]] = []
    try:
        patches = adapter.lrp_patches()
        for patch in [*patches, *_dispatched_module_patches(adapter.model, patches)]:
            # vars() not getattr(): restore exactly what the owner itself defined (or nothing)
            saved.append((patch, vars(patch.owner).get(patch.attribute, _MISSING)))
            setattr(patch.owner, patch.attribute, patch.replacement)
        yield
    finally:
        for patch, original in reversed(saved):
            if original is _MISSING:
                delattr(patch.owner, patch.attribute)
            else:
                setattr(patch.owner, patch.attribute, original)
        _active.release()
