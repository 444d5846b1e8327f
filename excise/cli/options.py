"""Command-line options generated from the pydantic configs, so a default, a help text and the
choices are written once, on the config's field (`Field(description=...)`, `Literal`), and
`prune`, `correct` and `circuit` read the same `ComputeSettings` flags from the same place.

An `Option` names a config field (dotted into a nested config: `settings.samples`); the
flag, its type (a `Literal` becomes `choices`, a bool a switch, an int that must be at
least 1 `positive_int`, a dict or a nested config repeatable `KEY=VALUE` pairs), whether it
is required, its default and its help come from the field. An option only says what the field cannot: another flag name or an alias, or a
converter for a value typed differently on a command line (`--sweep 25,50`).
"""

from __future__ import annotations

import argparse
import json
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from annotated_types import Ge, Gt
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from excise.cli.arguments import device, device_map, positive_int

_FROM_FIELD: Any = object()


@dataclass(frozen=True)
class Option:
    field: str  # a field of the config, dotted into a nested one ("settings.seed")
    flags: tuple[str, ...] = ()  # default: --<the field's last part, dashed>; more are aliases
    type: Callable[[str], Any] | None = None  # a converter the field's type does not imply
    metavar: str | None = None
    help: str | None = None  # default: the field's description
    default: Any = _FROM_FIELD  # default: the field's (None where the command resolves it itself)
    required: bool = False  # required on the command line though the config has a default

    @property
    def dest(self) -> str:
        return self.field.replace(".", "__")


#: the `ComputeSettings` flags (`excise.models.placement`), the same in every command that runs a model
COMPUTE_OPTIONS = (
    Option("device", type=device),
    Option("dtype"),
    Option("device_map", type=device_map, metavar="STRATEGY|FILE.json"),
    Option("recompute"),
)


def field_info(config: type[BaseModel], path: str) -> FieldInfo:
    *parents, name = path.split(".")
    for parent in parents:
        config = config.model_fields[parent].annotation
    return config.model_fields[name]


def add_options(parser: argparse.ArgumentParser, config: type[BaseModel], options: Sequence[Option]) -> None:
    """One argparse option per `Option`, from the field it names in `config`."""
    for option in options:
        info = field_info(config, option.field)
        flags = option.flags or ("--" + option.field.rsplit(".", 1)[-1].replace("_", "-"),)
        kwargs: dict[str, Any] = {"dest": option.dest}
        default = info.get_default(call_default_factory=True) if option.default is _FROM_FIELD else option.default
        kind = _plain(info.annotation)
        if kind is bool:
            kwargs["action"] = "store_true"
        elif _is_mapping(kind):  # the config validates the keys, as it does a dict given in code
            kwargs |= {"action": "append", "type": key_value, "metavar": "KEY=VALUE"}
            default = None
        else:
            kwargs["type"] = option.type or _converter(kind, info)
            if typing.get_origin(kind) is Literal:
                kwargs["choices"] = list(typing.get_args(kind))
            if option.metavar or "choices" not in kwargs:  # the flag's name, not the nested dest
                kwargs["metavar"] = option.metavar or flags[0].lstrip("-").replace("-", "_").upper()
        required = option.required or (info.is_required() and option.default is _FROM_FIELD)
        if required:
            kwargs["required"] = True
        else:
            kwargs["default"] = default
        help_text = option.help or info.description or ""
        if default is not None and default is not False and not required:
            help_text += f" (default: {_shown(default)})"
        if len(flags) > 1:
            help_text += f"; {', '.join(flags[1:])}: the same, an older name"
        kwargs["help"] = help_text.replace("%", "%%")
        parser.add_argument(*flags, **kwargs)


def option_values(args: argparse.Namespace, config: type[BaseModel], options: Sequence[Option]) -> dict[str, Any]:
    """The parsed options as the config's (nested) keyword arguments."""
    values: dict[str, Any] = {}
    for option in options:
        *parents, name = option.field.split(".")
        target = values
        for parent in parents:
            target = target.setdefault(parent, {})
        value = getattr(args, option.dest)
        if _is_mapping(_plain(field_info(config, option.field).annotation)):
            value = dict(value or [])
        target[name] = value
    return values


def key_value(text: str) -> tuple[str, Any]:
    """`KEY=VALUE`; a VALUE that reads as JSON (numbers, true/false) is taken as such."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"parameter {text!r} is not KEY=VALUE")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def _is_mapping(kind: Any) -> bool:
    return typing.get_origin(kind) is dict or kind is dict or (isinstance(kind, type) and issubclass(kind, BaseModel))


def _plain(annotation: Any) -> Any:
    """`X | None` -> `X`."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        rest = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(rest) == 1:
            return rest[0]
    return annotation


def _converter(kind: Any, info: FieldInfo) -> Callable[[str], Any]:
    if typing.get_origin(kind) is Literal:
        return str
    if kind is int:
        at_least_one = any((isinstance(m, Ge) and m.ge >= 1) or (isinstance(m, Gt) and m.gt >= 0) for m in info.metadata)
        return positive_int if at_least_one else int
    if kind in (float, str, Path):
        return kind
    raise TypeError(f"no command-line converter for {kind!r}; give the Option one")


def _shown(default: Any) -> str:
    if isinstance(default, (list, tuple)):
        return ",".join(map(str, default))
    return str(default)
