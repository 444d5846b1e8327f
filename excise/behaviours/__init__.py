"""Behaviours a correction removes, one module each, listed in an explicit registry."""

from __future__ import annotations

from excise.behaviours.base import (
    Behaviour,
    BehaviourMeasurement,
    EvaluationSettings,
    UndesiredText,
    text_batches,
    undesired_batches,
)
from excise.behaviours.repetition import RepetitionBehaviour
from excise.behaviours.toxicity import ToxicityBehaviour
from excise.registry import Registry

BEHAVIOURS: Registry[Behaviour] = Registry(
    "behaviour", unknown="unknown behaviour {name!r} (no reference set); choose one of: {choices}"
)
for _behaviour in (ToxicityBehaviour(), RepetitionBehaviour()):
    BEHAVIOURS.add(_behaviour.name, _behaviour)


def get_behaviour(name: str) -> Behaviour:
    return BEHAVIOURS[name]


__all__ = [
    "BEHAVIOURS", "Behaviour", "BehaviourMeasurement", "EvaluationSettings", "UndesiredText", "get_behaviour",
    "text_batches", "undesired_batches",
]
