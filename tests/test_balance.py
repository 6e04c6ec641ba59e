"""Class balance of samples in the judge: the chi-square test against the data's class frequencies, flipped each
way, checked against its formula; the confident share and its Wilson interval against the textbook formula."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.stats import chi2

from aediff.evaluation.results import decode, encode
from aediff.metrics.balance import REJECT_AT, ClassBalance, class_balance, wilson


def one_hot(counts: list[int], confidence: float = 0.95) -> np.ndarray:
    """Probabilities [sum(counts), K]: counts[k] samples read as class k with ``confidence``."""
    k = len(counts)
    rows = []
    for label, count in enumerate(counts):
        row = np.full(k, (1 - confidence) / (k - 1))
        row[label] = confidence
        rows += [row] * count
    return np.array(rows)


UNIFORM_DATA = np.repeat(np.arange(10), 100)  # the data: 100 images of each class


def test_samples_in_the_data_frequencies_are_not_rejected_and_skewed_ones_are():
    even = class_balance(one_hot([100] * 10), UNIFORM_DATA)
    assert even.chi_square == 0 and even.p_value == pytest.approx(1) and not even.rejects
    near = class_balance(one_hot([95, 105, 98, 102, 100, 100, 97, 103, 99, 101]), UNIFORM_DATA)
    assert not near.rejects
    # the histogram the issue reports of the old default: rarest 51, commonest 149 (1,000 samples)
    skewed = class_balance(one_hot([51, 149, 100, 100, 100, 100, 100, 100, 100, 100]), UNIFORM_DATA)
    assert skewed.rejects and skewed.rarest_and_commonest == (51, 149)


def test_the_statistic_is_pearsons_and_the_p_value_its_chi_square_tail():
    counts = [80, 120, 90, 110, 100, 100, 95, 105, 85, 115]
    data = np.repeat(np.arange(10), [50, 150, 100, 100, 100, 100, 100, 100, 100, 100])
    balance = class_balance(one_hot(counts), data)
    expected = 1000 * np.bincount(data) / len(data)
    statistic = float(((np.array(counts) - expected) ** 2 / expected).sum())
    assert balance.expected == pytest.approx(expected.tolist())
    assert balance.chi_square == pytest.approx(statistic) and balance.dof == 9
    assert balance.p_value == pytest.approx(chi2.sf(statistic, 9))
    # the threshold the docs quote: 21.67 rejects at 1% with 9 degrees of freedom
    assert chi2.isf(REJECT_AT, 9) == pytest.approx(21.67, abs=0.01)


def test_a_sample_read_as_a_class_the_data_lacks_rejects_outright():
    data = np.repeat(np.arange(9), 100)  # no class 9 in the data
    balance = class_balance(one_hot([100] * 9 + [1]), data)
    assert balance.p_value == 0 and balance.rejects and math.isinf(balance.chi_square) and balance.dof == 8
    assert not class_balance(one_hot([100] * 9 + [0]), data).rejects


def test_the_confident_share_and_its_wilson_interval():
    probabilities = np.concatenate([one_hot([70] + [0] * 9, 0.95), one_hot([30] + [0] * 9, 0.6)])
    balance = class_balance(probabilities, UNIFORM_DATA)
    assert balance.confident_share == 0.7 and balance.num_samples == 100
    # the textbook Wilson score interval, 95%
    z, n, p = 1.959963984540054, 100, 0.7
    centre, half = (
        (p + z * z / (2 * n)) / (1 + z * z / n),
        z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)),
    )
    assert (balance.confident_low, balance.confident_high) == pytest.approx((centre - half, centre + half), abs=1e-9)
    assert class_balance(probabilities, UNIFORM_DATA, threshold=0.5).confident_share == 1.0
    assert wilson(0, 0) == (0.0, 1.0)


def test_few_expected_samples_warn_and_the_record_round_trips():
    balance = class_balance(one_hot([3] * 10), UNIFORM_DATA)
    assert balance.warnings and "approximate" in balance.warnings[0]
    assert not class_balance(one_hot([100] * 10), UNIFORM_DATA).warnings
    assert decode(ClassBalance, json.loads(json.dumps(encode(balance)))) == balance


def test_no_samples_is_an_error():
    with pytest.raises(ValueError, match="at least one sample"):
        class_balance(np.zeros((0, 10)), UNIFORM_DATA)
