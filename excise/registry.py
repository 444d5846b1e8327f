"""`Registry[T]`: the one kind of name -> entry table behind every choice a user names
(scorers, targets, selections, exporters, behaviours, tasks, model adapters, toxicity scorers).

Convention: the package's `__init__` (or the module that defines the interface) lists its
entries explicitly, in the order users see them in `--help` and in errors, e.g.

    SELECTIONS = Registry("granularity")
    for selection in (RowSelection(), LayerSelection(), ...):
        SELECTIONS.add(selection.name, selection)

Why a list and not a decorator on each class: the whole set can be read in one place, its
order is the list's, and the modules holding the entries never import the registry, so no
module climbs back up into its package (the old `tasks/registry.py` <-> `tasks/jsonl.py`
cycle) and nothing is registered as a side effect of an import someone forgot. An entry is
what its callers use: an instance where it holds no state of a model (selections, targets,
exporters, behaviours), a class or factory where each use builds one (scorers and adapters
for a model, tasks, toxicity scorers whose model loads on first use).

A registry refuses a second entry under a name (`ValueError`: a programming error), names
its choices in one line when asked for an unknown one (`ExciseError`), works as argparse
`choices=`, and checks a config field with `registry.choice()` (an `Annotated` str for pydantic).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Generic, TypeVar

from pydantic import AfterValidator

from excise.errors import ExciseError

T = TypeVar("T")


class Registry(Generic[T]):
    """Entries by name, in registration order.

    `unknown` and `duplicate` are the one-line messages, formatted with `kind`, `name`,
    `choices` (comma-separated) and, for a duplicate, `existing` (the entry registered first).
    """

    def __init__(
        self,
        kind: str,
        *,
        unknown: str = "unknown {kind} {name!r}; choose one of: {choices}",
        duplicate: str = "{kind} {name!r} is already registered ({existing})",
    ):
        self.kind = kind
        self._unknown = unknown
        self._duplicate = duplicate
        self._entries: dict[str, T] = {}

    def add(self, name: str, entry: T) -> T:
        if name in self._entries:
            existing = self._entries[name]
            raise ValueError(self._duplicate.format(kind=self.kind, name=name, existing=getattr(existing, "__name__", existing)))
        self._entries[name] = entry
        return entry

    def __getitem__(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise ExciseError(self.unknown_message(name)) from None

    def unknown_message(self, name: str) -> str:
        return self._unknown.format(kind=self.kind, name=name, choices=", ".join(self._entries))

    def get(self, name: str | None) -> T | None:
        return self._entries.get(name) if name is not None else None

    def __delitem__(self, name: str) -> None:
        del self._entries[name]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def items(self):
        return self._entries.items()

    def names(self) -> list[str]:
        return list(self._entries)

    def check(self, name: str) -> str:
        """`name` if registered, else ValueError (pydantic reports it as the field's error)."""
        if name not in self._entries:
            raise ValueError(self.unknown_message(name))
        return name

    def choice(self) -> type[str]:
        """A str type for pydantic fields that must name an entry (checked when the config is made)."""
        return Annotated[str, AfterValidator(self.check)]  # type: ignore[return-value]
