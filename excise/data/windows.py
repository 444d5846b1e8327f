"""Fixed-length token windows cut from a token stream of whole documents.

Documents of a split are tokenized, each followed by the EOS token, and joined
into one stream that is cut into non-overlapping windows. Evaluation takes the
first `count` windows in order; calibration takes `count` windows drawn without
replacement with `seed`; with the same seed a larger set extends a smaller one.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from excise.data.corpora import Split, load_documents, split_documents
from excise.errors import ExciseError

_SPEC = re.compile(r"^(?P<source>.+?)(?::(?P<count>\d+)x(?P<length>\d+))?$")


class DataSpec(BaseModel):
    """Which windows: source, split, how many, how long, and how they are drawn."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str = "wiki"
    split: Split = "calibration"
    count: int = Field(64, gt=0)
    length: int = Field(512, gt=1)
    seed: int = 0
    order: Literal["sequential", "random"] = "random"

    @classmethod
    def parse(cls, text: str, *, split: Split, order: Literal["sequential", "random"], seed: int = 0,
              default_count: int = 64, default_length: int = 512) -> DataSpec:
        """Parse `SOURCE[:COUNTxLENGTH]`, e.g. `wiki:64x512` or `my.jsonl:128x256`.

        A user file has no held-out part: its whole content is used (split `all`).
        """
        match = _SPEC.match(text.strip())
        if not match:
            raise ExciseError(f"cannot read data spec {text!r}; write SOURCE[:COUNTxLENGTH], e.g. wiki:64x512")
        source = match["source"]
        bundled = all(part in ("wiki", "news") for part in source.split("+"))
        return cls(
            source=source if bundled else str(Path(source).expanduser()),
            split=split if bundled else "all",
            count=int(match["count"]) if match["count"] else default_count,
            length=int(match["length"]) if match["length"] else default_length,
            seed=seed,
            order=order,
        )

    def describe(self) -> str:
        return f"{self.count} x {self.length} tokens of {self.source} ({self.split} split, {self.order}, seed {self.seed})"


def token_stream(tokenizer, spec: DataSpec) -> torch.Tensor:
    documents = split_documents(load_documents(spec.source), spec.split)
    if not documents:
        raise ExciseError(f"the {spec.split} split of {spec.source} is empty")
    eos = tokenizer.eos_token_id
    ids: list[int] = []
    for document in documents:
        ids.extend(tokenizer(document.text, add_special_tokens=False)["input_ids"])
        if eos is not None:
            ids.append(eos)
    return torch.tensor(ids, dtype=torch.long)


def token_windows(tokenizer, spec: DataSpec, *, max_length: int | None = None) -> torch.Tensor:
    """`[count, length]` token ids as `spec` says; errors name what to change."""
    if max_length is not None and spec.length > max_length:
        raise ExciseError(
            f"windows of {spec.length} tokens exceed the model's context of {max_length}; use a length <= {max_length}"
        )
    stream = token_stream(tokenizer, spec)
    available = stream.numel() // spec.length
    if spec.count > available:
        raise ExciseError(
            f"{spec.source} ({spec.split} split) has {stream.numel()} tokens: {available} windows of "
            f"{spec.length}, fewer than the {spec.count} asked for; ask for fewer or shorter windows"
        )
    windows = stream[: available * spec.length].view(available, spec.length)  # [available, length]
    if spec.order == "sequential":
        return windows[: spec.count].clone()
    generator = torch.Generator().manual_seed(spec.seed)
    chosen = torch.randperm(available, generator=generator)[: spec.count]
    return windows[chosen].clone()
