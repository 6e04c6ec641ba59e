"""Loading: a run folder (or what a higher layer registered, e.g. a diffusers folder or an ``hf://`` id) ->
a ``Run``, the model rebuilt from the folder alone in eval mode, with its typed configs and training summary."""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from aediff.config import config_from_dict
from aediff.data.config import DataConfig
from aediff.device import default_device
from aediff.errors import AediffError, RunError
from aediff.models import Model, model_class
from aediff.models.sizes import check_model_size
from aediff.runs.defaults import DataDefaults
from aediff.runs.format import CONFIG_FILE, EMA_FILE, LOG_FILE, MODEL_FILE, RESTORE, one_line
from aediff.runs.journal import Journal, read_consistently
from aediff.runs.training_config import TrainConfig
from aediff.runs.validation import (
    TrainingSummary,
    agreed_step,
    check_shapes,
    checkpoint_steps,
    config_in,
    has_checksum,
    summary_in,
    weights_in,
)


@dataclass
class Run:
    """A trained model and everything its run folder says about it: what ``aediff.load`` returns."""

    model: Model  # in eval mode, on the requested device
    path: Path
    family: str
    config: Any  # the model's typed config (``model.config``)
    training: TrainConfig
    data: DataConfig | None  # None when the model was trained on data passed in as arrays
    summary: TrainingSummary | None  # None for a run folder without training state or log
    format_version: int  # of the config.json it was read from (older formats are upgraded on reading)
    weights: str  # "ema" or "model": which weights the model holds
    # what the data's shape chose when the run started (config.json's "data_defaults"); None for a run from
    # before the record, or not started by aediff's trainer
    data_defaults: DataDefaults | None = None

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def unverified_weights(self) -> Path | None:
        """The weights file the model was loaded from when it records no checksum (written before aediff
        recorded them, so it loaded unverified); None when it was verified or the run is not a folder of aediff's."""
        file = self.path / (EMA_FILE if self.weights == "ema" else MODEL_FILE)
        return file if file.is_file() and not has_checksum(file) else None


def _typed(cls: type, stored: Any, where: Path, what: str) -> Any:
    """The typed ``cls`` config from config.json's entry; RunError naming the file when it is not valid."""
    try:
        return config_from_dict(cls, stored if stored is not None else {})
    except (AediffError, TypeError, ValueError) as exc:  # values of a damaged or hand-edited file
        raise RunError(f"{where}: the {what} config is not valid ({one_line(exc)}); fix it, or {RESTORE}") from exc


def _build(stored: dict[str, Any], where: Path) -> tuple[type[Model], Any, Model]:
    """(class, typed config, model with fresh weights) from config.json's family and model entries."""
    cls = model_class(stored["family"])
    version = stored.get("format_version", 1)
    try:
        upgraded = cls.upgrade_config(stored["model"], version)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:  # an old format's fields, damaged
        raise RunError(
            f"{where}: the model config of format {version} cannot be read ({one_line(exc)}); {RESTORE}"
        ) from exc
    model_config = _typed(cls.config_class, upgraded, where, "model")
    try:
        check_model_size(cls, model_config)  # before anything is allocated: config.json may ask for terabytes
        return cls, model_config, cls(model_config)
    except AediffError as exc:
        raise RunError(f"{where}: the model config is not valid ({one_line(exc)}); fix it, or {RESTORE}") from exc


@dataclass(frozen=True)
class RunSource:
    """A kind of model that is not an aediff run folder, which a higher layer teaches ``load`` to read
    (``register_source``): e.g. a diffusers folder or an ``hf://`` address (``aediff.export.sources``)."""

    name: str  # what it is, e.g. "diffusers folder"; registering a name again replaces the entry
    claims: Callable[[str], bool]  # whether ``load``'s path argument (as a string) is one of this kind
    load: Callable[[str, str, str | torch.device | None], Run]  # (path, weights, device) -> Run


SOURCES: list[RunSource] = []  # tried in order before the path is read as a run folder


def register_source(source: RunSource) -> None:
    """Teach ``load`` another kind of model (the lower layer never imports the higher one that reads it)."""
    SOURCES[:] = [s for s in SOURCES if s.name != source.name] + [source]


def load(path: str | Path, weights: str = "ema", device: str | torch.device | None = None) -> Run:
    """Rebuild a run's model from its folder alone, in eval mode, and return it with its configs.

    path: a run folder, or what a registered ``RunSource`` claims: through ``aediff.load``, ``hf://owner/name[@revision]``
    (a run on the Hugging Face Hub, fetched into, or offline found in, the local Hugging Face cache) and a
    diffusers UNet2DModel + scheduler folder (``aediff.export.sources``).
    weights: "ema" (the moving average, used for sampling; falls back to "model" when absent) or "model".

    Never writes to the folder: a read-only folder loads, and so does one a training is writing (a commit
    past its commit point is read through its journal). Refused with a RunError naming the file: a damaged
    or foreign config.json, weights that are cut short, not finite or do not fit the config, and checkpoint
    files that disagree on their step.
    """
    if weights not in ("ema", "model"):
        raise RunError(f"weights must be 'ema' or 'model', got {weights!r}")
    source = next((s for s in SOURCES if s.claims(str(path))), None)
    if source is not None:
        return source.load(str(path), weights, device)
    run_dir = Path(path)
    if not run_dir.is_dir():
        raise RunError(f"run folder {run_dir} does not exist; train one with `aediff train FAMILY --out {run_dir}`")
    run = read_consistently(run_dir, lambda journal: _read_run(journal, weights))
    run.model = run.model.to(device or default_device()).eval()
    return run


def _read_run(journal: Journal, weights: str) -> Run:
    """One read of the run folder behind ``journal`` (the model on the CPU)."""
    run_dir = journal.run_dir
    stored = config_in(journal)
    where = run_dir / CONFIG_FILE
    cls, model_config, model = _build(stored, where)
    name = EMA_FILE if weights == "ema" else MODEL_FILE
    if weights == "ema" and not journal.exists(EMA_FILE):
        name, weights = MODEL_FILE, "model"
    file, tensors, step = weights_in(journal, name)
    check_shapes(model, tensors, file)
    model.load_state_dict(tensors)
    agreed_step(run_dir, checkpoint_steps(journal, {name: step}))  # and the other weights file is whole
    training = _typed(TrainConfig, stored.get("training"), where, "training")
    data = _typed(DataConfig, stored["data"], where, "data") if stored.get("data") is not None else None
    defaults = _data_defaults(stored.get("data_defaults"), where)
    return Run(
        model=model,
        path=run_dir,
        family=cls.family,
        config=model_config,
        training=training,
        data=data,
        summary=summary_in(journal, training.batch_size),
        format_version=stored.get("format_version", 1),
        weights=weights,
        data_defaults=defaults,
    )


def _data_defaults(stored: Any, where: Path) -> DataDefaults | None:
    """config.json's "data_defaults" record, typed; None for a config from before it (no record)."""
    if stored is None:
        return None
    try:
        return DataDefaults.from_record(stored)
    except ValueError as exc:
        raise RunError(f"{where}: {one_line(exc)}; fix it, or {RESTORE}") from exc


def median_images_per_second(run: Run) -> float:
    """Median training throughput over the windows of the run's log.jsonl (robust to a noisy shared machine);
    for a run too short to log two windows, its mean over the whole training; NaN with neither."""
    path = run.path / LOG_FILE
    log = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    batch = run.training.batch_size
    rates = [
        (b["step"] - a["step"]) * batch / (b["train_seconds"] - a["train_seconds"])
        for a, b in zip(log, log[1:], strict=False)
        if b["train_seconds"] > a["train_seconds"]
    ]
    if rates:
        return statistics.median(rates)
    return run.summary.images_per_second if run.summary is not None else float("nan")
