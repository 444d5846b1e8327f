"""Wanda scorer (Sun et al. 2023): |W_ij| * ||X_j||_2, the L2 norm of input feature j over
all reference tokens (padding excluded; for a prompt + continuation only the continuation's). Accumulates the per-feature sum of squares of
each linear's input; the norm is not divided by the token count, as in Wanda."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from excise.errors import ExciseError
from excise.scoring.base import Scorer, unit_scores
from excise.scoring.batches import ReferenceBatch
from excise.models.placement import weight_of
from excise.scoring.hooks import HookSet
from excise.artifacts.scores import Scores


class WandaScorer(Scorer):
    name = "wanda"

    def _tapped(self) -> dict[str, nn.Linear]:
        """The linears whose inputs matter: all of them for weights, else the output projections."""
        linears = self.adapter.prunable_linears()
        if "weight" in self.granularities:
            return linears
        outputs = {id(l.mlp.output) for l in self.adapter.layers()} | {id(l.attention.o_proj) for l in self.adapter.layers()}
        return {name: m for name, m in linears.items() if id(m) in outputs}

    @contextmanager
    def session(self) -> Iterator[None]:
        with HookSet() as hooks:
            for name, linear in self._tapped().items():
                self.buffer(f"sqnorm/{name}", (linear.in_features,), linear)
                hooks.on_input(linear, self._tap(f"sqnorm/{name}"))
            yield

    def _tap(self, key: str):
        def tap(x: torch.Tensor) -> None:
            squares = self.per_token(x.detach().float()).pow(2) * self.batch.scored_mask[..., None]  # [B, T, in]
            self.sums[key].add_(squares.sum((0, 1)))

        return tap

    def step(self, batch: ReferenceBatch) -> None:
        self.batch = batch = batch.to(self.device)
        with torch.no_grad():
            self.run_model(batch.input_ids)
        self.count += len(batch)

    def _weight_scores(self, linear: nn.Linear) -> torch.Tensor:
        norm = self.sums[f"sqnorm/{self.adapter.module_name(linear)}"].sqrt()  # [in]
        return weight_of(linear).abs() * norm[None, :]  # [out, in]

    def scores(self) -> Scores:
        if self.count == 0:
            raise ExciseError("scorer 'wanda' saw no reference samples; pass a non-empty reference set")
        weights = {}
        if "weight" in self.granularities:
            weights = {f"{n}.weight": self._weight_scores(m) for n, m in self.adapter.prunable_linears().items()}
        neurons, heads = unit_scores(self.adapter, self.granularities, self._weight_scores)
        return Scores(weights=weights, neurons=neurons, heads=heads)
