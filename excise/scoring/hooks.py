"""Forward hooks that scorers install for one scoring session and always remove."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager

import torch
from torch import nn

from excise.models.adapters import ModelAdapter


class HookSet:
    """Hooks registered through it are removed when the `with` block ends."""

    def __init__(self):
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def on_input(self, module: nn.Module, fn: Callable[[torch.Tensor], None]) -> None:
        """`fn(x)` with the module's first positional input, before it runs."""
        self._handles.append(module.register_forward_pre_hook(lambda _m, args: fn(args[0])))

    def on_input_output(self, module: nn.Module, fn: Callable[[torch.Tensor, torch.Tensor], None]) -> None:
        """`fn(x, y)` with the module's first input and its output, after it runs."""
        self._handles.append(module.register_forward_hook(lambda _m, args, out: fn(args[0], out)))

    def __enter__(self) -> HookSet:
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


def on_gradient(tensor: torch.Tensor, fn: Callable[[torch.Tensor], None]) -> None:
    """`fn(grad)` once backward reaches `tensor` (nothing when no graph is being built)."""
    if tensor.requires_grad:
        tensor.register_hook(lambda grad: fn(grad))


@contextmanager
def activation_gradients(adapter: ModelAdapter) -> Iterator[None]:
    """Backward computes activation gradients only: weights stop requiring grad (no weight
    gradients are allocated) and the token embeddings' output becomes the leaf that does.
    Scorers form the per-sample weight gradient themselves from activations and output
    gradients, which is also what lets them score every sample of a batch separately."""
    params = list(adapter.model.parameters())
    flags = [p.requires_grad for p in params]
    with ExitStack() as stack:
        for p in params:
            p.requires_grad_(False)
        stack.callback(lambda: [p.requires_grad_(f) for p, f in zip(params, flags)])
        hook = adapter.embeddings()[0].register_forward_hook(lambda _m, _args, out: out.requires_grad_())
        stack.callback(hook.remove)
        yield
