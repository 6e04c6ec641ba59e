"""``train``: start or resume a run, the entry point the CLI and Python share."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator

from aediff import runs
from aediff.config import config_from_dict, field_paths, update_config
from aediff.data import DataConfig
from aediff.errors import ConfigError
from aediff.models import Capability, build_model, model_class
from aediff.training.config import TrainConfig
from aediff.training.trainer import Trainer, TrainResult


def fill_data_shape(config: Any, dataset: Any) -> Any:
    """Set the model config's image size, channels and class count from the dataset (where it has them)."""
    height, width = dataset.resolution
    if height != width:
        raise ConfigError(
            f"images are {height}x{width}; models need square images: pass a --resolution to resize and center-crop"
        )
    values = {"image_channels": dataset.channels, "image_size": height, "num_classes": dataset.num_classes}
    leaves = {path.rsplit(".", 1)[-1] for path in field_paths(type(config))}
    return update_config(config, {k: v for k, v in values.items() if k in leaves and v is not None})


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
    training: a TrainConfig, or overrides of the defaults; e.g. {"snapshots": (0.25, 0.5)} also keeps the model at
        25% and 50% of the budget in ``out/snapshots/25`` and ``/50`` (see ``aediff.runs.list_snapshots``).
    resume: continue the run in ``out`` from its last checkpoint, with the family, model and data it was
        started with; ``training`` may then only extend its stop conditions (max_steps, epochs, max_minutes).
    """
    components: dict[str, Any] = {}
    if resume:
        stored = runs.read_run_config(out)
        if family is not None and family != stored["family"]:
            raise ConfigError(f"{out} holds a {stored['family']!r} run, not {family!r}")
        family = stored["family"]
        cls = model_class(family)
        model_config = config_from_dict(
            cls.config_class, cls.upgrade_config(stored["model"], stored.get("format_version", 1))
        )
        data_config = config_from_dict(DataConfig, stored["data"] or {})
        train_config = config_from_dict(TrainConfig, stored["training"])
        if training is not None:
            overrides = dataclasses.asdict(training) if isinstance(training, TrainConfig) else training
            allowed = {"max_steps", "epochs", "max_minutes"}
            stored_values = dataclasses.asdict(train_config)
            changed = {k: v for k, v in overrides.items() if k in allowed and stored_values[k] != v}
            train_config = update_config(train_config, changed)
        dataset = data_config.load("train")
    else:
        if family is None:
            raise ConfigError("name the model family to train, e.g. `aediff train vae`")
        data_config = DataConfig(spec=data) if isinstance(data, str) else (data or DataConfig())
        if isinstance(training, dict) or training is None:
            train_config = update_config(TrainConfig(), training or {})
        else:
            train_config = training
        dataset = data_config.load("train")
        cls = model_class(family)
        model_config = update_config(fill_data_shape(cls.config_class(), dataset), model or {})
        # e.g. latent diffusion reads its autoencoder (once) and measures the latent scale
        model_config, components = cls.prepare_config(model_config, dataset, lambda path: runs.load(path, device="cpu"))
    torch.manual_seed(train_config.seed)  # the same initial weights on every process
    network = build_model(family, model_config, **components)
    if network.can(Capability.TEXT_CONDITION):
        dataset = dataset.with_label_captions()  # a labelled set without captions: captions from templates
    run_config = {"family": family, "model": dataclasses.asdict(model_config)}
    trainer = Trainer(
        network,
        dataset,
        out,
        train_config,
        run_config,
        data_config,
        resume=resume,
        accelerator=accelerator,
        callbacks=callbacks,
        progress=progress,
    )
    return trainer.train()
