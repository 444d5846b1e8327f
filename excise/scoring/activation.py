"""Activation scorer: mean |activation| of each unit over reference tokens (padding excluded;
for a prompt + continuation only the continuation's).

Neuron i: the MLP hidden activation entering the output projection. Head h: the head's
attention output before o_proj, averaged over its head_dim values. No weight scores."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from excise.scoring.base import Scorer
from excise.scoring.batches import ReferenceBatch
from excise.scoring.hooks import HookSet
from excise.artifacts.scores import Scores


class ActivationScorer(Scorer):
    name = "activation"
    supported_granularities = ("neuron", "head")

    @contextmanager
    def session(self) -> Iterator[None]:
        with HookSet() as hooks:
            self.tap_units(hooks, self._tap)
            yield

    def _tap(self, key: str, unit_size: int):
        def tap(x: torch.Tensor) -> None:
            magnitude = self.per_token(x.detach().float()).abs() * self.batch.scored_mask[..., None]  # [B, T, units * unit_size]
            per_unit = magnitude.sum((0, 1)).view(-1, unit_size).mean(-1)  # [units]
            self.sums[key].add_(per_unit)

        return tap

    def step(self, batch: ReferenceBatch) -> None:
        self.batch = batch = batch.to(self.device)
        with torch.no_grad():
            self.run_model(batch.input_ids)
        self.count += batch.num_scored_tokens()

    def scores(self) -> Scores:
        return self.mean_scores()
