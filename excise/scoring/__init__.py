"""Scorers: relevance of weights, neurons and heads over reference data.

    from excise.scoring import score_model, score_in_worker
    result = score_model(model, windows, "wanda", granularities={"weight"})
    result = score_in_worker("smollm2", windows, "lrp", granularities={"weight", "neuron"})
    result.scores  # Scores: weights by "<module>.weight", neurons/heads by layer index

Methods (`SCORERS`): lrp, gradient, eap, wanda, magnitude, activation; targets (`TARGETS`):
next_token (default), next_token_margin, predicted_token, task_correct, task_logit_diff.
"""

from excise.scoring.activation import ActivationScorer
from excise.scoring.base import SCORERS, Scorer, ScorerConfig, kv_group_scores
from excise.scoring.batches import ReferenceBatch, ReferenceData, TaskTarget, as_batches
from excise.scoring.eap import EapScorer
from excise.scoring.gradient import GradientScorer, RelevanceConfig
from excise.scoring.lrp import LrpScorer
from excise.scoring.magnitude import MagnitudeScorer
from excise.scoring.wanda import WandaScorer
from excise.scoring.run import ScoringResult, score_model
from excise.scoring.targets import TARGETS, Target, get_target
from excise.scoring.worker import score_in_worker

for _scorer in (ActivationScorer, EapScorer, GradientScorer, LrpScorer, MagnitudeScorer, WandaScorer):
    SCORERS.add(_scorer.name, _scorer)

__all__ = [
    "SCORERS",
    "TARGETS",
    "ReferenceBatch",
    "ReferenceData",
    "RelevanceConfig",
    "Scorer",
    "ScorerConfig",
    "ScoringResult",
    "Target",
    "TaskTarget",
    "as_batches",
    "get_target",
    "kv_group_scores",
    "score_in_worker",
    "score_model",
]
