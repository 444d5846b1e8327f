"""What an export starts from: a validated artifact, its verified base model, and the masked model.

A mask artifact (kind mask, circuit or correction) holds a `MaskSet` for a base
model pinned by the hash of its weights; a `sparse` artifact holds the pruned
weights themselves. Both are validated (manifest hashes, base model hash, mask
shapes) before anything is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from excise.errors import ExciseError
from excise.artifacts.manifest import Manifest
from excise.artifacts.masks import MaskSet
from excise.models.adapters import get_adapter
from excise.models.loading import LoadedModel, load_model
from excise.models.placement import DTYPES
from excise.artifacts.updates import copy_weights, load_weights
from excise.artifacts.validation import MASK_KINDS, UPDATED_KINDS, ValidatedArtifact, validate_artifact


@dataclass(frozen=True)
class ExportSource(ValidatedArtifact):
    """The validated input artifact (its base verified, a mask kind's masks read once), and a
    reconstruction's updated weights. `masks` is None for a sparse checkpoint, which holds its weights itself."""

    weights: dict[str, torch.Tensor] | None = None

    @property
    def kind(self) -> str:
        return self.manifest.kind

    def require_masks(self, target: str) -> MaskSet:
        if self.masks is None:
            raise ExciseError(
                f"{self.folder} is a {self.kind} artifact; --to {target} needs a mask artifact "
                f"(kind {', '.join(sorted(MASK_KINDS))})"
            )
        return self.masks


def open_source(folder: Path) -> ExportSource:
    validated = validate_artifact(folder)
    weights = load_weights(folder) if validated.manifest.kind in UPDATED_KINDS else None
    return ExportSource(validated.folder, validated.manifest, validated.base_path, validated.masks, weights)


@torch.no_grad()
def load_masked(source: ExportSource, target: str, *, dtype: str = "float32") -> tuple[LoadedModel, dict[str, torch.Tensor]]:
    """The base model with the artifact's updated weights (if any) and its mask applied (computed in
    fp32, then cast), and its weight masks.

    Pruned weights are set to +0.0 (a product with a zero mask can give -0.0), so a sparse
    checkpoint, which stores only kept values, restores them bit for bit.
    """
    masks = source.require_masks(target)
    loaded = load_model(source.base_path, dtype="float32")
    adapter = get_adapter(loaded.model)
    if source.weights is not None:
        copy_weights(loaded.model, source.weights)
    masks.apply(adapter)
    weight_masks = masks.weight_masks(adapter)
    params = dict(loaded.model.named_parameters())
    for name, mask in weight_masks.items():
        params[name].copy_(torch.where(mask, params[name], torch.zeros((), dtype=params[name].dtype)))
    loaded.model.to(DTYPES[dtype])
    return loaded, weight_masks


def save_model_folder(loaded: LoadedModel, folder: Path) -> None:
    """A plain Hugging Face folder: safetensors weights, config, generation config, tokenizer."""
    loaded.model.save_pretrained(folder, safe_serialization=True)
    loaded.tokenizer.save_pretrained(folder)
