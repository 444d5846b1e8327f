"""Circuit discovery: the sparsest sub-network that still does a task, its faithfulness and graph."""

from excise.circuits.ablation import ABLATIONS, ablated, ablated_score, input_means
from excise.circuits.artifact import write_circuit
from excise.circuits.discovery import CircuitConfig, CircuitResult, discover_circuit
from excise.circuits.graph import circuit_graph, graph_to_dot
from excise.circuits.sweep import CurvePoint, pick, removed_units

__all__ = [
    "ABLATIONS",
    "CircuitConfig",
    "CircuitResult",
    "CurvePoint",
    "ablated",
    "ablated_score",
    "circuit_graph",
    "discover_circuit",
    "graph_to_dot",
    "input_means",
    "pick",
    "removed_units",
    "write_circuit",
]
