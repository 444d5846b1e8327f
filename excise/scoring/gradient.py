"""Gradient x input scorers: `gradient` (plain loss) and the base that `lrp` reuses.

Relevance of a tensor for one sample is the tensor times the gradient of the sample's
objective with respect to it, summed over the sample's tokens. For a weight W of a linear
y = x W^T this is W * (sum_t g_t^T x_t) (W times its per-sample gradient); for a unit it is
a * a.grad of the activation entering the output projection (MLP hidden activation,
per-head attention output before o_proj), summed over tokens (and the head's dimensions).
The score is the mean over samples of one of
- "absolute" (default, the paper's): |relevance summed over the sample's tokens|;
- "signed": the relevance summed over the sample's tokens;
- "token_absolute": the sum over the sample's tokens of |each token's share|, so tokens
  that push a weight in opposite directions do not cancel. For a weight the share of
  token t is W_ij x_ti g_tj, and sum_t |W_ij x_ti g_tj| = |W_ij| (|G|^T |X|)_ij: one
  matrix product, as cheap as the others;
- "token_squared": the sum over the sample's tokens of each token's share squared,
  W_ij^2 ((G*G)^T (X*X))_ij, also one product. It weighs tokens as a squared error does:
  with g the loss gradient it is the empirical-Fisher saliency of Optimal Brain Damage,
  and with g = 1 it is Wanda's |W| ||x||_2 squared, so a few large shares count more than
  many small ones (Wanda's outlier features), where token_absolute counts them linearly.
- "net_absolute": |the mean over samples of the signed relevance|, so a unit that raises
  the objective on some samples and lowers it on others counts by its net effect on the
  mean, which is what an ablation measured on a task's mean metric sees (EAP's ranking).
In every aggregation W (|W|, W^2) multiplies each sample's term alike, so the running sum
holds only what multiplies it, and W is applied once when the scores are read.

Baseline (units only): the activation a unit's relevance is measured from. "zero" (default)
is the relevance itself, a * g. With "mean" (the unit's mean over the reference tokens,
one extra forward pass over the reference first) or "corrupted" (the same position on the
prompt's corrupted counterpart, e.g. IOI with the names replaced; one extra forward pass
per batch) it is (a - b) * g: to first order, how much the objective changes when the
unit is patched to b, which is what circuit search's mean and corrupted ablations do.
With the plain gradient that is attribution patching (EAP); with LRP's rules g is LRP's
modified gradient, so it is the relevance of the difference between the two runs.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Literal

import torch

from excise.errors import ExciseError
from excise.scoring.base import Scorer, ScorerConfig
from excise.scoring.batches import ReferenceBatch
from excise.models.placement import weight_of
from excise.scoring.hooks import HookSet, activation_gradients, on_gradient
from excise.artifacts.scores import Scores


Aggregation = Literal["absolute", "signed", "net_absolute", "token_absolute", "token_squared"]
Baseline = Literal["zero", "mean", "corrupted"]


class RelevanceConfig(ScorerConfig):
    aggregation: Aggregation = "absolute"
    baseline: Baseline = "zero"


def _same(t: torch.Tensor) -> torch.Tensor:
    return t


#: aggregation -> (what each token's share goes through before the sum over the sample's tokens, or
#: None to sum the shares as they are; what that sum, and W, go through; what the mean over samples
#: goes through). The first two are |.| or (.)^2, which distribute over a product, so each applies to
#: a share's factors alike.
AGGREGATIONS = {
    "absolute": (None, torch.abs, _same),
    "signed": (None, _same, _same),
    "net_absolute": (None, _same, torch.abs),
    "token_absolute": (torch.abs, torch.abs, _same),
    "token_squared": (torch.square, torch.square, _same),
}


class GradientTimesInputScorer(Scorer):
    config_class = RelevanceConfig
    runs_backward = True

    @abstractmethod
    def objective(self, logits: torch.Tensor, batch: ReferenceBatch) -> torch.Tensor:
        """`[B, T, V]` logits -> `[B]` per-sample objective to differentiate."""

    def __init__(self, adapter, granularities, target, config):
        super().__init__(adapter, granularities, target, config)
        if config.baseline != "zero" and "weight" in self.granularities:
            raise ExciseError(
                f"baseline {config.baseline!r} measures units (neurons, heads) from another activation; weights are "
                "scored from zero: drop the baseline or score neurons/heads"
            )
        #: what the unit taps do in the current pass: add relevance, or record the mean / corrupted baseline
        self._pass: Literal["score", "mean", "corrupted"] = "score"
        self._baselines: dict[str, torch.Tensor] = {}  # unit key -> [features] mean or [B, T, features] corrupted

    @classmethod
    def uses_corrupted(cls, config: RelevanceConfig) -> bool:
        return config.baseline == "corrupted"

    @property
    def _token_transform(self):
        return AGGREGATIONS[self.config.aggregation][0]

    def _aggregated(self, relevance: torch.Tensor) -> torch.Tensor:
        return AGGREGATIONS[self.config.aggregation][1](relevance)

    def _sample_products(self, x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        """`[T, in]`, `[T, out]` -> `[out, in]`: what multiplies W in the sample's (aggregated) relevance."""
        if self._token_transform:
            return self._token_transform(grad).T @ self._token_transform(x)
        return self._aggregated(grad.T @ x)

    @contextmanager
    def session(self) -> Iterator[None]:
        with ExitStack() as stack:
            hooks = stack.enter_context(HookSet())
            if "weight" in self.granularities:
                for name, linear in self.adapter.prunable_linears().items():
                    key = f"weight/{name}.weight"
                    self.buffer(key, tuple(linear.weight.shape), linear)
                    hooks.on_input_output(linear, self._weight_tap(key))
            self.tap_units(hooks, self._unit_tap)
            stack.enter_context(activation_gradients(self.adapter))
            yield

    def _weight_tap(self, key: str):
        def tap(x: torch.Tensor, y: torch.Tensor) -> None:
            x = self.per_token(x.detach())  # [B, T, in]

            def add(grad: torch.Tensor) -> None:
                grad = self.per_token(grad)  # [B, T, out]
                total = self.sums[key]
                for xb, gb in zip(x.float(), grad.float()):  # one sample at a time: one [out, in] buffer
                    total.add_(self._sample_products(xb, gb))

            on_gradient(y, add)

        return tap

    def _unit_tap(self, key: str, unit_size: int):
        def tap(x: torch.Tensor) -> None:
            value = self.per_token(x.detach().float())  # [B, T, units * unit_size]
            if self._pass == "mean":  # sum over real tokens (divided in `prepare`)
                total = self._baselines.setdefault(key, torch.zeros(value.shape[-1], dtype=torch.float64, device=value.device))
                total += (value * self.batch.mask[..., None]).sum(dim=(0, 1)).double()
                return
            if self._pass == "corrupted":
                self._baselines[key] = value
                return
            if self.config.baseline != "zero":
                value = value - self._baselines[key]

            def add(grad: torch.Tensor) -> None:
                product = value * self.per_token(grad.float()) * self.batch.mask[..., None]
                per_token = product.view(*product.shape[:2], -1, unit_size).sum(-1)  # [B, T, units]
                transform = self._token_transform
                per_sample = transform(per_token).sum(1) if transform else self._aggregated(per_token.sum(1))
                self.sums[key].add_(per_sample.sum(0))  # [units]

            on_gradient(x, add)

        return tap

    def prepare(self, batches: list[ReferenceBatch]) -> None:
        """For the mean baseline: every unit's mean activation over the real tokens of all `batches`."""
        if self.config.baseline != "mean":
            return
        self._pass = "mean"
        tokens = 0.0
        with torch.no_grad():
            for batch in batches:
                self.batch = batch = batch.to(self.device)
                self.run_model(batch.input_ids)
                tokens += batch.num_tokens()
        self._pass = "score"
        self._baselines = {key: (total / tokens).float() for key, total in self._baselines.items()}

    def step(self, batch: ReferenceBatch) -> None:
        self.target.check(batch)
        self.batch = batch = batch.to(self.device)
        if self.config.baseline == "corrupted":
            if batch.corrupted_input_ids is None:
                raise ExciseError(
                    f"scorer {self.name!r} with baseline 'corrupted' needs each prompt's corrupted counterpart; use a "
                    "task with corrupted prompts, or baseline zero or mean"
                )
            self._pass = "corrupted"
            with torch.no_grad():
                self.run_model(batch.corrupted_input_ids)
            self._pass = "score"
        with torch.enable_grad():
            # no name holds the [B, T, V] logits, so they are freed before the backward pass
            # unless the objective's graph needs them (a gather does not; a log-softmax keeps its own output)
            self.objective(self.run_model(batch.input_ids).float(), batch).sum().backward()
        self.count += len(batch)

    def scores(self) -> Scores:
        """W (|W|, W^2 as aggregated) times the mean of what multiplies it: the weight is the same for
        every sample, so it factors out of the sum and is read once, here (also when offloaded)."""
        scores = self.mean_scores()
        for name, linear in self.adapter.prunable_linears().items():
            if f"{name}.weight" in scores.weights:
                scores.weights[f"{name}.weight"].mul_(self._aggregated(weight_of(linear)))
        final = AGGREGATIONS[self.config.aggregation][2]
        for per_key in (scores.weights, scores.neurons, scores.heads):
            for key, tensor in per_key.items():
                per_key[key] = final(tensor)
        return scores


class GradientScorer(GradientTimesInputScorer):
    """|W * grad| of the plain loss: per-sample mean next-token NLL on LM data, the task
    objective for task targets."""

    name = "gradient"

    def objective(self, logits, batch):
        return self.target.loss(logits, batch)
