"""Selections: from scores to a mask. One module per selection, listed in an explicit registry."""

from __future__ import annotations

from excise.registry import Registry
from excise.selection.base import Selection, keep_highest, removal_count
from excise.selection.head import HeadSelection
from excise.selection.layer import LayerSelection
from excise.selection.neuron import NeuronSelection
from excise.selection.nm import NmSelection
from excise.selection.overall import GlobalSelection
from excise.selection.row import RowSelection

#: `excise prune --selection` (alias `--granularity`) names one of these
SELECTIONS: Registry[Selection] = Registry("granularity")
for _selection in (RowSelection(), LayerSelection(), GlobalSelection(), NeuronSelection(), HeadSelection(), NmSelection()):
    SELECTIONS.add(_selection.name, _selection)


def get_selection(name: str) -> Selection:
    return SELECTIONS[name]


__all__ = [
    "SELECTIONS",
    "Selection",
    "get_selection",
    "keep_highest",
    "removal_count",
]
