"""Helpers for export tests: mask artifacts built directly from MaskSet + Manifest, reference logits."""

from __future__ import annotations

from pathlib import Path

import tiny_models
import torch

from excise.artifacts.atomic import atomic_folder
from excise.artifacts.manifest import Manifest, MethodInfo
from excise.artifacts.masks import MaskSet
from excise.models.adapters import get_adapter
from excise.models.identity import base_model_ref
from excise.models.loading import load_model


def row_masks(model_dir: Path, sparsity: float, seed: int = 0) -> MaskSet:
    """Random unstructured masks removing exactly `sparsity` of every row of every prunable linear."""
    adapter = get_adapter(load_model(model_dir).model)
    generator = torch.Generator().manual_seed(seed)
    weights = {}
    for name, linear in adapter.prunable_linears().items():
        rows, cols = linear.weight.shape
        order = torch.rand(rows, cols, generator=generator).argsort(dim=1)
        weights[f"{name}.weight"] = order >= int(round(sparsity * cols))  # [rows, cols], True = kept
    return MaskSet(weights=weights)


def neuron_masks(layers: int, width: int, removed: int | list[int], seed: int = 0) -> MaskSet:
    """Random MLP neuron masks removing `removed` neurons per layer (one count, or one per layer)."""
    generator = torch.Generator().manual_seed(seed)
    counts = removed if isinstance(removed, list) else [removed] * layers
    neurons = {}
    for layer, count in enumerate(counts):
        kept = torch.ones(width, dtype=torch.bool)
        kept[torch.randperm(width, generator=generator)[:count]] = False
        neurons[layer] = kept
    return MaskSet(neurons=neurons)


def write_mask_artifact(model_dir: Path, masks: MaskSet, out: Path, kind: str = "mask") -> Path:
    with atomic_folder(out) as tmp:
        masks.save(tmp)
        Manifest(kind=kind, base_model=base_model_ref(model_dir), method=MethodInfo(name="random")).save(tmp)
    return out


def masked_model(model_dir: Path, masks: MaskSet):
    """The reference: the base model with `MaskSet.apply`, fp32."""
    loaded = load_model(model_dir)
    masks.apply(get_adapter(loaded.model))
    return loaded.model


def logits(model, seed: int = 0, batch: int = 2, length: int = 24) -> torch.Tensor:
    tokens = torch.randint(3, model.config.vocab_size, (batch, length), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return model(tokens).logits.double()  # [batch, length, vocab]


@torch.no_grad()
def greedy(model, prompt: list[int], steps: int) -> list[int]:
    """Greedy continuation by full forward passes (no cache), the reference for vLLM's output."""
    ids = list(prompt)
    for _ in range(steps):
        ids.append(int(model(torch.tensor([ids])).logits[0, -1].argmax()))
    return ids[len(prompt) :]


@torch.no_grad()
def max_logprob_difference(model, prompts: list[list[int]], vllm_logprobs: list[list[dict[int, float]]]) -> float:
    """Largest |log p_vLLM - log p_transformers| over every token vLLM reported at every prompt position."""
    worst = 0.0
    for prompt, positions in zip(prompts, vllm_logprobs, strict=True):
        reference = torch.log_softmax(model(torch.tensor([prompt])).logits[0].double(), dim=-1)  # [len, vocab]
        for position, logprobs in enumerate(positions):
            worst = max(worst, *(abs(reference[position, token].item() - value) for token, value in logprobs.items()))
    return worst
