"""SparseGPT's OBS step against explicit float64 computations written out from its definition."""

from __future__ import annotations

import pytest
import torch

from excise.errors import ExciseError
from excise.pruning.reconstruction.obs import BlockShare, FixedMask, NofM, RowShare, inverse_hessian_factor, obs_prune
from excise.selection import removal_count


def _problem(rows=5, cols=12, tokens=40, seed=0):
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(rows, cols, generator=generator, dtype=torch.float64)
    inputs = torch.randn(tokens, cols, generator=generator, dtype=torch.float64)
    inputs[:, 3] += 0.7 * inputs[:, 1]  # correlated inputs, so the update has something to do
    return weight, inputs


def _explicit_obs(weight, hessian, keep):
    """Columns left to right; removing (r, j) moves its error onto the columns F = j.. of row r by
    the textbook OBS formula with an explicitly inverted H restricted to F (no Cholesky)."""
    weight = weight.clone()
    for j in range(weight.shape[1]):
        inverse = torch.linalg.inv(hessian[j:, j:])  # [H_F]^-1, F = {j, ..., in-1}
        for r in range(weight.shape[0]):
            if not keep[r, j]:
                weight[r, j:] -= weight[r, j] / inverse[0, 0] * inverse[0, :]
        weight[~keep[:, j], j] = 0.0
    return weight


@pytest.mark.parametrize("block_size", [1, 4, 128])
def test_fixed_mask_update_equals_explicit_obs(block_size):
    weight, inputs = _problem()
    damping = 0.01
    hessian = inputs.T @ inputs
    damped = hessian + damping * torch.diagonal(hessian).mean() * torch.eye(hessian.shape[0], dtype=torch.float64)
    keep = torch.rand(weight.shape, generator=torch.Generator().manual_seed(1)) > 0.4
    factor, dead = inverse_hessian_factor(hessian, damping)
    assert not dead.any()
    ours, kept = obs_prune(weight, factor, FixedMask(keep), block_size=block_size)
    assert torch.equal(kept, keep)
    torch.testing.assert_close(ours, _explicit_obs(weight, damped, keep), rtol=1e-10, atol=1e-10)
    assert (ours[~keep] == 0).all()


def test_pruning_only_the_first_column_is_the_least_squares_optimum():
    """With one removed weight per row in column 0, OBS re-fits all the others: the result must be
    argmin ||X (w - w')ᵀ||² over w' with w'_0 = 0, which is a plain least-squares solve."""
    weight, inputs = _problem()
    keep = torch.ones_like(weight, dtype=torch.bool)
    keep[:, 0] = False
    factor, _ = inverse_hessian_factor(inputs.T @ inputs, damping=1e-12)
    ours, _ = obs_prune(weight, factor, FixedMask(keep))
    targets = inputs @ weight.T  # [tokens, rows]
    solution = torch.linalg.lstsq(inputs[:, 1:], targets).solution.T  # [rows, cols-1]
    torch.testing.assert_close(ours[:, 1:], solution, rtol=1e-7, atol=1e-7)


def test_update_lowers_the_reconstruction_error_of_the_same_mask():
    weight, _ = _problem(rows=16, cols=32)
    generator = torch.Generator().manual_seed(3)  # inputs from 8 latent factors, as real features are correlated
    inputs = torch.randn(200, 8, generator=generator, dtype=torch.float64) @ torch.randn(8, 32, generator=generator, dtype=torch.float64)
    inputs += 0.1 * torch.randn(200, 32, generator=generator, dtype=torch.float64)
    keep = torch.rand(weight.shape, generator=torch.Generator().manual_seed(2)) > 0.5
    factor, _ = inverse_hessian_factor(inputs.T @ inputs, 0.01)
    ours, _ = obs_prune(weight, factor, FixedMask(keep))
    error = lambda w: (inputs @ (weight - w).T).pow(2).sum()  # noqa: E731
    assert error(ours) < 0.7 * error(weight * keep)


def test_saliency_rules_remove_exact_counts():
    weight, inputs = _problem(rows=6, cols=16, tokens=64)
    factor, _ = inverse_hessian_factor(inputs.T @ inputs, 0.01)
    _, keep = obs_prune(weight, factor, RowShare(0.6, 16), block_size=5)
    assert ((~keep).sum(1) == removal_count(16, 0.6)).all()  # exact per row across uneven blocks
    _, keep = obs_prune(weight, factor, NofM(2, 4), block_size=8)
    assert ((~keep).view(6, 4, 4).sum(-1) == 2).all()  # 2:4
    _, keep = obs_prune(weight, factor, BlockShare(0.5), block_size=8)
    assert (~keep).sum() == 48 and (~keep[:, :8]).sum() == 24


def test_first_block_is_chosen_by_obs_saliency():
    """Before any update, the rule sees the original weights and U's diagonal: w² / U_jj²."""
    weight, inputs = _problem(rows=4, cols=8)
    factor, _ = inverse_hessian_factor(inputs.T @ inputs, 0.01)
    _, keep = obs_prune(weight, factor, RowShare(0.5, 8), block_size=8)
    saliency = weight.pow(2) / torch.diagonal(factor).pow(2)
    lowest = saliency.argsort(dim=1)[:, :4]
    assert torch.equal(~keep, torch.zeros_like(keep).scatter_(1, lowest, True))


def test_dead_input_columns_are_damped_not_fatal():
    weight, inputs = _problem()
    inputs[:, [2, 7]] = 0.0  # channels that never fire on the calibration data
    factor, dead = inverse_hessian_factor(inputs.T @ inputs, 0.01)
    assert dead.tolist() == [i in (2, 7) for i in range(12)]
    ours, keep = obs_prune(weight, factor, RowShare(0.5, 12))
    assert torch.isfinite(ours).all()
    kept_dead = keep[:, [2, 7]]
    torch.testing.assert_close(ours[:, [2, 7]][kept_dead], weight[:, [2, 7]][kept_dead])  # never moved


def test_a_hessian_that_cannot_be_factored_is_one_clear_error():
    hessian = -torch.eye(4, dtype=torch.float64)  # negative: no damping share of it helps
    with pytest.raises(ExciseError, match="not positive definite.*damping"):
        inverse_hessian_factor(hessian, 0.01, what="model.layers.0.mlp.down_proj")
