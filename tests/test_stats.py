"""Tests for aediff.metrics.stats: every constructor against a hand-computed or textbook value."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import scipy.stats

from aediff.metrics import stats
from aediff.metrics.stats import Z95, Estimate, difference_of_draws, paired_difference, paired_proportion_difference


def test_z95_is_the_two_sided_normal_quantile():
    assert Z95 == pytest.approx(scipy.stats.norm.ppf(0.975), abs=1e-6)
    assert set(stats.__all__) == {
        "Z95",
        "Estimate",
        "difference_of_draws",
        "over_training_seeds",
        "paired_difference",
        "paired_proportion_difference",
    }


# ------------------------------------------------------------------------------------------- Estimate


@pytest.mark.parametrize(
    "value,se", [(math.nan, 0.1), (1.0, math.nan), (math.inf, 0.1), (1.0, math.inf), (1.0, -0.1), (-math.inf, 0.0)]
)
def test_estimate_rejects_non_finite_or_negative(value, se):
    with pytest.raises(ValueError, match="finite"):
        Estimate(value, se)


def test_estimate_interval_is_symmetric():
    e = Estimate(2.5, 0.4, 10, "over 10 images")
    low, high = e.interval()
    assert (low + high) / 2 == pytest.approx(2.5)
    assert high - low == pytest.approx(2 * Z95 * 0.4)
    assert e.interval(1.0) == pytest.approx((2.1, 2.9))
    assert Estimate(3.0).interval() == (3.0, 3.0)  # exact: se 0


def test_minus_adds_variances_unless_paired():
    a, b = Estimate(5.0, 0.3, 100, "over 100 images"), Estimate(4.0, 0.4, 80, "over 80 images")
    independent = a.minus(b)
    assert independent.value == pytest.approx(1.0)
    assert independent.se == pytest.approx(0.5)  # sqrt(0.3^2 + 0.4^2)
    assert independent.n == 80 and independent.how == "over 100 images"
    paired = a.minus(b, paired_se=0.05)
    assert paired.value == pytest.approx(1.0) and paired.se == 0.05 and paired.n == 80 and paired.how == "paired"
    # a paired se of 0 (identical items, identical answers) is kept, not replaced by the independent one
    assert a.minus(b, paired_se=0.0).se == 0.0
    with pytest.raises(ValueError):
        a.minus(b, paired_se=math.nan)


def test_to_dict_round_trip_and_format():
    e = Estimate(1.0, 0.1, 7, "bootstrap, 7 draws")
    d = e.to_dict()
    assert d["low"] == pytest.approx(1.0 - Z95 * 0.1) and d["high"] == pytest.approx(1.0 + Z95 * 0.1)
    assert json.loads(json.dumps(d, allow_nan=False)) == d
    assert Estimate.from_dict(json.loads(json.dumps(d))) == e
    assert Estimate.from_dict({"value": 2}) == Estimate(2.0, 0.0, 0, "")
    assert f"{e}" == "1.000 +- 0.196"
    assert f"{e:.1f}" == "1.0 +- 0.2"


# ---------------------------------------------------------------------------------------- constructors


def test_mean_of_standard_error_matches_the_formula():
    values = [1.0, 2.0, 3.0, 4.0]
    e = Estimate.mean_of(values)
    # std (ddof 1) = sqrt(5 / 3); se = std / sqrt(4)
    assert e.value == 2.5
    assert e.se == pytest.approx(math.sqrt(5 / 3) / 2)
    assert (e.n, e.how) == (4, "over 4 images")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 3))  # any shape is flattened
    e = Estimate.mean_of(x, "pixels")
    assert e.se == pytest.approx(scipy.stats.sem(x.ravel())) and e.n == 90 and e.how == "over 90 pixels"
    assert Estimate.mean_of([7.0]).se == 0.0
    with pytest.raises(ValueError, match="no values"):
        Estimate.mean_of([])
    with pytest.raises(ValueError):
        Estimate.mean_of([1.0, math.nan])


def test_mean_of_se_covers_the_true_mean_at_the_nominal_rate():
    rng = np.random.default_rng(1)
    covered = 0
    for _ in range(400):
        low, high = Estimate.mean_of(rng.exponential(size=200)).interval()
        covered += low <= 1.0 <= high
    assert 0.91 < covered / 400 < 0.98


def test_proportion_binomial_se_and_floor():
    e = Estimate.proportion(30, 100)
    assert e.value == 0.3 and e.se == pytest.approx(math.sqrt(0.3 * 0.7 / 100))
    assert (e.n, e.how) == (100, "binomial, 100 items")
    # 0 / n and n / n are not exact: floored at 1 / (2 n)
    assert Estimate.proportion(0, 10).se == pytest.approx(0.05)
    assert Estimate.proportion(10, 10).se == pytest.approx(0.05)
    # the floor does not touch an ordinary proportion: 1 / 1000 has sqrt(p (1 - p) / n) ~ 0.001 > 0.0005
    assert Estimate.proportion(1, 1000).se == pytest.approx(math.sqrt(0.001 * 0.999 / 1000))
    for successes, n in ((1, 0), (0, -3), (11, 10), (-1, 10)):
        with pytest.raises(ValueError):
            Estimate.proportion(successes, n)


def test_from_draws_keeps_the_point_and_uses_the_draws_spread():
    draws = [1.0, 2.0, 4.0, 5.0]
    e = Estimate.from_draws(2.9, draws)
    assert e.value == 2.9  # not the mean of the draws (3.0)
    assert e.se == pytest.approx(np.std(draws, ddof=1)) and (e.n, e.how) == (4, "bootstrap, 4 draws")
    assert Estimate.from_draws(1.0, [3.0]).se == 0.0
    with pytest.raises(ValueError), np.errstate(invalid="ignore"):
        Estimate.from_draws(1.0, [1.0, math.inf])


def test_paired_difference_cancels_per_item_variation():
    rng = np.random.default_rng(2)
    difficulty = rng.normal(scale=5.0, size=300)  # shared per-image difficulty, much larger than the effect
    a = difficulty + 0.5 + rng.normal(scale=0.2, size=300)
    b = difficulty + rng.normal(scale=0.2, size=300)
    e = paired_difference(a, b)
    assert e.value == pytest.approx(np.mean(a - b))
    assert e.se == pytest.approx(np.std(a - b, ddof=1) / math.sqrt(300))
    assert (e.n, e.how) == (300, "paired, 300 images")
    independent = Estimate.mean_of(a).minus(Estimate.mean_of(b))
    assert e.se < independent.se / 10
    assert e.interval()[0] > 0 > independent.interval()[0]  # only the paired test resolves the effect
    with pytest.raises(ValueError, match="same items"):
        paired_difference([1.0, 2.0], [1.0, 2.0, 3.0])


def test_paired_proportion_difference_hand_computed_mcnemar_example():
    # 20 items: both right 10, only a right 5 (n10), only b right 2 (n01), both wrong 3
    a = [True] * 10 + [True] * 5 + [False] * 2 + [False] * 3
    b = [True] * 10 + [False] * 5 + [True] * 2 + [False] * 3
    e = paired_proportion_difference(a, b)
    assert e.value == pytest.approx(15 / 20 - 12 / 20)
    # sqrt((n10 + n01) - (n10 - n01)^2 / N) / N = sqrt(7 - 9 / 20) / 20
    assert e.se == pytest.approx(math.sqrt(6.55) / 20)
    assert e.se == pytest.approx(0.1279649, abs=1e-6)
    # the textbook form: sqrt(p10 + p01 - (p10 - p01)^2) / sqrt(N)
    assert e.se == pytest.approx(math.sqrt(0.35 - 0.15**2) / math.sqrt(20))
    assert (e.n, e.how) == (20, "paired proportions, 20 items")
    # positively correlated answers: smaller than treating the two proportions as independent
    assert e.se < Estimate.proportion(15, 20).minus(Estimate.proportion(12, 20)).se
    # swapping the roles flips the sign only
    assert paired_proportion_difference(b, a).value == pytest.approx(-e.value)
    assert paired_proportion_difference(b, a).se == pytest.approx(e.se)


def test_paired_proportion_difference_floor_and_errors():
    same = [True, False, True, True]
    e = paired_proportion_difference(same, same)
    assert e.value == 0.0 and e.se == pytest.approx(1 / 8)  # no discordant item: floored at 1 / (2 N)
    with pytest.raises(ValueError, match="same non-empty"):
        paired_proportion_difference([True], [True, False])
    with pytest.raises(ValueError, match="same non-empty"):
        paired_proportion_difference([], [])


def test_paired_proportion_difference_se_matches_the_simulated_spread():
    rng = np.random.default_rng(3)
    n = 400
    latent = rng.random(n)  # per-item difficulty shared by both classifiers
    estimates = []
    for _ in range(300):
        a = rng.random(n) < 0.2 + 0.7 * latent
        b = rng.random(n) < 0.1 + 0.7 * latent
        estimates.append(paired_proportion_difference(a, b))
    spread = np.std([e.value for e in estimates], ddof=1)
    assert np.mean([e.se for e in estimates]) == pytest.approx(spread, rel=0.15)


def test_difference_of_draws_cancels_shared_noise():
    rng = np.random.default_rng(4)
    shared = rng.normal(scale=1.0, size=50)  # e.g. the reference resample's effect on both FIDs
    draws_a = 10.0 + shared + rng.normal(scale=0.1, size=50)
    draws_b = 9.0 + shared + rng.normal(scale=0.1, size=50)
    e = difference_of_draws(10.2, draws_a, 9.1, draws_b)
    assert e.value == pytest.approx(1.1)  # the points, not the draws' means
    assert e.se == pytest.approx(np.std(draws_a - draws_b, ddof=1))
    assert e.se < 0.2 < math.hypot(np.std(draws_a, ddof=1), np.std(draws_b, ddof=1))
    assert (e.n, e.how) == (50, "paired bootstrap, 50 draws")
    assert difference_of_draws(1.0, [2.0], 0.5, [1.0]).se == 0.0
    with pytest.raises(ValueError, match="same number"):
        difference_of_draws(1.0, draws_a, 0.0, draws_b[:10])
