"""What `aediff compare` writes to metrics.json: when and where it ran (``ReportMeta``), every model's
``ModelEvaluation``, each section's claim and verdict, and the comparison's own numbers; written and read
back through ``aediff.evaluation.results`` (one format, one version)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aediff.config import Budget
from aediff.evaluation.results import (
    FLATTEN,
    FORMAT_VERSION,
    ComparisonSections,
    ModelEvaluation,
    decode,
    encode,
    read_result,
    upgrade,
)
from aediff.reports.verdicts import Verdict, VerdictName


@dataclass
class ReportMeta:
    """When, where and how the comparison ran."""

    data: str  # the dataset spec
    budget_minutes: float | None  # wall-clock training budget of each model; None under a step budget
    max_steps: int | None  # the cap on a time budget's steps
    date: str  # "%Y-%m-%d %H:%M UTC"
    aediff: str  # versions
    torch: str
    python: str
    machine: str
    cpu: str | None
    threads: int
    device: str
    wall_seconds: float
    config: dict[str, Any]  # the CompareConfig, as JSON
    runs: dict[str, str]  # model name -> run folder
    train_wall_seconds: dict[str, float]
    train_seconds: float
    eval_seconds: float
    command: str = ""
    report: str = ""  # the report.html written
    budget_steps: int | None = None  # optimizer steps of each model under a step budget (files before it: None)
    family_steps: dict[str, int] = field(default_factory=dict)  # family -> its steps, overriding the budget
    seeds: list[int] = field(default_factory=list)  # the training seeds, in order (empty: files before them)
    # budget fractions whose snapshots were judged again (budget stability); None: files before the field
    snapshots: list[float] | None = None

    @property
    def budget(self) -> Budget:
        """The budget each model trained under, as given."""
        return Budget(self.budget_minutes, self.budget_steps)


@dataclass
class ClaimVerdict:
    """A section's claim and the verdict on it (written as one object: claim, then the verdict's fields).

    With several training seeds the verdict is the rule's on the measurements pooled over them;
    seed_verdicts: training seed -> the verdict of that seed's models alone; stability: the share of seeds
    whose own verdict is the pooled one (None with one seed); budget_verdicts: where the verdict holds along
    the training budget.
    """

    claim: str
    verdict: Verdict = field(metadata=FLATTEN)
    seed_verdicts: dict[str, VerdictName] = field(default_factory=dict)
    stability: float | None = None
    # budget fraction ("25%", ..., "100%") -> the first seed's verdict from its models' snapshots there
    budget_verdicts: dict[str, VerdictName] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out = {"claim": self.claim, **self.verdict.to_dict()}
        if self.seed_verdicts:
            out["seed_verdicts"] = dict(self.seed_verdicts)
            out["stability"] = self.stability
        if self.budget_verdicts:
            out["budget_verdicts"] = dict(self.budget_verdicts)
        return out


@dataclass
class SeedRun:
    """What one training seed's models measured, beyond the first seed (whose numbers are the report's own)."""

    seed: int
    runs: dict[str, str]  # model name -> run folder
    models: dict[str, ModelEvaluation]
    sections: ComparisonSections


@dataclass
class ComparisonReport:
    """metrics.json of `aediff compare`."""

    meta: ReportMeta
    models: dict[str, ModelEvaluation]
    verdicts: dict[str, ClaimVerdict]
    sections: ComparisonSections
    other_seeds: list[SeedRun] = field(default_factory=list)  # every training seed after the first

    def to_json(self) -> dict[str, Any]:
        verdicts = {k: v.to_json() for k, v in self.verdicts.items()}
        body = {"meta": encode(self.meta), "models": encode(self.models), "verdicts": verdicts}
        out = {"format_version": FORMAT_VERSION, **body, "sections": encode(self.sections)}
        return {**out, "other_seeds": encode(self.other_seeds)} if self.other_seeds else out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ComparisonReport:
        """Inverse of ``to_json``; a file without format_version (aediff up to 704866e) is upgraded."""
        return decode(cls, upgrade(data))

    @classmethod
    def read(cls, path: str | Path) -> ComparisonReport:
        """A comparison's metrics.json; AediffError naming the file when it is newer or not one."""
        return read_result(cls, path, "comparison's metrics.json")
