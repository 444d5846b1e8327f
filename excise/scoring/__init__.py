"""Scorers: relevance of weights, neurons and heads over reference data.

    from excise.scoring import score_model, score_in_worker
    result = score_model(model, windows, "wanda", granularities={"weight"})
    result = score_in_worker("smollm2", windows, "lrp", granularities={"weight", "neuron"})
    result.scores  # Scores: weights by "<module>.weight", neurons/heads by layer index

Methods (`SCORERS`): lrp, gradient, eap, wanda, magnitude, activation; targets (`TARGETS`):
next_token (default), predicted_token, task_correct, task_logit_diff.
"""

# importing the method modules registers them
from excise.scoring import activation, eap, gradient, lrp, magnitude, wanda  # noqa: F401
from excise.scoring.base import SCORERS, Scorer, ScorerConfig, kv_group_scores, register_scorer
from excise.scoring.batches import ReferenceBatch, ReferenceData, TaskTarget, as_batches
from excise.scoring.gradient import RelevanceConfig
from excise.scoring.run import ScoringResult, score_model
from excise.artifacts.scores import Scores
from excise.scoring.targets import TARGETS, Target, get_target, register_target
from excise.scoring.worker import score_in_worker

__all__ = [
    "SCORERS",
    "TARGETS",
    "ReferenceBatch",
    "ReferenceData",
    "RelevanceConfig",
    "Scorer",
    "ScorerConfig",
    "Scores",
    "ScoringResult",
    "Target",
    "TaskTarget",
    "as_batches",
    "get_target",
    "kv_group_scores",
    "register_scorer",
    "register_target",
    "score_in_worker",
    "score_model",
]
