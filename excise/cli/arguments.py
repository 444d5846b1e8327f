"""Argument types shared by the subcommands, and the checks against this machine that follow
parsing: a typo, a device the machine lacks or an output folder it cannot write costs one line
and exit 2 before any model is loaded or scored.

The types check only what a value says (so a command line meant for another machine, a GPU
pod's, still parses here); `check_machine` then checks the parsed values against this one.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from excise.errors import ExciseError
from excise.models.placement import DEVICE_MAP_STRATEGIES, check_dtype

DEVICE_TYPES = ("cpu", "cuda", "mps")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number; give one of at least 1") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not at least 1; give a positive count")
    return value


def device(text: str) -> str:
    """A torch device name: cpu, cuda, cuda:N, mps."""
    import torch

    try:
        parsed = torch.device(text)
    except (RuntimeError, ValueError):
        parsed = None
    if parsed is None or parsed.type not in DEVICE_TYPES:
        raise argparse.ArgumentTypeError(f"{text!r} is not a device excise runs on; use cpu, cuda, cuda:N or mps")
    return text


def device_map(text: str) -> str | dict:
    """An accelerate strategy (auto, balanced, balanced_low_0, sequential) or a JSON file
    mapping module names to devices ("model.layers.3": 0, "model.layers.20": 1, ...)."""
    if text in DEVICE_MAP_STRATEGIES:
        return text
    path = Path(text)
    try:
        mapping = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else "not JSON"
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither {', '.join(DEVICE_MAP_STRATEGIES)} nor a readable JSON file ({reason})"
        ) from None
    if not isinstance(mapping, dict) or not all(isinstance(v, (int, str)) for v in mapping.values()):
        raise argparse.ArgumentTypeError(f"{text} must hold one JSON object of module name -> device (a GPU index or name)")
    return mapping


def check_machine(args: argparse.Namespace) -> None:
    """The parsed `--device` exists here and can run `--dtype`, and `--out` can be written here."""
    if getattr(args, "device", None) is not None:
        _check_device(args.device)
        if getattr(args, "dtype", None) is not None and getattr(args, "device_map", None) is None:
            check_dtype(args.device, args.dtype)
    if isinstance(getattr(args, "out", None), Path):
        _check_writable(args.out)


def _check_device(name: str) -> None:
    import torch

    parsed = torch.device(name)
    if parsed.type == "cuda":
        count = torch.cuda.device_count()
        if count == 0 or (parsed.index is not None and parsed.index >= count):
            raise ExciseError(f"argument --device: {name!r} is not on this machine ({count} CUDA devices); use cpu")
    elif parsed.type == "mps" and not torch.backends.mps.is_available():
        raise ExciseError("argument --device: mps is not available on this machine; use cpu")


def _check_writable(path: Path) -> None:
    if path.exists() and not path.is_dir():
        raise ExciseError(f"argument --out: {path} is a file; give a folder to write the artifact into")
    ancestor = path.absolute().parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    try:  # permissions alone do not tell (root, read-only mounts, /proc): try it
        with tempfile.TemporaryFile(dir=ancestor):
            pass
    except OSError:
        raise ExciseError(f"argument --out: cannot write under {ancestor}; choose a folder you can write to") from None
