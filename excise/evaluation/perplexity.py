"""Perplexity on held-out token windows.

Protocol: every window is scored independently (no context carried over);
each of its positions 1..L-1 predicts the next token, so a window contributes
L-1 predictions. Perplexity = exp(total negative log-likelihood / predictions),
accumulated in float64.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from excise.data.windows import DataSpec


@dataclass(frozen=True)
class PerplexityResult:
    perplexity: float
    mean_nll: float
    predictions: int


def default_evaluation_spec(count: int = 64, length: int = 512, source: str = "wiki") -> DataSpec:
    return DataSpec(source=source, split="evaluation", count=count, length=length, order="sequential")


@torch.no_grad()
def perplexity(model, windows: torch.Tensor, *, batch_size: int = 4, progress: bool = True) -> PerplexityResult:
    """Perplexity of `model` on `windows` (`[count, length]` token ids)."""
    device = next(model.parameters()).device
    total_nll = torch.zeros((), dtype=torch.float64)
    predictions = 0
    batches = windows.split(batch_size)
    for batch in tqdm(batches, desc="perplexity", unit="batch", disable=not progress):
        batch = batch.to(device)  # [batch, length]
        logits = model(input_ids=batch).logits[:, :-1]  # [batch, length-1, vocab]
        nll = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), batch[:, 1:].reshape(-1), reduction="sum")
        total_nll += nll.double().cpu()
        predictions += batch[:, 1:].numel()
    mean_nll = (total_nll / predictions).item()
    return PerplexityResult(perplexity=math.exp(mean_nll), mean_nll=mean_nll, predictions=predictions)
