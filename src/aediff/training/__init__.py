"""Training: one Trainer for every family, and ``train``, the entry point the CLI and Python share."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator

from aediff import runs
from aediff.config import config_from_dict, update_config
from aediff.errors import ConfigError
from aediff.models import build_model, model_class
from aediff.training.config import DataConfig, TrainConfig
from aediff.training.trainer import EMA, Trainer, TrainResult, lr_factor

__all__ = ["DataConfig", "EMA", "TrainConfig", "TrainResult", "Trainer", "lr_factor", "train", "load_data"]

# Model config fields that describe the data; filled from the dataset unless given explicitly.
DATA_SHAPED_FIELDS = ("image_channels", "image_size", "num_classes")


def load_data(config: DataConfig, split: str = "train") -> Any:
    """The ``split`` of the dataset a DataConfig names (an ``aediff.data.ImageDataset``)."""
    from aediff.data import load_dataset

    return load_dataset(config.spec, split, resolution=config.resolution, channels=config.channels,
                        seed=config.seed, test_fraction=config.test_fraction, skip_bad=config.skip_bad,
                        data_dir=config.data_dir)


def fill_data_shape(config: Any, dataset: Any) -> Any:
    """Set the model config's image size, channels and class count from the dataset."""
    height, width = dataset.resolution
    if height != width:
        raise ConfigError(f"images are {height}x{width}; models need square images: pass a --resolution "
                          f"to resize and center-crop")
    values = {"image_channels": dataset.channels, "image_size": height, "num_classes": dataset.num_classes}
    names = {f.name for f in dataclasses.fields(config)}
    return dataclasses.replace(config, **{k: v for k, v in values.items() if k in names and v is not None})


def train(
    family: str | None,
    out: str | Path,
    data: DataConfig | str | None = None,
    model: dict[str, Any] | None = None,
    training: TrainConfig | dict[str, Any] | None = None,
    resume: bool = False,
    progress: bool = True,
    callbacks: list[Any] | None = None,
    accelerator: Accelerator | None = None,
) -> TrainResult:
    """Train a model of ``family`` on ``data`` into the run folder ``out``; the API behind `aediff train`.

    model: overrides of the family's config fields (e.g. {"bottleneck_dim": 8}).
    training: a TrainConfig, or overrides of the defaults.
    resume: continue the run in ``out`` from its last checkpoint, with the family, model and data it was
        started with; ``training`` may then only extend its stop conditions (max_steps, epochs, max_minutes).
    """
    if resume:
        stored = runs.read_run_config(out)
        if family is not None and family != stored["family"]:
            raise ConfigError(f"{out} holds a {stored['family']!r} run, not {family!r}")
        family = stored["family"]
        model_config = config_from_dict(model_class(family).config_class, stored["model"])
        data_config = config_from_dict(DataConfig, stored["data"] or {})
        train_config = config_from_dict(TrainConfig, stored["training"])
        if training is not None:
            overrides = dataclasses.asdict(training) if isinstance(training, TrainConfig) else training
            allowed = {"max_steps", "epochs", "max_minutes"}
            changed = {k: v for k, v in overrides.items() if getattr(train_config, k) != v and k in allowed}
            train_config = update_config(train_config, changed)
        dataset = load_data(data_config)
    else:
        if family is None:
            raise ConfigError("name the model family to train, e.g. `aediff train vae`")
        data_config = DataConfig(spec=data) if isinstance(data, str) else (data or DataConfig())
        if isinstance(training, dict) or training is None:
            train_config = update_config(TrainConfig(), training or {})
        else:
            train_config = training
        dataset = load_data(data_config)
        config_class = model_class(family).config_class
        model_config = fill_data_shape(config_class(), dataset)
        model_config = update_config(model_config, model or {})
        prepare = getattr(model_class(family), "prepare_config", None)
        if prepare is not None:  # e.g. latent diffusion reads its autoencoder and measures the latent scale
            model_config = prepare(model_config, dataset)
    if getattr(model_config, "condition", "none") == "text":
        dataset = dataset.with_label_captions()  # a labelled set without captions: captions from templates
    torch.manual_seed(train_config.seed)  # the same initial weights on every process
    network = build_model(family, model_config)
    run_config = {"family": family, "model": dataclasses.asdict(model_config)}
    trainer = Trainer(network, dataset, out, train_config, run_config, data_config, resume=resume,
                      accelerator=accelerator, callbacks=callbacks, progress=progress)
    return trainer.train()
