import math

import numpy as np
import pytest

from excise.evaluation.intervals import bootstrap_mean, mcnemar, paired_bootstrap, wilson


def test_wilson_matches_the_closed_form_by_hand():
    # 8 of 10, z = 1.96: centre (0.8 + 0.19208) / 1.38416, half 1.96 sqrt(0.016 + 0.0096040) / 1.38416
    low, high = wilson(8, 10, z=1.96)
    assert low == pytest.approx((0.99208 - 1.96 * math.sqrt(0.025604)) / 1.38416)
    assert high == pytest.approx((0.99208 + 1.96 * math.sqrt(0.025604)) / 1.38416)
    assert wilson(0, 20)[0] == 0.0 and wilson(20, 20)[1] == 1.0 and wilson(0, 20)[1] > 0


def test_mcnemar_is_the_exact_binomial_tail():
    before = [True] * 9 + [False]
    after = [False] * 7 + [True, True, True]  # 7 lost, 1 gained: 2 * P(X <= 1 | 8, 1/2) = 2 * 9 / 256
    assert mcnemar(before, after) == pytest.approx(18 / 256)
    assert mcnemar(before, before) == 1.0


def test_bootstrap_covers_the_mean_and_is_seeded():
    values = np.random.default_rng(1).normal(0.3, 0.1, size=200)
    low, high = bootstrap_mean(values, seed=3)
    assert low < values.mean() < high and high - low < 0.05
    assert bootstrap_mean(values, seed=3) == (low, high)
    assert paired_bootstrap(values, values + 0.2, seed=0) == pytest.approx((0.2, 0.2))
