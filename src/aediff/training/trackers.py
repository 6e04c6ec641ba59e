"""Where training's scalars and preview images go: Accelerate's experiment trackers, started on the main
process. TensorBoard (RUN/tb) is on by default (``training.tensorboard``) and the only one tested offline;
``training.trackers`` adds Weights & Biases (project "aediff", the run named after its folder) or MLflow
(experiment "aediff", its files in RUN/mlruns unless MLFLOW_TRACKING_URI says otherwise). Only TensorBoard
receives the preview image grids."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import torch

from aediff import runs
from aediff.errors import ConfigError

PACKAGES = {"wandb": "wandb", "mlflow": "mlflow"}  # tracker -> the package it needs


def check_installed(extra: tuple[str, ...]) -> None:
    """ConfigError naming the install for a tracker whose package is missing (before training starts)."""
    for name in extra:
        if importlib.util.find_spec(PACKAGES[name]) is None:
            raise ConfigError(f"--log-with {name} needs the {PACKAGES[name]} package: pip install {PACKAGES[name]}")


def start_trackers(tensorboard: bool, extra: tuple[str, ...], run_dir: Path, step: int) -> list[Any]:
    """The started trackers for a run resuming at ``step`` (a resumed TensorBoard log drops what came after it)."""
    from accelerate.tracking import MLflowTracker, TensorBoardTracker, WandBTracker

    check_installed(extra)
    trackers: list[Any] = []
    if tensorboard:
        trackers.append(TensorBoardTracker(runs.TENSORBOARD_DIR, run_dir, purge_step=step))
    if "wandb" in extra:
        trackers.append(WandBTracker("aediff", name=run_dir.name, dir=str(run_dir)))
    if "mlflow" in extra:
        trackers.append(MLflowTracker("aediff", logging_dir=str(run_dir / "mlruns"), run_name=run_dir.name))
    for tracker in trackers:
        tracker.start()
    return trackers


def log_scalars(trackers: list[Any], values: dict[str, float], step: int) -> None:
    for tracker in trackers:
        tracker.log(values, step=step)


def log_images(trackers: list[Any], images: dict[str, torch.Tensor], step: int) -> None:
    """``images``: name -> [N, C, H, W] in [0, 1], to the trackers that show image grids (TensorBoard)."""
    for tracker in trackers:
        if tracker.name == "tensorboard":
            tracker.log_images(images, step=step)


def finish(trackers: list[Any]) -> None:
    for tracker in trackers:
        tracker.finish()
