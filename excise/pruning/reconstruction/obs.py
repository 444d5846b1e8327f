"""SparseGPT's Optimal Brain Surgeon step for one linear layer (Frantar & Alistarh, 2023).

For a linear y = x Wᵀ and calibration inputs X `[n, in]`, the layer-wise reconstruction
error of a pruned W' is ||X (W - W')ᵀ||², whose Hessian per row is H = XᵀX `[in, in]`.
Removing weight (r, j) and letting the not-yet-processed weights of row r absorb the
error gives the OBS update  w_r[F] -= (w_rj / [H_F⁻¹]_jj) · [H_F⁻¹]_{j,F}, where F is
column j and every column after it. SparseGPT processes columns left to right, so each
F is a suffix of the columns and all the H_F⁻¹ rows it needs are the rows of the upper
Cholesky factor U of H⁻¹ (scaled by their diagonal): one factorisation serves the
whole layer, and columns are processed in blocks with a lazy update of the rest.

Which weights go is a `MaskRule`: a fixed mask chosen by another method (LRP, Wanda: the
update only repairs), or SparseGPT's own saliency w² / [U_jj]², chosen per column block
on the already-updated weights ("adaptive mask selection"), row-wise, per block of the
whole tensor, or N:M.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from excise.errors import ExciseError
from excise.selection.base import keep_highest, removal_count


class MaskRule(ABC):
    """Chooses, for one block of columns, which weights to remove (True = remove)."""

    @abstractmethod
    def remove(self, block: torch.Tensor, diagonal: torch.Tensor, start: int) -> torch.Tensor:
        """`block [rows, b]` (current weights of columns start:start+b), `diagonal [b]` of U -> bool `[rows, b]`."""


class FixedMask(MaskRule):
    """A mask chosen beforehand (`keep [rows, cols]`, True = kept): SparseGPT only repairs."""

    def __init__(self, keep: torch.Tensor):
        self.keep = keep

    def remove(self, block, diagonal, start):
        return ~self.keep[:, start : start + block.shape[1]].to(block.device)


def _saliency(block: torch.Tensor, diagonal: torch.Tensor) -> torch.Tensor:
    return block.pow(2) / diagonal.pow(2)[None, :]  # [rows, b], the OBS error of removing each weight


class RowShare(MaskRule):
    """Every row loses `removal_count(in, sparsity)` weights in all, the lowest-saliency ones of each
    block; blocks take their share of that count so the per-row total is exact (as in row selection)."""

    def __init__(self, sparsity: float, columns: int):
        self.sparsity, self.columns = sparsity, columns

    def remove(self, block, diagonal, start):
        end = start + block.shape[1]
        count = removal_count(end, self.sparsity) - removal_count(start, self.sparsity)
        return ~keep_highest(_saliency(block, diagonal), count)


class BlockShare(MaskRule):
    """SparseGPT's original rule: the lowest-saliency share of each block over all its rows."""

    def __init__(self, sparsity: float):
        self.sparsity = sparsity

    def remove(self, block, diagonal, start):
        flat = _saliency(block, diagonal).flatten()
        return ~keep_highest(flat, removal_count(flat.numel(), self.sparsity)).view(block.shape)


class NofM(MaskRule):
    """N:M: in every group of M consecutive columns of a row, remove the `remove` lowest-saliency weights."""

    def __init__(self, remove: int, m: int):
        self.count, self.m = remove, m

    def remove(self, block, diagonal, start):
        rows, width = block.shape
        if start % self.m or width % self.m:
            raise ExciseError(f"N:M blocks of {self.m} columns must align with the column blocks; choose another M")
        groups = _saliency(block, diagonal).view(rows, width // self.m, self.m)
        return ~keep_highest(groups, self.count).view(rows, width)


def inverse_hessian_factor(hessian: torch.Tensor, damping: float, what: str = "layer") -> tuple[torch.Tensor, torch.Tensor]:
    """The upper Cholesky factor U of (H + λI)⁻¹ with λ = damping · mean(diag H), and the dead columns.

    A column whose calibration input was always zero (diag 0) has its diagonal set to 1 so H
    stays invertible; its row and column of H stay zero, so the update never moves error into
    or out of it (its weights are kept or removed by the rule like any other, but not changed).
    """
    hessian = hessian.clone()
    dead = torch.diagonal(hessian) == 0  # [in]
    hessian[dead, dead] = 1.0
    mean_diagonal = torch.diagonal(hessian).mean()
    hessian.diagonal().add_(damping * mean_diagonal)
    try:
        lower = torch.linalg.cholesky(hessian)
        inverse = torch.cholesky_inverse(lower)
        return torch.linalg.cholesky(inverse, upper=True), dead
    except torch.linalg.LinAlgError as error:
        raise ExciseError(
            f"the calibration Hessian of {what} is not positive definite even with damping {damping}; "
            "pass a larger damping (e.g. --reconstruct-param damping=0.1) or more calibration data"
        ) from error


@contextmanager
def _one_thread() -> Iterator[None]:
    """The column loop is thousands of tiny ops: thread start-up costs more than it saves (8x
    slower with 2 threads on a 2-core CPU, measured on a 1536 x 576 weight)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@torch.no_grad()
def obs_prune(
    weight: torch.Tensor, factor: torch.Tensor, rule: MaskRule, *, block_size: int = 128
) -> tuple[torch.Tensor, torch.Tensor]:
    """Prune `weight [out, in]` with the OBS update; returns (new weight with zeros, keep mask).

    `factor` is U from `inverse_hessian_factor`. Computed in the dtype of `factor` (fp32 in use,
    fp64 in the tests), returned in the dtype of `weight`.
    """
    work = weight.to(factor.dtype).clone()  # [out, in]
    rows, columns = work.shape
    keep = torch.ones_like(work, dtype=torch.bool)
    with _one_thread():
        for start in range(0, columns, block_size):
            _prune_block(work, keep, factor, rule, start, min(start + block_size, columns))
    return work.to(weight.dtype), keep


def _prune_block(work: torch.Tensor, keep: torch.Tensor, factor: torch.Tensor, rule: MaskRule, start: int, end: int) -> None:
    """Columns start:end of `work` pruned and updated in place, the later columns lazily corrected."""
    block = work[:, start:end].clone()  # [out, b]
    local = factor[start:end, start:end]  # [b, b]
    removed = rule.remove(block, torch.diagonal(local), start)  # [out, b]
    errors = torch.zeros_like(block)
    for i in range(end - start):
        column = block[:, i]
        pruned = torch.where(removed[:, i], torch.zeros_like(column), column)
        error = (column - pruned) / local[i, i]  # [out]
        block[:, i:] -= error[:, None] * local[i, i:][None, :]
        block[:, i] = pruned  # exactly zero where removed
        errors[:, i] = error
    work[:, start:end] = block
    keep[:, start:end] = ~removed
    work[:, end:] -= errors @ factor[start:end, end:]  # the lazy update of the later columns
