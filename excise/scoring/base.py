"""The scorer interface and its registry.

A scorer is built for one model (through its adapter), a set of granularities and a
target. `session()` installs what it needs (hooks, LRP rules) and removes it afterwards;
`step(batch)` runs one reference batch and adds to fp32 running sums (one buffer per
scored tensor, allocated up front, so ranks can all-reduce them; never per-sample copies);
`scores()` turns the sums into `Scores`. `sums` plus `count` are everything a scorer
accumulates: summing them over data-parallel ranks gives the single-process result.

Structured units (see `unit_scores`): a neuron is column i of the MLP output projection,
a head the columns h*head_dim:(h+1)*head_dim of o_proj, so every method scores a unit by
what reads it. Heads are scored per query head; under grouped-query attention a KV group's
score is the sum of the scores of the query heads sharing it (`kv_group_scores`), which is
what selection ranks to remove whole KV groups.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import ClassVar

import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from excise.errors import ExciseError
from excise.models.adapters import ModelAdapter
from excise.scoring.batches import ReferenceBatch
from excise.models.placement import execution_device
from excise.registry import Registry
from excise.scoring.hooks import HookSet
from excise.artifacts.scores import Scores
from excise.artifacts.units import UNITS
from excise.scoring.targets import Target

class ScorerConfig(BaseModel):
    """Per-method parameters; a method with none uses this empty config."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Scorer(ABC):
    name: ClassVar[str]
    config_class: ClassVar[type[ScorerConfig]] = ScorerConfig
    supported_granularities: ClassVar[tuple[str, ...]] = UNITS
    #: False for scorers that look only at the weights (no reference data, no steps)
    needs_data: ClassVar[bool] = True
    #: True for scorers that run a backward pass (what layer recomputation saves memory on)
    runs_backward: ClassVar[bool] = False

    def __init__(self, adapter: ModelAdapter, granularities: set[str], target: Target, config: ScorerConfig):
        unsupported = set(granularities) - set(self.supported_granularities)
        if unsupported:
            raise ExciseError(
                f"scorer {self.name!r} cannot score {', '.join(sorted(unsupported))}; "
                f"it scores {', '.join(self.supported_granularities)}"
            )
        self.adapter = adapter
        self.granularities = set(granularities)
        self.target = target
        self.config = config
        self.sums: dict[str, torch.Tensor] = {}
        self.count = 0.0
        #: the batch a step is running (hooks read its shape and padding mask)
        self.batch: ReferenceBatch | None = None

    @classmethod
    def uses_corrupted(cls, config: ScorerConfig) -> bool:
        """Whether this method, so configured, compares each prompt with its corrupted counterpart."""
        return False

    def per_token(self, activation: torch.Tensor) -> torch.Tensor:
        """An activation of the running batch as `[B, T, features]` (OPT flattens its MLP
        input to `[B*T, features]`)."""
        return activation.reshape(*self.batch.input_ids.shape, activation.shape[-1])

    def buffer(self, key: str, size: tuple[int, ...], module: nn.Module) -> torch.Tensor:
        """Allocate (once) the fp32 running sum `key` of shape `size`, where `module` computes."""
        if key not in self.sums:
            self.sums[key] = torch.zeros(size, dtype=torch.float32, device=execution_device(module))
        return self.sums[key]

    def run_model(self, input_ids: torch.Tensor) -> torch.Tensor:
        """The model's `[B, T, V]` logits on `input_ids` under the running batch's padding mask.
        No KV cache: scoring never decodes, and layer recomputation would fill it twice."""
        return self.adapter.model(input_ids=input_ids, attention_mask=self.batch.attention_mask, use_cache=False).logits

    @property
    def device(self) -> torch.device:
        return next(self.adapter.model.parameters()).device

    def tap_units(self, hooks: HookSet, make_tap: Callable[[str, int], Callable[[torch.Tensor], None]]) -> None:
        """Allocate `neuron/<layer>` and `head/<layer>` sums (as requested) and hook
        `make_tap(key, unit_size)` onto the output projections' inputs, whose features are
        the units: one per neuron, head_dim per head."""
        for layer in self.adapter.layers():
            attn = layer.attention
            if "neuron" in self.granularities:
                self.buffer(f"neuron/{layer.index}", (layer.mlp.num_neurons,), layer.mlp.output)
                hooks.on_input(layer.mlp.output, make_tap(f"neuron/{layer.index}", 1))
            if "head" in self.granularities:
                self.buffer(f"head/{layer.index}", (attn.num_heads,), attn.o_proj)
                hooks.on_input(attn.o_proj, make_tap(f"head/{layer.index}", attn.head_dim))

    @contextmanager
    def session(self) -> Iterator[None]:
        """Install hooks (and anything else a step needs) for the duration of the block."""
        yield

    def prepare(self, batches: list[ReferenceBatch]) -> None:
        """Called inside the session with every reference batch (all ranks' alike) before the first
        step, for statistics a step needs from the whole set (a mean baseline)."""

    def step(self, batch: ReferenceBatch) -> None:
        raise RuntimeError(f"scorer {self.name!r} needs no reference data; call scores() directly")

    @abstractmethod
    def scores(self) -> Scores:
        """The scores from the sums accumulated so far (or from the weights alone); called once."""

    def mean_scores(self) -> Scores:
        """Sums kept under `weight/<param>`, `neuron/<layer>`, `head/<layer>`, divided by `count`.

        The sums become the scores (divided in place and handed over), so reading them never
        holds a second model-sized copy; the scorer is spent afterwards."""
        if self.count == 0:
            raise ExciseError(f"scorer {self.name!r} saw no reference data; pass a non-empty reference set")
        scores = Scores()
        for key in list(self.sums):
            kind, _, name = key.partition("/")
            mean = self.sums.pop(key).div_(self.count)
            if kind == "weight":
                scores.weights[name] = mean
            else:
                getattr(scores, f"{kind}s")[int(name)] = mean
        return scores


#: filled in `excise.scoring`'s `__init__`, one entry per method module
SCORERS: Registry[type[Scorer]] = Registry("scoring method")


def scorer_class(name: str) -> type[Scorer]:
    return SCORERS[name]


def unit_scores(
    adapter: ModelAdapter, granularities: set[str], column_scores: Callable[[nn.Linear], torch.Tensor]
) -> tuple[dict[int, torch.Tensor], dict[int, torch.Tensor]]:
    """Neuron and head scores as sums of per-weight scores of the output projections.

    `column_scores(linear) -> [out, in]` is the method's weight score of that projection.
    """
    neurons, heads = {}, {}
    for layer in adapter.layers():
        if "neuron" in granularities:
            neurons[layer.index] = column_scores(layer.mlp.output).sum(0)  # [num_neurons]
        if "head" in granularities:
            attn = layer.attention
            per_column = column_scores(attn.o_proj).sum(0)  # [num_heads * head_dim]
            heads[layer.index] = per_column.view(attn.num_heads, attn.head_dim).sum(-1)
    return neurons, heads


def kv_group_scores(head_scores: torch.Tensor, heads_per_group: int) -> torch.Tensor:
    """`[num_heads]` -> `[num_kv_heads]`: query heads g*heads_per_group ... share KV group g."""
    return head_scores.view(-1, heads_per_group).sum(-1)
