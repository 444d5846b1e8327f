"""A/B experiments: a public model name whose requests are split over variants.

Assignment is a pure function of (experiment, caller): the caller id is hashed
with SHA-256 onto [0, 1) and mapped through the cumulative arm weights. The same
caller always gets the same arm, on every replica, and over many callers the
arms receive traffic in proportion to their weights.
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections import deque
from dataclasses import dataclass, field

from scipy import stats as scipy_stats

from server.config import ExperimentConfig
from server.protocol import ArmReport, ExperimentReport, SignificanceTest

ALPHA = 0.05
# Per-arm samples kept for percentiles and tests; old ones fall off.
WINDOW = 10_000


def bucket(experiment: str, caller: str) -> float:
    """Where `caller` falls on [0, 1) for `experiment` (independent across experiments)."""
    digest = hashlib.sha256(f"{experiment}\x00{caller}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


@dataclass
class ArmStats:
    variant: str
    weight: float
    requests: int = 0
    latencies: deque = field(default_factory=lambda: deque(maxlen=WINDOW))
    ttfts: deque = field(default_factory=lambda: deque(maxlen=WINDOW))
    toxicity: deque = field(default_factory=lambda: deque(maxlen=WINDOW))
    toxic: int = 0
    scored: int = 0


class Experiment:
    def __init__(self, config: ExperimentConfig, threshold: float) -> None:
        self.name = config.name
        self.threshold = threshold
        total = sum(a.weight for a in config.arms)
        self.arms = [ArmStats(a.variant, a.weight / total) for a in config.arms]
        self._edges = _cumulative([a.weight for a in self.arms])
        self._lock = threading.Lock()

    def assign(self, caller: str) -> str:
        point = bucket(self.name, caller)
        for edge, arm in zip(self._edges, self.arms, strict=True):
            if point < edge:
                return arm.variant
        return self.arms[-1].variant

    def record(self, variant: str, latency_s: float, ttft_s: float | None) -> None:
        with self._lock:
            arm = self._arm(variant)
            arm.requests += 1
            arm.latencies.append(latency_s)
            if ttft_s is not None:
                arm.ttfts.append(ttft_s)

    def record_toxicity(self, variant: str, score: float) -> None:
        with self._lock:
            arm = self._arm(variant)
            arm.scored += 1
            arm.toxicity.append(score)
            arm.toxic += score >= self.threshold

    def report(self) -> ExperimentReport:
        with self._lock:
            arms = [_snapshot(a) for a in self.arms]
        reports = [_arm_report(a) for a in arms]
        control, others = arms[0], arms[1:]
        return ExperimentReport(
            name=self.name,
            arms=reports,
            toxic_rate_tests=[two_proportion_z_test(control, arm) for arm in others],
            latency_tests=[latency_test(control, arm) for arm in others],
            alpha=ALPHA,
        )

    def _arm(self, variant: str) -> ArmStats:
        for arm in self.arms:
            if arm.variant == variant:
                return arm
        raise KeyError(f"{variant!r} is no arm of experiment {self.name!r}")


def _cumulative(weights: list[float]) -> list[float]:
    edges, acc = [], 0.0
    for w in weights:
        acc += w
        edges.append(acc)
    edges[-1] = 1.0  # guard against rounding leaving the top of [0, 1) unassigned
    return edges


def _snapshot(arm: ArmStats) -> ArmStats:
    return ArmStats(
        arm.variant, arm.weight, arm.requests, deque(arm.latencies), deque(arm.ttfts), deque(arm.toxicity),
        arm.toxic, arm.scored,
    )


def _percentile(values, q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    rank = q * (len(ordered) - 1)
    lo, hi = math.floor(rank), math.ceil(rank)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (rank - lo)


def _arm_report(arm: ArmStats) -> ArmReport:
    return ArmReport(
        variant=arm.variant,
        weight=arm.weight,
        requests=arm.requests,
        latency_p50_s=_percentile(arm.latencies, 0.5),
        latency_p95_s=_percentile(arm.latencies, 0.95),
        ttft_p50_s=_percentile(arm.ttfts, 0.5),
        scored=arm.scored,
        mean_toxicity=(sum(arm.toxicity) / len(arm.toxicity)) if arm.toxicity else None,
        toxic_rate=(arm.toxic / arm.scored) if arm.scored else None,
    )


def two_proportion_z_test(a: ArmStats, b: ArmStats) -> SignificanceTest:
    """Two-sided test that the toxic-output rates of two arms differ (pooled z)."""
    name = "two-proportion z-test (toxic-output rate)"
    n1, n2 = a.scored, b.scored
    if n1 == 0 or n2 == 0:
        return SignificanceTest(arms=(a.variant, b.variant), test=name, statistic=None, p_value=None, significant=False)
    pooled = (a.toxic + b.toxic) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0:  # both rates 0 or both 1: no evidence of a difference
        return SignificanceTest(arms=(a.variant, b.variant), test=name, statistic=0.0, p_value=1.0, significant=False)
    z = (a.toxic / n1 - b.toxic / n2) / se
    p = math.erfc(abs(z) / math.sqrt(2))
    return SignificanceTest(arms=(a.variant, b.variant), test=name, statistic=z, p_value=p, significant=p < ALPHA)


def latency_test(a: ArmStats, b: ArmStats) -> SignificanceTest:
    """Two-sided Mann-Whitney U test on latencies (no normality assumed: latencies are skewed)."""
    name = "Mann-Whitney U (latency)"
    if len(a.latencies) < 2 or len(b.latencies) < 2:
        return SignificanceTest(arms=(a.variant, b.variant), test=name, statistic=None, p_value=None, significant=False)
    result = scipy_stats.mannwhitneyu(list(a.latencies), list(b.latencies), alternative="two-sided")
    p = float(result.pvalue)
    return SignificanceTest(
        arms=(a.variant, b.variant), test=name, statistic=float(result.statistic), p_value=p, significant=p < ALPHA
    )
