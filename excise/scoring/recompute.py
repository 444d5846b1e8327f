"""Layer-wise recomputation: backward memory of about one decoder layer, whatever the depth.

Without it a scorer's backward pass holds every layer's activations at once (with eager
attention, every layer's T x T attention weights too), so its memory grows with depth and
with the square of the window. Inside `layer_recomputation` each decoder layer keeps only
its input during the forward pass and runs again, with gradients, when the backward pass
reaches it (torch's reentrant checkpoint).

Why reentrant: the scorers' forward hooks register gradient hooks on the tensors a layer
computes and keep that layer's inputs for them (`excise.scoring.gradient`). Reentrant
checkpointing runs the first forward without a graph, so the hooks register nothing and
keep nothing (`on_gradient` skips tensors that need no grad), then backpropagates through
the recomputed layer, so the hooks fire on it: one layer's activations are alive at a time.
The non-reentrant variant backpropagates through the first forward's graph and would make
the hooks keep every layer's inputs alive until the backward pass, which is the memory this
exists to save. transformers' own gradient checkpointing cannot be used: it runs only in
train mode, which turns dropout on (OPT) and changes the scores.

Forward values are the same; gradients are the same up to fp32 rounding, with or without
lxt's LRP rules (they are patched into the classes, so the recomputation runs them too).
The model must run without a KV cache (the recomputation would append to it a second
time); the scorers call it with `use_cache=False`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch.utils.checkpoint import checkpoint

from excise.models.adapters import ModelAdapter


def _recomputed(forward):
    def run(hidden_states, *args, **kwargs):
        if not torch.is_grad_enabled():  # forward-only scorers (wanda) and EAP's corrupted run
            return forward(hidden_states, *args, **kwargs)
        # the layer's other inputs (masks, rotary tables) need no gradient: bind them, so only
        # the hidden states pass through checkpoint, which takes no keyword arguments when reentrant
        return checkpoint(lambda h: forward(h, *args, **kwargs), hidden_states, use_reentrant=True)

    return run


@contextmanager
def layer_recomputation(adapter: ModelAdapter) -> Iterator[None]:
    """Within the block, every decoder layer of `adapter`'s model is recomputed in backward."""
    layers = adapter.layer_modules()
    saved = [vars(layer).get("forward") for layer in layers]
    for layer in layers:
        # an instance attribute shadows the class's forward (and accelerate's bound one, which
        # it then calls, so offloaded weights are fetched again for the recomputation)
        layer.forward = _recomputed(layer.forward)
    try:
        yield
    finally:
        for layer, original in zip(layers, saved):
            if original is None:
                del layer.forward
            else:
                layer.forward = original
