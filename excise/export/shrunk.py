"""`shrunk`: structured pruning made physical, so the model really is smaller (and faster in vLLM).

Removed MLP neurons are cut out of the input projections' rows and the output
projection's columns, and the config's MLP width shrinks. A Hugging Face config
has one width for all layers, so every layer must keep the same number of
neurons. Removed attention heads are cut out too where the family's config can
say so (same number of key/value groups and of query heads per group in every
layer, and an explicit head size); otherwise they stay in place as zeros, which
the manifest and card say. The result computes what the masked model computes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from excise.errors import ExciseError
from excise.export.base import ExportOptions, Exporter, ExportResult
from excise.export.source import ExportSource, load_masked, save_model_folder
from excise.artifacts.masks import MaskSet
from excise.artifacts.model_folder import read_config
from excise.models.adapters import AttentionBlock, MlpBlock, adapter_class, get_adapter
from excise.models.placement import DTYPES

logger = logging.getLogger(__name__)


@dataclass
class ShrinkPlan:
    neurons: int | None = None  # MLP width after removal, None if unchanged
    heads: tuple[int, int] | None = None  # (key/value groups, query heads per group) after removal
    notes: list[str] = field(default_factory=list)


def plan_shrink(masks: MaskSet, config: dict) -> ShrinkPlan:
    """What can be removed physically, from the mask and the base config alone (nothing loaded)."""
    adapter = adapter_class(config["model_type"])
    layers = range(config["num_hidden_layers"])
    plan = ShrinkPlan()
    if masks.neurons:
        width = config[adapter.mlp_width_key]
        kept = sorted({int(masks.neurons[i].sum()) if i in masks.neurons else width for i in layers})
        if len(kept) > 1:
            raise ExciseError(
                f"shrunk needs the same number of kept MLP neurons in every layer (the config has one "
                f"{adapter.mlp_width_key}); this mask keeps between {kept[0]} and {kept[-1]}: prune with a uniform "
                "per-layer neuron budget, or export --to hf"
            )
        if kept[0] == 0:
            raise ExciseError("this mask removes every MLP neuron of every layer; nothing would be left to export")
        plan.neurons = kept[0] if kept[0] < width else None
    if masks.heads:
        plan.heads, reason = _plan_heads(masks, config, adapter.head_config_keys.get(config["model_type"]))
        if reason:
            plan.notes.append(f"removed attention heads are kept as zeros, not cut out: {reason}")
            logger.warning("shrunk: %s", plan.notes[-1])
    if plan.neurons is None and plan.heads is None:
        raise ExciseError(
            "this mask removes no whole MLP neurons or attention heads that a config can express, so a shrunk "
            "model would equal the dense one; export --to hf (or --to sparse) instead"
        )
    return plan


def _plan_heads(masks: MaskSet, config: dict, keys: tuple[str, str, str] | None) -> tuple[tuple[int, int] | None, str]:
    """(groups, heads per group) kept in every layer, or None and why fewer heads cannot be expressed."""
    if keys is None:
        return None, f"a {config['model_type']} config cannot express fewer heads per layer"
    heads = config["num_attention_heads"]
    groups = config.get("num_key_value_heads") or heads
    shapes = set()
    for layer in range(config["num_hidden_layers"]):
        mask = masks.heads.get(layer, torch.ones(heads, dtype=torch.bool))
        per_group = {int(n) for n in mask.view(groups, -1).sum(dim=1)} - {0}
        shapes.add((int(mask.view(groups, -1).any(dim=1).sum()), per_group.pop() if len(per_group) == 1 else -1))
    if len(shapes) > 1 or -1 in {r for _, r in shapes}:
        return None, "layers differ in how many key/value groups or query heads per group they keep"
    ((kept_groups, per_group),) = shapes
    return ((kept_groups, per_group) if kept_groups * per_group < heads else None), ""


def _keep_rows(linear: nn.Linear, rows: torch.Tensor) -> None:
    linear.weight = nn.Parameter(linear.weight.data[rows].clone())  # [len(rows), in]
    if linear.bias is not None:
        linear.bias = nn.Parameter(linear.bias.data[rows].clone())
    linear.out_features = len(rows)


def _keep_columns(linear: nn.Linear, columns: torch.Tensor) -> None:
    linear.weight = nn.Parameter(linear.weight.data[:, columns].clone())  # [out, len(columns)]
    linear.in_features = len(columns)


def shrink_mlp(mlp: MlpBlock, kept: torch.Tensor) -> None:
    neurons = kept.nonzero().squeeze(1)
    for projection in mlp.inputs:
        _keep_rows(projection, neurons)
    _keep_columns(mlp.output, neurons)


def shrink_attention(attention: AttentionBlock, kept: torch.Tensor) -> None:
    head_dims = kept.repeat_interleave(attention.head_dim).nonzero().squeeze(1)
    groups = kept.view(attention.num_kv_heads, -1).any(dim=1)
    group_dims = groups.repeat_interleave(attention.head_dim).nonzero().squeeze(1)
    _keep_rows(attention.q_proj, head_dims)
    _keep_columns(attention.o_proj, head_dims)
    _keep_rows(attention.k_proj, group_dims)
    _keep_rows(attention.v_proj, group_dims)


class ShrunkExporter(Exporter):
    name = "shrunk"
    summary = (
        "A smaller dense Hugging Face model: removed MLP neurons (and heads, where the config allows) are cut out, "
        "so the config's widths shrink; it computes what the masked model computes."
    )
    usage = "`vllm.LLM(model='{folder}')` or `transformers.AutoModelForCausalLM.from_pretrained('{folder}')`."

    def check(self, source: ExportSource, options: ExportOptions) -> None:
        plan_shrink(source.require_masks(self.name), read_config(source.base_path))

    @torch.no_grad()
    def write(self, source: ExportSource, folder: Path, options: ExportOptions) -> ExportResult:
        masks = source.require_masks(self.name)
        plan = plan_shrink(masks, read_config(source.base_path))
        loaded, _ = load_masked(source, self.name)
        adapter = get_adapter(loaded.model)
        config = loaded.model.config
        for layer in adapter.layers():
            if plan.neurons is not None:
                shrink_mlp(layer.mlp, masks.neurons[layer.index])
            if plan.heads is not None and layer.index in masks.heads:
                shrink_attention(layer.attention, masks.heads[layer.index])
        if plan.neurons is not None:
            setattr(config, adapter.mlp_width_key, plan.neurons)
        if plan.heads is not None:
            heads_key, groups_key, head_dim_key = adapter.head_config_keys[config.model_type]
            head_dim = adapter.layers()[0].attention.head_dim  # before the counts change
            groups, per_group = plan.heads
            setattr(config, head_dim_key, head_dim)
            setattr(config, heads_key, groups * per_group)
            setattr(config, groups_key, groups)
        loaded.model.to(DTYPES[options.weights_dtype])
        save_model_folder(loaded, folder)
        shape = {"mlp_width": plan.neurons, "heads": plan.heads and plan.heads[0] * plan.heads[1]}
        return ExportResult(metrics={"shrunk": {k: v for k, v in shape.items() if v is not None}}, notes=plan.notes)
