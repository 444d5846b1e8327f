"""EAP scorer: edge attribution patching (Syed et al. 2023; Hanna et al. 2024), per unit.

The first-order estimate of how much the task objective changes when a unit's activation
is patched from the corrupted prompt: the gradient of the objective (on the clean prompt)
times the clean minus corrupted activation, summed over the prompt's tokens and, for a
head, over its head_dim values; the score of a unit is the absolute value of the mean of
that over the reference prompts (as EAP ranks by |total attribution|). Units are those
of every scorer (`excise.scoring.base`): a neuron is the MLP activation entering the
output projection, a head its attention output before o_proj. Each step runs the
corrupted prompts (no gradient) to record the activations, then the clean prompts
forward and backward; the model itself is unchanged (no LRP rules).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import torch

from excise.errors import ExciseError
from excise.scoring.base import Scorer
from excise.scoring.batches import ReferenceBatch
from excise.scoring.hooks import HookSet, activation_gradients, on_gradient
from excise.artifacts.scores import Scores


class EapScorer(Scorer):
    name = "eap"
    supported_granularities = ("neuron", "head")
    needs_corrupted = True
    runs_backward = True

    @contextmanager
    def session(self) -> Iterator[None]:
        self._corrupted: dict[str, torch.Tensor] = {}
        self._recording = False
        with ExitStack() as stack:
            self.tap_units(stack.enter_context(HookSet()), self._tap)
            stack.enter_context(activation_gradients(self.adapter))
            yield

    def _tap(self, key: str, unit_size: int):
        def tap(x: torch.Tensor) -> None:
            if self._recording:
                self._corrupted[key] = self.per_token(x.detach().float())  # [B, T, units * unit_size]
                return
            difference = self.per_token(x.detach().float()) - self._corrupted[key]

            def add(grad: torch.Tensor) -> None:
                product = self.per_token(grad.float()) * difference * self.batch.mask[..., None]
                self.sums[key].add_(product.view(*product.shape[:2], -1, unit_size).sum(dim=(0, 1, 3)))  # [units]

            on_gradient(x, add)

        return tap

    def step(self, batch: ReferenceBatch) -> None:
        self.target.check(batch)
        if batch.corrupted_input_ids is None:
            raise ExciseError("scorer 'eap' needs each prompt's corrupted counterpart; use a task with corrupted prompts")
        self.batch = batch = batch.to(self.device)
        self._recording = True
        with torch.no_grad():
            self.run_model(batch.corrupted_input_ids)
        self._recording = False
        with torch.enable_grad():
            self.target.objective(self.run_model(batch.input_ids).float(), batch).sum().backward()
        self._corrupted.clear()
        self.count += len(batch)

    def scores(self) -> Scores:
        means = self.mean_scores()
        return Scores(
            neurons={layer: s.abs() for layer, s in means.neurons.items()},
            heads={layer: s.abs() for layer, s in means.heads.items()},
        )
