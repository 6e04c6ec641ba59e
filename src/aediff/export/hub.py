"""Share a run on the Hugging Face Hub: ``push`` uploads the files a run is rebuilt from and a model card
generated from it; ``aediff.load("hf://owner/name")`` brings it back (``hub_resolve.resolve``).

The run folder already uses the Hub's names (``config.json``, ``model.safetensors``), so a Hub repository
made by ``push`` is a run folder:

    config.json                  family, model / training / data configs
    model.safetensors            the trained weights
    ema.safetensors              their moving average (what sampling uses), when the run has one
    training_state/state.json    steps, images seen, training time (what ``Run.summary`` reads); the
                                 optimizer's moments are not uploaded
    log.jsonl                    the training log, when there is one
    metrics.json                 ``aediff eval RUN --out RUN/metrics.json``, when there is one
    README.md                    the model card (``model_card``)
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any

from aediff.errors import ConfigError, RunError
from aediff.export.hub_resolve import CARD_FILE, INSTALL_HINT, METRICS_FILE, RUN_FILES, check_repo_id, resolve
from aediff.runs import CONFIG_FILE, Run, load, read_run_config

__all__ = ["model_card", "push", "resolve", "upload_plan"]


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _budget(run: Run) -> str:
    """The budget the run was given (steps, epochs and / or minutes: the first reached ends it)."""
    training = run.training
    parts = []
    if training.max_steps is not None:
        parts.append(f"{training.max_steps} steps")
    if training.epochs is not None:
        parts.append(f"{training.epochs:g} epochs")
    if training.max_minutes is not None:
        parts.append(f"{training.max_minutes:g} minutes")
    return ", or ".join(parts) if parts else "not bounded"


def _metric_lines(metrics: dict[str, Any]) -> list[str]:
    """``| section | metric | value |`` rows: the finite numbers of each section of an ``aediff eval`` result."""
    rows = []
    for section, values in metrics.items():
        if not isinstance(values, dict) or section in ("data", "settings", "skipped"):
            continue
        for key, value in values.items():
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if number and key != "seed" and math.isfinite(value):
                rows.append(f"| {section} | {key} | {value:.4g} |")
    return ["| section | metric | value |", "|---|---|---|", *rows] if rows else []


def model_card(run: Run, repo_id: str | None = None, metrics: dict[str, Any] | None = None) -> str:
    """A README.md for the Hub generated from ``run``: YAML front matter (library, tags, dataset), then the
    family, data, training budget and what was spent, the command when recorded, ``metrics`` (an
    ``aediff eval`` result) when given, and how to load it. ``repo_id``: owner/name in the loading example."""
    repo = repo_id or f"owner/{run.name}"
    data = run.data.spec if run.data is not None else None
    front = ["---", "library_name: aediff", "tags:", "- aediff", f"- {run.family}"]
    if data is not None and ":" not in data:  # a named dataset, not a local folder:PATH / npz:PATH
        front += ["datasets:", f"- {data}"]
    front += ["---", ""]
    lines = [
        f"# {repo}",
        "",
        f"A `{run.family}` model trained with aediff (`pip install aediff`).",
        "",
        f"- family: `{run.family}`",
        f"- data: `{data}`" if data is not None else "- data: arrays passed in from Python (not recorded)",
        f"- training budget: {_budget(run)} (batch size {run.training.batch_size})",
    ]
    if run.summary is not None:
        summary = run.summary
        lines.append(
            f"- trained: {summary.steps} steps, {summary.images_seen} images, "
            f"{_duration(summary.train_seconds)} of training ({_duration(summary.wall_seconds)} in all)"
        )
    lines.append(f"- weights: `{run.weights}`, run folder format {run.format_version}")
    command = read_run_config(run.path).get("command")
    if command:
        lines += ["", "Trained with:", "", "```bash", str(command), "```"]
    table = _metric_lines(metrics or {})
    if table:
        lines += ["", "## Measured", "", "By `aediff eval` (`metrics.json` in this repository):", "", *table]
    lines += [
        "",
        "## Use",
        "",
        "```python",
        "import aediff",
        "",
        f'run = aediff.load("hf://{repo}")  # or offline, from the local Hugging Face cache',
        "```",
        "",
        "```bash",
        f"aediff sample hf://{repo} --samples 16 --out samples.png",
        "```",
        "",
    ]
    return "\n".join(front + lines)


def upload_plan(run_dir: str | Path) -> list[str]:
    """The files of ``run_dir`` that a Hub repository of the run holds (paths relative to it), card aside."""
    run_dir = Path(run_dir)
    read_run_config(run_dir)  # a clear RunError for a folder that is not a run
    names = [name for name in (*RUN_FILES, METRICS_FILE) if (run_dir / name).is_file()]
    if not any(name.endswith(".safetensors") for name in names):
        raise RunError(f"{run_dir} has no weights ({CONFIG_FILE} only): is the run finished?")
    return names


def push(run_dir: str | Path, repo_id: str, *, private: bool = False, dry_run: bool = False) -> list[tuple[str, int]]:
    """Upload the run in ``run_dir`` to the Hub repository ``repo_id`` (owner/name; created when missing)
    with a generated model card. Returns what is (with ``dry_run``: would be) uploaded, as
    (path in the repository, size in bytes). ``dry_run`` contacts nothing: the card is written to a
    temporary folder only."""
    check_repo_id(repo_id)
    run_dir = Path(run_dir)
    names = upload_plan(run_dir)
    run = load(run_dir, device="cpu")
    metrics = None
    if METRICS_FILE in names:
        try:
            metrics = json.loads((run_dir / METRICS_FILE).read_text())
        except ValueError as exc:
            raise RunError(f"{run_dir / METRICS_FILE} is not valid JSON ({exc})") from exc
    card = model_card(run, repo_id, metrics if isinstance(metrics, dict) else None)
    with tempfile.TemporaryDirectory(prefix="aediff-card-") as folder:
        card_path = Path(folder) / CARD_FILE
        card_path.write_text(card)
        files = {name: run_dir / name for name in names} | {CARD_FILE: card_path}
        plan = [(name, path.stat().st_size) for name, path in files.items()]
        if not dry_run:
            _upload(repo_id, files, private)
    return plan


def _upload(repo_id: str, files: dict[str, Path], private: bool) -> None:
    """Create ``repo_id`` when missing and commit exactly ``files`` (path in the repository -> local file)."""
    try:
        from huggingface_hub import CommitOperationAdd, HfApi
        from huggingface_hub.utils import HfHubHTTPError
    except ImportError as exc:
        raise ConfigError(f"aediff push needs huggingface_hub; install it with `{INSTALL_HINT}`") from exc
    api = HfApi()
    operations = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(path)) for name, path in files.items()]
    try:
        api.create_repo(repo_id, exist_ok=True, private=private)
        api.create_commit(repo_id, operations=operations, commit_message="Upload an aediff run")
    except HfHubHTTPError as exc:
        raise RunError(
            f"pushing to {repo_id} failed ({str(exc).splitlines()[0]}); log in with `hf auth login`"
        ) from exc
