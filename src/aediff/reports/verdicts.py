"""The rules that turn measured numbers into a verdict: small pure functions, each tested on numbers that
flip it (tests/test_compare.py)."""

from __future__ import annotations

import math

import numpy as np


def compare_values(claim_value: float, other: float, margin: float, higher_is_better: bool = True) -> str:
    """'holds' when claim_value beats other by more than margin, 'does not hold' when it loses by more than
    margin, else 'inconclusive'."""
    gap = (claim_value - other) if higher_is_better else (other - claim_value)
    if gap > margin:
        return "holds"
    if gap < -margin:
        return "does not hold"
    return "inconclusive"


def accuracy_margin(p: float, n: int) -> float:
    """Two standard errors of an accuracy p measured on n items (at least one item's worth)."""
    return max(2 * math.sqrt(max(p * (1 - p), 1e-12) / max(n, 1)), 1 / max(n, 1))


def all_of(verdicts: list[str]) -> str:
    """A claim made of parts holds when every part holds, fails when any fails, else is inconclusive."""
    if any(v == "does not hold" for v in verdicts):
        return "does not hold"
    return "holds" if verdicts and all(v == "holds" for v in verdicts) else "inconclusive"


def spearman(x: list[float], y: list[float]) -> float:
    rx, ry = np.argsort(np.argsort(x)), np.argsort(np.argsort(y))
    if len(x) < 2 or np.std(rx) == 0 or np.std(ry) == 0:
        return 0.0
    return float(np.corrcoef(rx, ry)[0, 1])
