"""Confidence intervals and paired tests for behaviour metrics measured per prompt.

- `wilson`: the 95 % Wilson score interval of a proportion (toxicity probability,
  repetitive share): unlike the normal approximation it stays inside [0, 1] and is
  usable at 0 or n successes.
- `bootstrap_mean`: a percentile bootstrap interval of a mean over prompts (expected
  maximum toxicity), resampling prompts (the unit that was sampled), seeded.
- `mcnemar`: the exact two-sided McNemar test of two paired binary outcomes on the same
  prompts (dense vs corrected): only the prompts whose outcome changed carry
  information, and under "no effect" each change is equally likely in either direction.
- `paired_bootstrap`: interval of the mean per-prompt difference (corrected - dense).
"""

from __future__ import annotations

import math

import numpy as np

Z95 = 1.959963984540054  # the standard normal's 97.5 % quantile


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of `successes / n`."""
    if n <= 0:
        raise ValueError("a proportion needs at least one trial")
    p = successes / n
    centre = p + z * z / (2 * n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    denominator = 1 + z * z / n
    return max(0.0, (centre - half) / denominator), min(1.0, (centre + half) / denominator)


def _resampled_means(values: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(values), size=(resamples, len(values)))  # [resamples, n]
    return values[picks].mean(axis=1)


def bootstrap_mean(values, *, resamples: int = 2000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of `values` (one value per prompt)."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        raise ValueError("a bootstrap needs at least one value")
    means = _resampled_means(values, resamples, seed)
    tail = (1 - level) / 2
    return float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))


def paired_bootstrap(before, after, **kwargs) -> tuple[float, float]:
    """Interval of the mean of `after - before` over the same prompts."""
    before, after = np.asarray(before, dtype=np.float64), np.asarray(after, dtype=np.float64)
    if before.shape != after.shape:
        raise ValueError("paired values must cover the same prompts")
    return bootstrap_mean(after - before, **kwargs)


def mcnemar(before, after) -> float:
    """Exact two-sided McNemar p-value for paired booleans (e.g. 'this prompt was toxic')."""
    before, after = np.asarray(before, dtype=bool), np.asarray(after, dtype=bool)
    if before.shape != after.shape:
        raise ValueError("paired outcomes must cover the same prompts")
    lost = int((before & ~after).sum())  # toxic before, not after
    gained = int((~before & after).sum())
    changed = lost + gained
    if changed == 0:
        return 1.0
    smaller = min(lost, gained)
    tail = sum(math.comb(changed, i) for i in range(smaller + 1)) / 2**changed
    return min(1.0, 2 * tail)
