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
from excise.errors import ExciseError

BEHAVIOURS: dict[str, Behaviour] = {}


def register_behaviour(behaviour: Behaviour) -> Behaviour:
    if behaviour.name in BEHAVIOURS:
        raise ValueError(f"behaviour {behaviour.name!r} is already registered")
    BEHAVIOURS[behaviour.name] = behaviour
    return behaviour


for _behaviour in (ToxicityBehaviour(), RepetitionBehaviour()):
    register_behaviour(_behaviour)


def get_behaviour(name: str) -> Behaviour:
    try:
        return BEHAVIOURS[name]
    except KeyError:
        raise ExciseError(
            f"unknown behaviour {name!r} (no reference set); choose one of: {', '.join(BEHAVIOURS)}"
        ) from None


__all__ = [
    "BEHAVIOURS", "Behaviour", "BehaviourMeasurement", "EvaluationSettings", "UndesiredText", "get_behaviour",
    "text_batches", "undesired_batches",
]
