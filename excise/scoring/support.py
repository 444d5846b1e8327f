"""What a scoring method can do: the checks prune, correct and circuit configs share.

A method scores some of the units weight, neuron and head (`Scorer.supported_granularities`;
activation scores only neurons and heads), and only methods with a backward pass can
recompute layers in it. Asking for anything else fails when the config is made, before
any model is loaded or scored.
"""

from __future__ import annotations


def check_method(method: str | None, unit: str, *, recompute: bool = False, granularity: str | None = None) -> None:
    """The check every config (prune, correct, circuit) makes of its method: raise ValueError (a
    config validation error) when `method` cannot score `unit`s (asked as `granularity`, a
    selection, in prune) or cannot recompute layers."""
    _check_unit(method, unit, granularity)
    check_recompute(method, recompute)


def _check_unit(method: str | None, unit: str, granularity: str | None) -> None:
    from excise.scoring import SCORERS  # importing the package registers the methods

    scorer = SCORERS.get(method) if method is not None else None
    if scorer is None or unit in scorer.supported_granularities:
        return  # no method (saved scores) or an unknown one, which the config's own check names
    able = sorted(name for name, other in SCORERS.items() if unit in other.supported_granularities)
    asked = f"granularity {granularity!r} ({unit}s)" if granularity not in (None, unit) else f"{unit}s"
    raise ValueError(
        f"method {method!r} cannot score {asked}; it scores {', '.join(s + 's' for s in scorer.supported_granularities)}. "
        f"Choose another method ({', '.join(able)}) or granularity"
    )


def check_recompute(method: str | None, recompute: bool) -> None:
    """Raise ValueError when layer recomputation is asked of a method without a backward pass."""
    from excise.scoring import SCORERS

    scorer = SCORERS.get(method) if method is not None else None
    if not recompute or (scorer is not None and scorer.runs_backward):
        return
    able = ", ".join(sorted(name for name, other in SCORERS.items() if other.runs_backward))
    raise ValueError(f"recompute saves backward-pass memory; {method!r} runs no backward pass (only {able} do)")
