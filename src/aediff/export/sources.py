"""What ``aediff.runs.load`` reads besides aediff run folders, registered with it here (runs sits below export
and never imports it): ``hf://owner/name[@revision]``, a run on the Hugging Face Hub, and a diffusers
UNet2DModel + scheduler folder. Importing any module of ``aediff.export`` registers both (``export/__init__``
imports this), and so does the Python API (``aediff.load``, ``aediff.train``), through which the CLI, the page
and the report load runs."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from aediff.device import default_device
from aediff.errors import RunError
from aediff.export.hub_resolve import is_hub_spec, resolve
from aediff.runs import Run, RunSource, TrainConfig, load, register_source


def _load_hub_run(spec: str, weights: str, device: str | torch.device | None) -> Run:
    """The run ``spec`` names, fetched into (or offline found in) the local Hugging Face cache; needs
    huggingface_hub only when used."""
    return load(resolve(spec), weights, device)


def _is_diffusers_folder(path: str) -> bool:
    return (Path(path) / "unet" / "config.json").is_file()


def _load_diffusers_folder(path: str, weights: str, device: str | torch.device | None) -> Run:
    """A diffusers UNet2DModel + scheduler folder as a Run (``aediff.export.diffusers``; needs diffusers). It
    has one set of weights: ``weights`` is ignored."""
    run_dir = Path(path)
    if importlib.util.find_spec("diffusers") is None:
        raise RunError(f"{run_dir} is a diffusers folder (unet/config.json); install diffusers to load it")
    from aediff.export.diffusers import load_diffusers_folder

    model, config = load_diffusers_folder(run_dir)
    return Run(
        model=model.to(device or default_device()).eval(),
        path=run_dir,
        family=model.family,
        config=config,
        training=TrainConfig(),
        data=None,
        summary=None,
        format_version=1,
        weights="model",
    )


register_source(RunSource("Hugging Face Hub", is_hub_spec, _load_hub_run))
register_source(RunSource("diffusers folder", _is_diffusers_folder, _load_diffusers_folder))
