"""Argument types shared by the subcommands: each refuses a bad value while the command line is
parsed, so a typo costs one line and exit 2 before any model is loaded or scored."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number; give one of at least 1") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not at least 1; give a positive count")
    return value


def device(text: str) -> str:
    """A torch device this machine has: cpu, cuda, cuda:N, mps."""
    import torch

    try:
        parsed = torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a device; use cpu, cuda, cuda:N or mps") from None
    if parsed.type == "cuda":
        count = torch.cuda.device_count()
        if parsed.index is not None and parsed.index >= count or count == 0:
            raise argparse.ArgumentTypeError(f"{text!r} is not on this machine ({count} CUDA devices); use cpu")
    elif parsed.type == "mps" and not torch.backends.mps.is_available():
        raise argparse.ArgumentTypeError("mps is not available on this machine; use cpu")
    elif parsed.type not in ("cpu", "cuda", "mps"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a device excise runs on; use cpu, cuda, cuda:N or mps")
    return text


def output_folder(text: str) -> Path:
    """A folder excise can create (atomically, next to where it will be): its parent is writable."""
    path = Path(text).expanduser()
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a file; give a folder to write the artifact into")
    ancestor = path.absolute().parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    try:  # permissions alone do not tell (root, read-only mounts, /proc): try it
        with tempfile.TemporaryFile(dir=ancestor):
            pass
    except OSError:
        raise argparse.ArgumentTypeError(f"cannot write under {ancestor}; choose a folder you can write to") from None
    return path
