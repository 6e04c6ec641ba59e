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
from aediff.reports.verdicts import Verdict


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

    @property
    def budget(self) -> Budget:
        """The budget each model trained under, as given."""
        return Budget(self.budget_minutes, self.budget_steps)


@dataclass
class ClaimVerdict:
    """A section's claim and the verdict on it (written as one object: claim, then the verdict's fields)."""

    claim: str
    verdict: Verdict = field(metadata=FLATTEN)


@dataclass
class ComparisonReport:
    """metrics.json of `aediff compare`."""

    meta: ReportMeta
    models: dict[str, ModelEvaluation]
    verdicts: dict[str, ClaimVerdict]
    sections: ComparisonSections

    def to_json(self) -> dict[str, Any]:
        verdicts = {k: {"claim": v.claim, **v.verdict.to_dict()} for k, v in self.verdicts.items()}
        body = {"meta": encode(self.meta), "models": encode(self.models), "verdicts": verdicts}
        return {"format_version": FORMAT_VERSION, **body, "sections": encode(self.sections)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ComparisonReport:
        """Inverse of ``to_json``; a file without format_version (aediff up to 704866e) is upgraded."""
        return decode(cls, upgrade(data))

    @classmethod
    def read(cls, path: str | Path) -> ComparisonReport:
        """A comparison's metrics.json; AediffError naming the file when it is newer or not one."""
        return read_result(cls, path, "comparison's metrics.json")
