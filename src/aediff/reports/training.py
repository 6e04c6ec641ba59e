"""The report's account of training: the budget each model trained under, as given, and what each model got
from it (optimizer steps, images seen, seconds), so reports from machines of different speed can be set side
by side: under a step budget every machine trains the same steps, under a time budget a faster one trains more.
"""

from __future__ import annotations

from typing import Any

from aediff.evaluation.results import ModelEvaluation
from aediff.reports.html import Table
from aediff.reports.record import ReportMeta


def budget_line(meta: ReportMeta) -> str:
    """The header's budget as given: "400 steps per model", "30 s of training per model (at most 50 steps)",
    and the families whose step counts override it ("; diffusion: 800 steps")."""
    line = meta.budget.describe() + (f" (at most {meta.max_steps} steps)" if meta.max_steps else "")
    if meta.family_steps:
        line += "; " + ", ".join(f"{family}: {steps} steps" for family, steps in meta.family_steps.items())
    return line


def training_table(models: dict[str, ModelEvaluation], plan: list[Any], meta: ReportMeta) -> Table:
    """One row per evaluated model of ``plan`` (the judge and peers included): its optimizer steps, images seen
    (steps x batch size), seconds in training steps and of the whole training; "n/a" where the model's folder
    records no training (a diffusers peer)."""
    rows = []
    for planned in plan:
        if planned.name not in models:
            continue
        trained = models[planned.name].training_speed
        numbers = [trained.steps, trained.images_seen, trained.train_seconds, trained.wall_seconds] if trained else []
        rows.append([planned.name, planned.family, *(numbers or ["n/a"] * 4)])
    return Table(
        "training",
        ["model", "family", "steps", "images seen", "train seconds", "wall seconds"],
        rows,
        f"What each model's training came to under the budget ({budget_line(meta)}): optimizer steps, images seen, "
        "seconds in training steps, and seconds of the whole training (checkpoints and snapshots included). The "
        "judge trains its fixed epochs whatever the budget; a reused run (--runs) shows the training it had.",
    )
