"""``train``: start or resume a run, the entry point the CLI and Python share."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator

from aediff import runs
from aediff.config import config_from_dict, config_to_dict, field_paths, update_config
from aediff.data import DataConfig, ImageDataset, ImageStream
from aediff.errors import ConfigError, RunError
from aediff.models import Capability, Model, build_model, model_class
from aediff.models.defaults import DataShape
from aediff.runs.training_config import TrainConfig
from aediff.training.trainer import Trainer, TrainResult, checkpoint_exists


def fill_data_shape(config: Any, dataset: Any) -> Any:
    """Set the model config's image shape, channels and class count from the dataset (where it has them):
    image_size is the height, image_width the width (None for square images, so their configs read as before)."""
    height, width = dataset.resolution
    values = {"image_channels": dataset.channels, "image_size": height, "num_classes": dataset.num_classes}
    values = {k: v for k, v in values.items() if v is not None}  # e.g. no labels: the config's num_classes stays
    values["image_width"] = width if width != height else None  # None = square, as configs before it read
    leaves = {path.rsplit(".", 1)[-1] for path in field_paths(type(config))}
    return update_config(config, {k: v for k, v in values.items() if k in leaves})


def data_defaults_for(
    family: str, dataset: Any, model: dict[str, Any] | None, training: TrainConfig | dict[str, Any] | None
) -> runs.DataDefaults:
    """What ``dataset``'s shape changes in a new ``family`` run's configs, less what the user's ``model`` and
    ``training`` overrides choose (a whole TrainConfig chooses every training setting)."""
    chosen = dataclasses.asdict(training) if isinstance(training, TrainConfig) else training
    return runs.resolve_data_defaults(family, DataShape.of(dataset), model, chosen)


def new_train_config(defaults: runs.DataDefaults, training: dict[str, Any] | None) -> TrainConfig:
    """TrainConfig's defaults, then the data's (``defaults``), then the user's ``training`` overrides."""
    return update_config(update_config(TrainConfig(), defaults.training), training or {})


def new_model_config(cls: type[Model], dataset: Any, defaults: runs.DataDefaults, model: dict[str, Any] | None) -> Any:
    """A new run's model config: the family's defaults with the data's shape, the size rule's network
    (``defaults``), the family's own data defaults (``Model.data_defaults``: e.g. class conditioning on labelled
    data), then the user's ``model`` overrides, which win."""
    config = fill_data_shape(cls.config_class(), dataset)
    config = update_config(config, {**defaults.model, **cls.data_defaults(dataset)})
    return update_config(config, model or {})


# What a resume may not change, and why (everything else in TrainConfig may: the LR, the budget, clipping...).
FIXED_ON_RESUME = {
    "batch_size": "it sets the data order of every step",
    "seed": "it sets the data order and the random draws of every step",
}


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
    allow_changed_data: bool = False,
) -> TrainResult:
    """Train a model of ``family`` on ``data`` into the run folder ``out``; the API behind `aediff train`.

    model: overrides of the family's config fields (e.g. {"bottleneck_dim": 8}).
    training: a TrainConfig, or overrides of the defaults; e.g. {"snapshots": (0.25, 0.5)} also keeps the model at
        25% and 50% of the budget in ``out/snapshots/25`` and ``/50`` (see ``aediff.runs.list_snapshots``).
    A new run starts from defaults that follow the data: the size rule its images fall under sets some model and
    training fields (``aediff.runs.defaults``; none for greyscale up to 32 px), then ``model`` and ``training``
    override them (a whole TrainConfig overrides every training field); config.json records the rule and what it
    set as "data_defaults" (``Run.data_defaults``).
    resume: continue the run in ``out`` from its last checkpoint (from step 0 when it has none yet), with the
        family, model and data it was started with; ``training`` may change anything but the batch size and
        the seed (the LR, the budget, clipping, checkpoint and log intervals...): config.json records it.
        The data must be what the run recorded (``data_record``: image count, digest, samples per shard), unless
        ``allow_changed_data``: then the run goes on with the data as it is now, and records it.

    The run folder is checked to be writable before anything is trained, and its writer lock
    (``runs.writer_lock``) is held until the end: a second training into the same folder is refused.
    """
    out = Path(out)
    _check_writable(out, resume)
    # Locked before the run is read (that finishes or drops a pending checkpoint write) and before the data is
    # loaded (a second writer is refused at once); a folder yet to be made is locked by the Trainer.
    if out.is_dir() and _is_main_process(accelerator):
        with runs.writer_lock(out):
            return _train(
                family, out, data, model, training, resume, progress, callbacks, accelerator, allow_changed_data
            )
    return _train(family, out, data, model, training, resume, progress, callbacks, accelerator, allow_changed_data)


def _is_main_process(accelerator: Accelerator | None) -> bool:
    """Whether this is the process that writes the run folder (the trainer's Accelerator does not exist yet;
    launchers such as torchrun and accelerate set RANK)."""
    if accelerator is not None:
        return accelerator.is_main_process
    return int(os.environ.get("RANK", "0")) == 0


def _check_writable(out: Path, resume: bool) -> None:
    """Fail now, not at the first checkpoint, when ``out`` cannot be written (or created: then its nearest
    existing parent must be a writable folder). Creates nothing: a config error later leaves no folder."""
    existing = out
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    fix = "make it writable to resume" if resume else "choose another --out"
    if not existing.is_dir():
        raise RunError(f"cannot create the run folder {out}: {existing} is not a folder; {fix}")
    probe = existing / f".aediff-write-test-{os.getpid()}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        if existing == out:
            raise RunError(f"cannot write to the run folder {out} ({reason}); {fix}") from None
        raise RunError(f"cannot create the run folder {out}: {existing} is not writable ({reason}); {fix}") from None


def _train(
    family: str | None,
    out: Path,
    data: DataConfig | str | None,
    model: dict[str, Any] | None,
    training: TrainConfig | dict[str, Any] | None,
    resume: bool,
    progress: bool,
    callbacks: list[Any] | None,
    accelerator: Accelerator | None,
    allow_changed_data: bool = False,
) -> TrainResult:
    """``train`` in a folder known to be writable (and locked, on the main process)."""
    components: dict[str, Any] = {}
    changed_config = None  # a resume's new training settings: recorded once its checkpoint has loaded
    defaults_record = None  # a new run's data defaults; a resumed run keeps the record it started with
    if resume:
        main = _is_main_process(accelerator)
        family, model_config, data_config, train_config, changed_config = _resumed_configs(out, family, training, main)
        _refuse_model_changes(out, model_config, model or {})
        dataset = data_config.load("train")
        stored, data_record = runs.read_run_config(out), dataset.fingerprint()
        changed = _data_changed(out, stored.get("data_record"), data_record, data_config, allow_changed_data, main)
        if changed and main:  # only the main process writes config.json, as for changed training settings
            changed_config = {**(changed_config or stored), "data_record": data_record}
        cls = model_class(family)
        if not checkpoint_exists(out):  # it starts from step 0: build it as the new run was built
            model_config, components = cls.prepare_config(
                model_config, dataset, lambda path: runs.load(path, device="cpu")
            )
    else:
        if family is None:
            raise ConfigError("name the model family to train, e.g. `aediff train vae`")
        data_config = DataConfig(spec=data) if isinstance(data, str) else (data or DataConfig())
        dataset = data_config.load("train")
        data_record = dataset.fingerprint()
        if isinstance(dataset, ImageStream) and data_config.stream is None:
            # recorded resolved: a resume or a later aediff streams this run's data whatever the default becomes
            data_config = dataclasses.replace(data_config, stream=True)
        cls = model_class(family)
        defaults = data_defaults_for(family, dataset, model, training)
        train_config = training if isinstance(training, TrainConfig) else new_train_config(defaults, training)
        model_config = new_model_config(cls, dataset, defaults, model)
        defaults_record = defaults.record()
        # e.g. latent diffusion reads its autoencoder (once) and measures the latent scale
        model_config, components = cls.prepare_config(model_config, dataset, lambda path: runs.load(path, device="cpu"))
    torch.manual_seed(train_config.seed)  # the same initial weights on every process
    network = build_model(family, model_config, **components)
    held_out = _held_out(data_config, train_config, dataset) if train_config.eval_every else None
    if network.can(Capability.TEXT_CONDITION):
        dataset = dataset.with_label_captions()  # a labelled set without captions: captions from templates
        held_out = held_out.with_label_captions() if held_out is not None else None
    run_config = {"family": family, "model": dataclasses.asdict(model_config), "data_record": data_record}
    if defaults_record is not None:
        run_config["data_defaults"] = defaults_record
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
        held_out=held_out,
    )
    if changed_config is not None:  # the checkpoint loaded: nothing in the folder changes before that
        runs.write_files_atomically(out, {runs.CONFIG_FILE: json.dumps(changed_config, indent=2).encode()})
    return trainer.train()


def _data_changed(
    out: Path, recorded: dict[str, Any] | None, now: dict[str, Any], data: DataConfig, allow: bool, main: bool
) -> bool:
    """Whether a resume reads other data than the run recorded (a run from before records none: False). Changed
    data is a ConfigError naming what changed, unless ``allow``: then True, and the caller records the new data."""
    if recorded is None or recorded == now:
        return False
    if not allow:
        raise ConfigError(
            f"--resume on changed data: {data.spec} {_data_change(recorded, now)}; restore the data the run was "
            "trained on, or pass --allow-changed-data to go on with it as it is now"
        )
    if main:
        print(
            f"Resuming {out} on changed data ({_data_change(recorded, now)}), as --allow-changed-data asks", flush=True
        )
    return True


def _data_change(recorded: dict[str, Any], now: dict[str, Any]) -> str:
    """What differs between two data records, in words: a shard read short, the image count, or the content."""
    before, after = recorded.get("parts") or {}, now.get("parts") or {}
    shorter = [f"{Path(p).name} now has {after.get(p, 0)} samples where the run read {n}"
               for p, n in before.items() if after.get(p, 0) < n]  # fmt: skip
    if shorter:
        return "; ".join(shorter[:3])
    if recorded.get("images") != now.get("images"):
        return f"now has {now.get('images')} training images where the run was trained on {recorded.get('images')}"
    digests = f"digest {now.get('digest')}, not {recorded.get('digest')}"
    return f"has the same {now.get('images')} images, but other ones ({digests})"


def _held_out(data: DataConfig, training: TrainConfig, train_set: Any) -> ImageDataset:
    """The images evaluations score (``eval_every``): the data's test split. In Hugging Face streaming mode, the
    first images of the dataset's "test" (else "validation") split, as many as an evaluation uses, in memory."""
    if isinstance(train_set, ImageStream) and train_set.held_out_split is None:
        raise ConfigError(
            f"--eval-every scores held-out images, and {train_set.name} has no 'test' or 'validation' split "
            f"(its splits: {', '.join(train_set.splits)}); drop --eval-every, or use a dataset with a test split"
        )
    images = max(training.eval_images, training.eval_samples if training.eval_judge else 0)
    return data.load_by_position("test", images)


def _refuse_model_changes(out: Path, model_config: Any, overrides: dict[str, Any]) -> None:
    """A resume may repeat the model options it was started with, not change them (the weights fix them)."""
    before, after = dataclasses.asdict(model_config), dataclasses.asdict(update_config(model_config, overrides))
    changed = [key for key in after if after[key] != before[key]]
    if changed:
        raise ConfigError(
            f"the model of {out} cannot change on --resume (its checkpoint's weights fix it): "
            f"{', '.join(changed)} differ; start a new run to change them"
        )


def _resumed_configs(
    out: Path, family: str | None, training: TrainConfig | dict[str, Any] | None, main: bool
) -> tuple[str, Any, DataConfig, TrainConfig, dict[str, Any] | None]:
    """The family, model, data and training configs of the run in ``out``, with ``training``'s changes applied,
    and the config.json that records them (for the ``main`` process to write once the checkpoint has loaded,
    so that a later resume keeps them; None when nothing changed)."""
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
    runs.check_checkpoint_consistent(out)  # before anything is changed (the trainer checks again as it loads)
    if training is None:
        return family, model_config, data_config, train_config, None
    overrides = dataclasses.asdict(training) if isinstance(training, TrainConfig) else dict(training)
    updated = update_config(train_config, overrides)  # checks the names and values
    before, after = config_to_dict(train_config), config_to_dict(updated)
    changed = [key for key in after if after[key] != before[key]]
    fixed = [key for key in changed if key in FIXED_ON_RESUME]
    if fixed:
        reasons = "; ".join(f"{key} ({before[key]} -> {after[key]}): {FIXED_ON_RESUME[key]}" for key in fixed)
        raise ConfigError(f"a resumed run cannot change {reasons}; start a new run to change it")
    record = None
    if changed and main:
        shown = ", ".join(f"{key} {before[key]} -> {after[key]}" for key in changed)
        print(f"Resuming {out} with {shown}", flush=True)
        record = {**stored, "training": after}  # its own format version: the model config stays as written
    return family, model_config, data_config, updated, record
