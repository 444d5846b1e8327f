"""Selections: from scores to a mask. One module per selection, listed in an explicit registry."""

from __future__ import annotations

from excise.errors import ExciseError
from excise.selection.base import Selection, keep_highest, removal_count
from excise.selection.head import HeadSelection
from excise.selection.layer import LayerSelection
from excise.selection.neuron import NeuronSelection
from excise.selection.nm import NmSelection
from excise.selection.overall import GlobalSelection
from excise.selection.row import RowSelection

SELECTIONS: dict[str, Selection] = {}


def register_selection(selection: Selection) -> Selection:
    if selection.name in SELECTIONS:
        raise ValueError(f"selection {selection.name!r} is already registered")
    SELECTIONS[selection.name] = selection
    return selection


register_selection(RowSelection())
register_selection(LayerSelection())
register_selection(GlobalSelection())
register_selection(NeuronSelection())
register_selection(HeadSelection())
register_selection(NmSelection())


def selection_names() -> list[str]:
    return list(SELECTIONS)


def get_selection(name: str) -> Selection:
    try:
        return SELECTIONS[name]
    except KeyError:
        raise ExciseError(f"unknown granularity {name!r}; choose one of: {', '.join(SELECTIONS)}") from None


__all__ = [
    "SELECTIONS",
    "Selection",
    "get_selection",
    "keep_highest",
    "register_selection",
    "removal_count",
    "selection_names",
]
