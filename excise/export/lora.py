"""`lora`: a mask that only removes MLP neurons, as an exact PEFT LoRA adapter on the base model.

Zeroing neurons S of a layer equals subtracting W_out[:, S] · E_Sᵀ from the MLP's
output projection (down_proj / fc2), because a removed neuron acts on the output
only through its column: B = −W_out[:, S] ([hidden, r]), A = E_Sᵀ ([r, width],
one-hot rows), lora_alpha = r so the scaling is 1. (The mask also zeroes the
neuron's input rows; that changes nothing once its output column is gone.) The
rank is the largest |S| over layers, padded with zero rows/columns up to a rank
vLLM accepts.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from peft import LoraConfig
from safetensors.torch import save_file

from excise.errors import ExciseError
from excise.export.base import ExportOptions, Exporter, ExportResult
from excise.export.source import ExportSource
from excise.artifacts.lora import ADAPTER_WEIGHTS, PEFT_PREFIX, VLLM_LORA_RANKS, served_rank
from excise.artifacts.masks import MaskSet
from excise.models.adapters import get_adapter
from excise.models.loading import load_model
from excise.models.placement import DTYPES
from excise.artifacts.validation import MASK_KINDS, UPDATED_KINDS

logger = logging.getLogger(__name__)


def lora_rank(masks: MaskSet) -> tuple[int, int]:
    """(largest number of removed neurons in a layer, the vLLM rank it is padded to)."""
    return padded_rank(max(int((~kept).sum()) for kept in masks.neurons.values()))


def padded_rank(needed: int) -> tuple[int, int]:
    """(`needed`, the smallest rank vLLM accepts that holds it)."""
    rank = served_rank(needed)
    if rank is not None:
        return needed, rank
    raise ExciseError(
        f"this mask removes up to {needed} neurons in one layer, more than vLLM's largest LoRA rank "
        f"({VLLM_LORA_RANKS[-1]}); export it as a dense model with --to hf (or --to shrunk) instead"
    )


def scaled_neuron_lora(weight: torch.Tensor, scale: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """LoRA factors of multiplying neuron j's output column by `scale[j]` (0 = removed, 1 = untouched,
    between = dampened): B @ A = W[:, S] diag(scale_S − 1) E_Sᵀ for the neurons S with scale ≠ 1."""
    changed = (scale != 1).nonzero().squeeze(1)  # [|S|]
    lora_a = torch.zeros(rank, weight.shape[1], dtype=weight.dtype)  # [rank, width]
    lora_a[torch.arange(len(changed)), changed] = 1.0
    lora_b = torch.zeros(weight.shape[0], rank, dtype=weight.dtype)  # [out, rank]
    lora_b[:, : len(changed)] = weight[:, changed] * (scale[changed] - 1).to(weight.dtype)
    return lora_a, lora_b


@torch.no_grad()
def write_neuron_lora(adapter, scales: dict[int, torch.Tensor], base_path: Path, folder: Path,
                      dtype: torch.dtype = torch.float32) -> tuple[int, int]:
    """Write the PEFT adapter that scales MLP neuron outputs by `scales` (layer -> [neurons]) on the
    dense model `adapter` wraps; returns (largest changed count in a layer, rank)."""
    needed, rank = padded_rank(max((int((scale != 1).sum()) for scale in scales.values()), default=0))
    tensors: dict[str, torch.Tensor] = {}
    targets = set()
    for layer in adapter.layers():
        output = layer.mlp.output
        scale = scales.get(layer.index, torch.ones(output.in_features))
        lora_a, lora_b = scaled_neuron_lora(output.weight.float(), scale.float(), rank)
        name = PEFT_PREFIX + adapter.module_name(output)
        tensors[f"{name}.lora_A.weight"] = lora_a.to(dtype).contiguous()
        tensors[f"{name}.lora_B.weight"] = lora_b.to(dtype).contiguous()
        targets.add(name.rsplit(".", 1)[1])
    config = LoraConfig(
        r=rank,
        lora_alpha=rank,  # scaling = alpha / r = 1
        target_modules=sorted(targets),
        lora_dropout=0.0,
        bias="none",
        task_type="CAUSAL_LM",
        base_model_name_or_path=str(base_path),
    )
    Path(folder).mkdir(parents=True, exist_ok=True)
    config.save_pretrained(str(folder))
    save_file(tensors, Path(folder) / ADAPTER_WEIGHTS, metadata={"format": "pt"})
    return needed, rank


class LoraExporter(Exporter):
    name = "lora"
    summary = (
        "A PEFT LoRA adapter on the base model's MLP output projections that removes the masked neurons exactly "
        "(B = -W[:, S], A = one-hot rows, scaling 1): base + adapter == masked model."
    )
    usage = (
        "`peft.PeftModel.from_pretrained(base_model, '{folder}')`, or in vLLM: `LLM(model=BASE, enable_lora=True, "
        "max_lora_rank=R)` with `LoRARequest(name, 1, '{folder}')` (R ≥ `r` in adapter_config.json)."
    )

    # a LoRA is built from the base weights: a reconstruction's updated values cannot be expressed
    sources = MASK_KINDS - UPDATED_KINDS

    def check(self, source: ExportSource, options: ExportOptions) -> None:
        masks = source.require_masks(self.name)
        if not masks.only_neurons():
            raise ExciseError(
                f"{source.folder} is not a neuron-only mask (it has "
                f"{'weight' if masks.weights else 'head'} masks); only removed MLP neurons are an exact LoRA — "
                "export it with --to hf (or --to sparse) instead"
            )
        lora_rank(masks)

    def write(self, source: ExportSource, folder: Path, options: ExportOptions) -> ExportResult:
        masks = source.require_masks(self.name)
        loaded = load_model(source.base_path)
        scales = {index: kept.float() for index, kept in masks.neurons.items()}
        needed, rank = write_neuron_lora(get_adapter(loaded.model), scales, source.base_path, folder,
                                         DTYPES[options.weights_dtype])
        logger.info("lora: up to %d neurons per layer, rank %d", needed, rank)
        return ExportResult(
            metrics={"lora": {"rank": rank, "max_removed_neurons": needed}},
            notes=[f"rank {rank} (up to {needed} removed neurons in a layer, zero-padded), serve with max_lora_rank ≥ {rank}"],
        )
