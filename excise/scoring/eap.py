"""EAP scorer: edge attribution patching (Syed et al. 2023; Hanna et al. 2024), per unit.

The first-order estimate of how much the task objective changes when a unit's activation
is patched from the corrupted prompt: the gradient of the objective (on the clean prompt)
times the clean minus corrupted activation, summed over the prompt's tokens and, for a
head, over its head_dim values; the score of a unit is the absolute value of the mean of
that over the reference prompts (as EAP ranks by |total attribution|). Units are those
of every scorer (`excise.scoring.base`): a neuron is the MLP activation entering the
output projection, a head its attention output before o_proj.

It is the gradient x input scorer (`excise.scoring.gradient`) of the plain objective with
baseline "corrupted" and aggregation "net_absolute" as its defaults; `baseline=mean`
patches to the unit's mean instead (for mean-ablated circuit search). LRP with the same
baseline (`lrp`, `baseline=corrupted`) is the same estimate through LRP's rules.
"""

from __future__ import annotations

from excise.scoring.gradient import Aggregation, Baseline, GradientTimesInputScorer, RelevanceConfig


class EapConfig(RelevanceConfig):
    aggregation: Aggregation = "net_absolute"
    baseline: Baseline = "corrupted"


class EapScorer(GradientTimesInputScorer):
    name = "eap"
    config_class = EapConfig
    supported_granularities = ("neuron", "head")

    def objective(self, logits, batch):
        return self.target.objective(logits, batch)
