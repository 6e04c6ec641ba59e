"""Class balance of generated samples, read by a judge classifier: which classes the samples are read as, whether
that histogram could have come from the data's class frequencies (Pearson's chi-square goodness-of-fit test,
scipy's ``chisquare``), and how many samples the judge reads confidently. Intervals are Wilson score intervals
(scipy's ``binomtest(...).proportion_ci(method="wilson")``), 95%."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

CONFIDENT = 0.9  # a sample is read confidently when the judge gives its top class at least this probability
LEVEL = 0.95  # of every interval here
REJECT_AT = 0.01  # the chi-square test rejects "drawn with the data's class frequencies" below this p-value
FEW_EXPECTED = 5  # the chi-square approximation is poor where a class expects fewer samples (Cochran's rule)


def wilson(successes: int, trials: int, level: float = LEVEL) -> tuple[float, float]:
    """The Wilson score interval of a proportion (scipy), (low, high) in [0, 1]; (0, 1) without trials."""
    if trials == 0:
        return 0.0, 1.0
    from scipy.stats import binomtest

    interval = binomtest(successes, trials).proportion_ci(confidence_level=level, method="wilson")
    return float(interval.low), float(interval.high)


@dataclass
class ClassBalance:
    """How a judge reads N samples, against the data's class frequencies.

    counts [K]: samples whose top class is k; expected [K]: N times the data's share of class k; share_low /
    share_high [K]: Wilson intervals of each class's share of the samples; chi_square, dof, p_value: Pearson's
    test of counts against expected over the classes the data has (a sample read as a class the data lacks makes
    p = 0); confident_share with its Wilson interval: the share of samples whose top-class probability is at
    least ``threshold``; warnings: sentences about numbers not to trust.
    """

    counts: list[int]
    expected: list[float]
    share_low: list[float]
    share_high: list[float]
    chi_square: float
    dof: int
    p_value: float
    confident_share: float
    confident_low: float
    confident_high: float
    threshold: float
    num_samples: int
    warnings: list[str]

    @property
    def rejects(self) -> bool:
        """Whether the test rejects, at REJECT_AT, that the samples' classes follow the data's frequencies."""
        return self.p_value < REJECT_AT

    @property
    def rarest_and_commonest(self) -> tuple[int, int]:
        return min(self.counts), max(self.counts)


def class_balance(
    probabilities: np.ndarray, reference_labels: Sequence[int] | np.ndarray, threshold: float = CONFIDENT
) -> ClassBalance:
    """The ClassBalance of samples the judge gave ``probabilities`` [N, K] (rows summing to 1), against the class
    frequencies of ``reference_labels`` [M] (integers in [0, K))."""
    from scipy.stats import chisquare

    probabilities = np.asarray(probabilities, dtype=np.float64)
    n, k = probabilities.shape
    if n == 0:
        raise ValueError("class balance needs at least one sample")
    counts = np.bincount(probabilities.argmax(1), minlength=k)
    frequencies = np.bincount(np.asarray(reference_labels, dtype=np.int64), minlength=k) / len(reference_labels)
    expected = n * frequencies
    present = expected > 0
    warnings = []
    if (counts[~present] > 0).any():
        statistic, p_value = float("inf"), 0.0
    else:
        # scipy wants equal totals: every sample is in a present class here, so the rescaling is exact
        statistic, p_value = chisquare(counts[present], expected[present] * n / expected[present].sum())
    if (expected[present] < FEW_EXPECTED).any():
        warnings.append(f"a class expects fewer than {FEW_EXPECTED} samples: the chi-square p-value is approximate")
    intervals = [wilson(int(c), n) for c in counts]
    confident = int((probabilities.max(1) >= threshold).sum())
    low, high = wilson(confident, n)
    return ClassBalance(
        counts=counts.tolist(), expected=expected.tolist(),
        share_low=[a for a, _ in intervals], share_high=[b for _, b in intervals],
        chi_square=float(statistic), dof=int(present.sum()) - 1, p_value=float(p_value),
        confident_share=confident / n, confident_low=low, confident_high=high, threshold=threshold,
        num_samples=n, warnings=warnings,
    )  # fmt: skip
