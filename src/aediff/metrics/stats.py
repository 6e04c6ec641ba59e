"""Measured numbers with their uncertainty: an ``Estimate`` is a value and its standard error, and the
few constructors the evaluation needs (over images, binomial, paired proportions, bootstrap draws).

Every number the comparison report compares is an ``Estimate``; the verdict rules in
``aediff.reports.verdicts`` decide from the interval ``value +- z * se``, never from the point alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "Z95",
    "Estimate",
    "difference_of_draws",
    "over_training_seeds",
    "paired_difference",
    "paired_proportion_difference",
]

Z95 = 1.959964  # two-sided 95% normal quantile


def quantile95(df: int = 0) -> float:
    """The two-sided 95% quantile: Student's t with ``df`` degrees of freedom, or the normal one for df 0."""
    if df <= 0:
        return Z95
    from scipy.stats import t

    return float(t.ppf(0.975, df))


@dataclass(frozen=True)
class Estimate:
    """A measured value with its standard error (``se`` 0 when exact) and the count it rests on.

    value: the point estimate; se: its standard error, >= 0; n: images, samples or draws behind it;
    how: one phrase saying where the standard error comes from ("over 300 images", "bootstrap, 50 draws");
    df: the degrees of freedom of a Student-t interval (an estimate over a few training seeds), 0 for the
    normal interval; seeds: the training seeds it pools (0: it is about one trained run).
    """

    value: float
    se: float = 0.0
    n: int = 0
    how: str = ""
    df: int = 0
    seeds: int = 0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.value) and math.isfinite(self.se)) or self.se < 0:
            raise ValueError(f"an Estimate needs a finite value and a finite se >= 0, got {self.value}, {self.se}")

    @property
    def half_width(self) -> float:
        """Half the 95% interval's width: the t quantile times se over seeds, else 1.96 se."""
        return quantile95(self.df) * self.se

    def interval(self, z: float | None = None) -> tuple[float, float]:
        """(low, high) = value -+ z * se; z defaults to the 95% quantile (t with ``df`` when df > 0)."""
        width = self.half_width if z is None else z * self.se
        return self.value - width, self.value + width

    def minus(self, other: Estimate, paired_se: float | None = None) -> Estimate:
        """self - other. Independent estimates add variances; ``paired_se`` is the standard error of the
        difference when both were measured on the same items (usually much smaller). The fewer degrees of
        freedom of the two carry over (an exact control has df 0)."""
        se = math.hypot(self.se, other.se) if paired_se is None else paired_se
        dfs = [d for d in (self.df, other.df) if d > 0]
        how = self.how if paired_se is None else "paired"
        seeds = max(self.seeds, other.seeds)
        return Estimate(self.value - other.value, se, min(self.n, other.n), how, min(dfs, default=0), seeds)

    def to_dict(self) -> dict[str, Any]:
        low, high = self.interval()
        out = {"value": self.value, "se": self.se, "low": low, "high": high, "n": self.n, "how": self.how}
        return {**out, "df": self.df, "seeds": self.seeds} if self.seeds else out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Estimate:
        how, df, seeds = str(d.get("how", "")), int(d.get("df", 0)), int(d.get("seeds", 0))
        return cls(float(d["value"]), float(d.get("se", 0.0)), int(d.get("n", 0)), how, df, seeds)

    def __format__(self, spec: str) -> str:
        spec = spec or ".3f"
        return f"{self.value:{spec}} +- {self.half_width:{spec}}"

    # --- constructors ------------------------------------------------------------------------------
    @classmethod
    def mean_of(cls, values: Sequence[float] | np.ndarray, what: str = "images") -> Estimate:
        """Mean of per-item values [N] and its standard error std / sqrt(N) (ddof 1)."""
        v = np.asarray(values, dtype=np.float64).ravel()
        if len(v) == 0:
            raise ValueError("mean_of: no values")
        se = float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else 0.0
        return cls(float(v.mean()), se, len(v), f"over {len(v)} {what}")

    @classmethod
    def proportion(cls, successes: int, n: int) -> Estimate:
        """A share successes / n with its binomial standard error sqrt(p (1 - p) / n), floored at the
        error of one item in a sample of n (so 0 / n and n / n are not exact)."""
        if n <= 0:
            raise ValueError("proportion: n must be positive")
        if not 0 <= successes <= n:
            raise ValueError(f"proportion: successes must be in [0, n], got {successes} of {n}")
        p = successes / n
        se = max(math.sqrt(p * (1 - p) / n), 1 / (2 * n))
        return cls(p, se, n, f"binomial, {n} items")

    @classmethod
    def from_draws(cls, point: float, draws: Sequence[float] | np.ndarray) -> Estimate:
        """``point`` with the standard deviation of bootstrap ``draws`` as its standard error."""
        d = np.asarray(draws, dtype=np.float64).ravel()
        se = float(d.std(ddof=1)) if len(d) > 1 else 0.0
        return cls(float(point), se, len(d), f"bootstrap, {len(d)} draws")


def paired_difference(
    a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, what: str = "images"
) -> Estimate:
    """mean(a - b) over the same N items, with the standard error of the per-item differences."""
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"paired_difference: {a.shape} and {b.shape} items; a paired difference needs the same items")
    estimate = Estimate.mean_of(a - b, what)
    return Estimate(estimate.value, estimate.se, estimate.n, f"paired, {estimate.n} {what}")


def paired_proportion_difference(a_correct: Sequence[bool], b_correct: Sequence[bool]) -> Estimate:
    """p_a - p_b for two classifications of the same N items (e.g. the same test images, or samples drawn
    from the same noise), with the standard error of a difference of paired proportions:
    sqrt((n10 + n01) - (n10 - n01)^2 / N) / N, n10 and n01 the discordant counts (McNemar)."""
    a, b = np.asarray(a_correct, dtype=bool).ravel(), np.asarray(b_correct, dtype=bool).ravel()
    if a.shape != b.shape or len(a) == 0:
        raise ValueError("paired_proportion_difference: needs the same non-empty set of items")
    n = len(a)
    n10, n01 = int((a & ~b).sum()), int((~a & b).sum())
    variance = max((n10 + n01) - (n10 - n01) ** 2 / n, 0.0)
    se = max(math.sqrt(variance) / n, 1 / (2 * n))
    return Estimate((n10 - n01) / n, se, n, f"paired proportions, {n} items")


def difference_of_draws(point_a: float, draws_a: Sequence[float], point_b: float, draws_b: Sequence[float]) -> Estimate:
    """a - b from two sets of bootstrap draws made with the same reference resamples (draw i of both used
    the same resampled reference set), so the shared reference noise cancels in the difference."""
    da, db = np.asarray(draws_a, dtype=np.float64), np.asarray(draws_b, dtype=np.float64)
    if da.shape != db.shape:
        raise ValueError("difference_of_draws: both need the same number of paired draws")
    se = float((da - db).std(ddof=1)) if len(da) > 1 else 0.0
    return Estimate(float(point_a - point_b), se, len(da), f"paired bootstrap, {len(da)} draws")


def over_training_seeds(per_seed: Sequence[Estimate]) -> Estimate:
    """One quantity measured on N models trained alike from different seeds -> its mean over the seeds, with
    an interval about the method rather than about one trained run.

    Each seed's estimate is g_s = mu + u_s + e_s: u_s the training run's own deviation (variance tau^2, which
    no evaluation of one run can see) and e_s its evaluation noise (variance se_s^2). The seeds' sample
    variance estimates tau^2 + mean(se_s^2), which gives the Student-t interval on N - 1 degrees of freedom
    (exact when the g_s are normal). Its half-width is floored at the normal interval of the evaluation noise
    alone, 1.96 sqrt(mean(se_s^2) / N), so three seeds that happen to agree closely are not taken as exact.
    One seed returns its estimate unchanged (an interval about that run). Checked against a direct
    simulation of the two levels in tests/test_seeds.py (coverage of the 95% interval).
    """
    if not per_seed:
        raise ValueError("over_training_seeds: no estimates")
    if len(per_seed) == 1:
        return per_seed[0]
    values = np.array([e.value for e in per_seed], dtype=np.float64)
    n = len(values)
    between = math.sqrt(float(values.var(ddof=1)) / n)
    within = math.sqrt(float(np.mean([e.se**2 for e in per_seed])) / n)
    how = f"over {n} training seeds"
    if quantile95(n - 1) * between >= Z95 * within:
        return Estimate(float(values.mean()), between, n, how + f" (t, {n - 1} df)", n - 1, n)
    return Estimate(float(values.mean()), within, n, how + " (their evaluation noise: seeds agree closely)", 0, n)
