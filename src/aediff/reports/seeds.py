"""Verdicts over training seeds: each section's rule is run on every seed's measurements and once more on
those measurements pooled over the seeds; the pooled verdict is the section's, and the share of seeds that
reach it on their own is its stability.

A section builder records the rule it asked and the inputs it gave (``Ruling``). Pooling walks the inputs
of all seeds in step: every ``Estimate`` becomes its mean over the seeds with an interval that includes
the spread between them (``over_training_seeds``); a paired gap stays paired, since both sides of it were
trained from the same seed. Plain numbers are averaged; names, sizes and keys must match.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from aediff.metrics.stats import Estimate, over_training_seeds
from aediff.reports.verdicts import Verdict, VerdictName

OPPOSITE: dict[str, VerdictName] = {"holds": "does not hold", "does not hold": "holds"}


@dataclass(frozen=True)
class Ruling:
    """One verdict rule of ``aediff.reports.verdicts`` and the inputs one seed's measurements gave it."""

    rule: Callable[..., Verdict]
    inputs: tuple[Any, ...]

    def verdict(self) -> Verdict:
        return self.rule(*self.inputs)


def pool_inputs(per_seed: Sequence[Any], where: str = "inputs") -> Any:
    """The rule inputs of N seeds, pooled into one: Estimates over seeds, numbers averaged, containers and
    dataclasses field by field. A dict keeps the keys every seed has (a level one seed could not test is
    left out of the pooled call). ValueError naming ``where`` when the seeds' inputs differ in shape."""
    first = per_seed[0]
    if isinstance(first, Estimate):
        return over_training_seeds(per_seed)
    if dataclasses.is_dataclass(first) and not isinstance(first, type):
        pooled = {f.name: pool_inputs([vars(v)[f.name] for v in per_seed], f"{where}.{f.name}")
                  for f in dataclasses.fields(first)}  # fmt: skip
        return type(first)(**pooled)
    if isinstance(first, dict):
        keys = [k for k in first if all(k in v for v in per_seed)]
        return {k: pool_inputs([v[k] for v in per_seed], f"{where}[{k!r}]") for k in keys}
    if isinstance(first, (list, tuple)):
        if len({len(v) for v in per_seed}) != 1:
            raise ValueError(f"{where}: the seeds measured different numbers of items")
        items = [pool_inputs(list(column), f"{where}[{i}]") for i, column in enumerate(zip(*per_seed, strict=True))]
        return type(first)(items)
    if isinstance(first, (float, np.floating)) and not isinstance(first, bool):
        return float(np.mean([float(v) for v in per_seed]))
    if any(v != first for v in per_seed):
        raise ValueError(f"{where}: the seeds disagree on {[v for v in per_seed]!r}, which must be the same")
    return first


@dataclass(frozen=True)
class SeedVerdict:
    """A section's verdict over training seeds.

    verdict: the rule on the pooled inputs, made inconclusive when two seeds reach opposite conclusive
    verdicts (or one reaches the opposite of the pooled one); per_seed: training seed -> that seed's own
    verdict; stability: the share of seeds whose own verdict is ``verdict`` (None with one seed: there is
    nothing to compare).
    """

    verdict: Verdict
    per_seed: dict[int, VerdictName]
    stability: float | None


def over_seeds(rulings: dict[int, Ruling]) -> SeedVerdict:
    """One section's verdict from its rulings by training seed (see ``SeedVerdict``)."""
    per_seed = {seed: ruling.verdict().verdict for seed, ruling in rulings.items()}
    rulings_list = list(rulings.values())
    first = rulings_list[0]
    pooled = Ruling(first.rule, pool_inputs([r.inputs for r in rulings_list])).verdict()
    if len(rulings) == 1:
        return SeedVerdict(pooled, per_seed, None)
    seen = set(per_seed.values())
    if {"holds", "does not hold"} <= seen or OPPOSITE.get(pooled.verdict) in seen:
        listing = ", ".join(f"seed {s} {v}" for s, v in per_seed.items())
        reason = f"the training seeds disagree ({listing}), so no verdict about the method; pooled: {pooled.reason}"
        pooled = dataclasses.replace(pooled, verdict="inconclusive", reason=reason)
    agree = sum(v == pooled.verdict for v in per_seed.values())
    return SeedVerdict(pooled, per_seed, agree / len(per_seed))
