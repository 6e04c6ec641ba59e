"""The `aediff` command line: parse into typed values, call the Python API, print. No logic of its own.

Conventions, the same for every command:
- `-h` / `--help` everywhere; `aediff --version`; shell completion (`aediff --install-completion`).
- A usage mistake (unknown option, bad choice, missing argument) prints the usage and one line and exits 2;
  an aediff error (a run that is not there, an option the model cannot use) prints one line and exits 1;
  never a Python traceback unless AEDIFF_DEBUG=1.
- One name for one idea: `--samples` counts generated samples, `--images` the images of a grid, durations
  are written 90s / 10m / 1.5h, `--out` names what is written and is never replaced without `--overwrite`,
  `--class` and `--negative-class` take a class index.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, get_args

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from aediff.config import MAX_SAMPLING_STEPS
from aediff.errors import AediffError, ConfigError
from aediff.modes import (
    ConditionKind,
    DiffusersSampler,
    DiffusersScheduler,
    DistillMethodName,
    Family,
    LatentKind,
    Likelihood,
    LogTarget,
    MixedPrecision,
    NetworkKind,
    SamplerName,
    Split,
    TextEncoderKind,
)

if TYPE_CHECKING:
    from aediff.evaluation.results import ModelEvaluation
    from aediff.runs import Run

app = typer.Typer(
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain errors: one line
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Train, sample, reconstruct, denoise and evaluate autoencoders and diffusion models.",
)
console = Console()
errors = Console(stderr=True)

DataOpt = Annotated[
    str | None,
    typer.Option(
        "--data",
        help="dataset: a name from `aediff datasets`, folder:PATH or npz:PATH (default: the run's training data)",
    ),
]
SplitOpt = Annotated[Split, typer.Option(help="which split")]
SAMPLER_HELP = (
    f"aediff's: {', '.join(get_args(SamplerName))}; or any of diffusers' schedulers as diffusers:NAME, NAME one of "
    f"{', '.join(get_args(DiffusersScheduler))}"
)
SeedOpt = Annotated[int, typer.Option(min=0, max=2**63 - 1, help="random seed")]
OverwriteOpt = Annotated[bool, typer.Option(help="replace --out if it exists")]


def _version(value: bool) -> None:
    if value:
        from aediff import __version__

        console.print(f"aediff {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="print the version and exit")
    ] = False,
) -> None:
    """Train, sample, reconstruct, denoise and evaluate autoencoders and diffusion models."""


def _print_json(title: str, payload: dict[str, Any]) -> None:
    console.print(f"[bold]{escape(title)}[/bold]")
    console.print_json(json.dumps(payload))


def _writable_out(out: Path, overwrite: bool, formats: tuple[str, ...], option: str = "--out") -> Path:
    """``out`` when it may be written, checked before any work: named with one of ``formats`` (".png", ...;
    any case), not an existing folder, not an existing file unless --overwrite, never one of a run folder's own
    files, and in a folder this process can write (made when missing)."""
    from aediff.outputs import output_suffix

    output_suffix(out, formats, option)
    if out.is_dir():
        raise ConfigError(f"--out {out} is a folder; name the file to write")
    from aediff.runs import run_owning

    run = run_owning(out)
    if run is not None:
        raise ConfigError(
            f"--out {out} is one of the files of the run in {run}, which are never overwritten; choose another --out"
        )
    if out.exists() and not overwrite:
        raise ConfigError(f"--out {out} exists; pass --overwrite to replace it, or choose another --out")
    parent = out.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"--out {out}: cannot create the folder {parent} ({exc.strerror}); choose another --out"
        ) from None
    if not os.access(parent, os.W_OK) or (out.exists() and not os.access(out, os.W_OK)):
        raise ConfigError(f"--out {out}: {parent} is not writable by this user; choose another --out")
    return out


# --- information -------------------------------------------------------------------------------------
@app.command()
def datasets() -> None:
    """List the built-in datasets and whether each is available offline on this machine."""
    from aediff.data import list_datasets

    table = Table("name", "offline", "labels", "description", "how to get it")
    for info in list_datasets():
        table.add_row(
            info.name,
            "yes" if info.offline_available else "no",
            info.targets,
            info.description,
            escape(info.how_to_get),
        )
    console.print(table)
    console.print(
        "Also: folder:PATH (an image folder; labels from sub-folders, captions from metadata.jsonl), "
        "npz:PATH (arrays `images`, optional `labels`, `captions`), wds:DIR/{000..099}.tar (WebDataset shards) "
        "and hf:NAME (a Hugging Face dataset: a Hub id or a folder of data files, read in streaming mode; or a folder "
        "written by save_to_disk); --stream reads images per batch (docs/scale.md)."
    )


@app.command("env")
def environment() -> None:
    """Versions, device, threads, and which offline assets (text encoder, Inception weights, datasets) are here."""
    from aediff.environment import environment_report, format_environment

    table = Table("what", "value")
    for name, value in format_environment(environment_report()):
        table.add_row(escape(name), escape(value))
    console.print(table)


# --- train ---------------------------------------------------------------------------------------------
# Model options of `aediff train` -> the config field each sets (a bare name resolves in every family's config).
MODEL_FLAGS = {
    "bottleneck": "bottleneck_dim",
    "latent": "latent",
    "latent_channels": "latent_channels",
    "beta": "beta",
    "likelihood": "likelihood",
    "noise": "corruption",
    "condition": "conditioning.kind",
    "network": "network.architecture",
    "text_encoder": "text_encoder",
    "text_encoder_path": "text_encoder_path",
    "autoencoder": "autoencoder.path",
}


def _model_overrides(family: str | None, flags: dict[str, Any], assignments: list[str]) -> dict[str, Any]:
    """The model options given on the command line as config overrides, checked against the family."""
    from aediff.config import parse_assignment, resolve_field
    from aediff.models import model_class

    model: dict[str, Any] = dict(parse_assignment(s) for s in assignments)
    # a path (--autoencoder) is stored as text in the config
    given = {
        flag: str(value) if isinstance(value, Path) else value for flag, value in flags.items() if value is not None
    }
    model.update({MODEL_FLAGS[flag]: value for flag, value in given.items()})
    if family is not None:
        config_class = model_class(family).config_class
        for flag in given:
            try:
                resolve_field(config_class, MODEL_FLAGS[flag])
            except ConfigError:
                raise ConfigError(f"--{flag.replace('_', '-')} does not apply to {family!r} models") from None
        for key in model:
            resolve_field(config_class, key)  # a --set that names no field of this family: say so now
    return model


def _widths(text: str) -> list[int]:
    try:
        widths = [int(c) for c in text.split(",")]
    except ValueError:
        raise ConfigError(f"--widths takes comma-separated whole numbers, e.g. 16,32,64; got {text!r}") from None
    if not widths or min(widths) < 1:
        raise ConfigError(f"--widths needs positive widths, got {text!r}")
    return widths


def _log_targets(values: list[str] | None) -> list[str] | None:
    """``--log-with`` values, each one of LogTarget (Typer takes no list of choices); another is a usage error."""
    allowed = get_args(LogTarget)
    for value in values or []:
        if value not in allowed:
            raise typer.BadParameter(f"{value!r} is not one of {', '.join(allowed)}")
    return values


def _snapshot_fractions(text: str | None) -> tuple[float, ...] | None:
    """``--snapshots 0.25,0.5`` -> (0.25, 0.5), checked like TrainConfig.snapshots; a bad value is a usage
    error (exit 2), caught before anything loads."""
    from aediff.runs.training_config import check_snapshots

    if text is None:
        return None
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise typer.BadParameter(
            f"takes comma-separated fractions of the training budget, e.g. 0.25,0.5; got {text!r}"
        ) from None
    try:
        return check_snapshots(values, "its values")
    except ConfigError as exc:
        raise typer.BadParameter(str(exc)) from None


def _sampler_name(text: str | None) -> str | None:
    """``--sampler``: one of aediff's samplers or ``diffusers:NAME`` of an offered scheduler; anything else is a
    usage error (exit 2) before anything loads, with diffusers' reason where it has the scheduler but aediff does
    not drive it."""
    if text is None:
        return None
    name = text.strip()
    offered = [*get_args(SamplerName), *(f"diffusers:{n}" for n in get_args(DiffusersScheduler))]
    if name in offered:
        return name
    if name.startswith("diffusers:"):
        from aediff.diffusion.diffusers_schedulers import UNFIT

        reason = UNFIT.get(name.removeprefix("diffusers:"))
        if reason is not None:
            raise typer.BadParameter(f"{name!r} is not offered: {reason}")
    raise typer.BadParameter(
        f"{name!r} is not one of {', '.join(get_args(SamplerName))}, or diffusers:NAME with NAME one of the "
        "schedulers `aediff sample --help` lists"
    )


def _resolution(text: str | None) -> int | tuple[int, int] | None:
    """``--resolution 32`` -> 32 (a square), ``--resolution 32x48`` -> (32, 48) (height x width); each side
    4..MAX_IMAGE_SIZE pixels. Anything else is a usage error (exit 2), caught before anything loads."""
    from aediff.config import MAX_IMAGE_SIZE

    if text is None:
        return None
    parts = text.strip().lower().split("x")
    try:
        sides = [int(part) for part in parts]
    except ValueError:
        sides = []
    if len(sides) not in (1, 2):
        raise typer.BadParameter(f"takes N (a square) or HxW (height x width), e.g. 32 or 32x48; got {text!r}")
    if not all(4 <= side <= MAX_IMAGE_SIZE for side in sides):
        raise typer.BadParameter(f"each side must be 4..{MAX_IMAGE_SIZE} pixels; got {text!r}")
    return sides[0] if len(sides) == 1 else (sides[0], sides[1])


@app.command()
def train(
    family: Annotated[
        Family | None, typer.Argument(metavar="FAMILY", help="model family to train (leave out with --resume)")
    ] = None,
    out: Annotated[Path, typer.Option(help="run folder to create (or continue with --resume)")] = Path("runs/run"),
    data: Annotated[str, typer.Option(help="dataset name, folder:PATH or npz:PATH")] = "mnist5k",
    bottleneck: Annotated[int | None, typer.Option(min=1, help="size of the vector latent")] = None,
    latent: Annotated[LatentKind | None, typer.Option(help="bottleneck shape")] = None,
    latent_channels: Annotated[int | None, typer.Option(min=1, help="channels of a spatial latent")] = None,
    widths: Annotated[str | None, typer.Option(help="channels of each resolution stage, e.g. 16,32,64")] = None,
    noise: Annotated[
        str | None,
        typer.Option(help="DAE corruption: gaussian:0.5, gaussian:0.1-0.8, mask:0.3, mask:0.5:patch4, saltpepper:0.1"),
    ] = None,
    beta: Annotated[
        float | None, typer.Option(min=0.0, help="VAE: weight of the KL term; VQ-VAE: commitment weight")
    ] = None,
    likelihood: Annotated[Likelihood | None, typer.Option(help="VAE: p(x|z)")] = None,
    condition: Annotated[
        ConditionKind | None,
        typer.Option(help="diffusion: condition on class labels or captions (default: class when the data has labels)"),
    ] = None,
    network: Annotated[
        NetworkKind | None,
        typer.Option(
            help="diffusion: aediff's U-Net, or a peer's network (diffusers' UNet2DModel, "
            "denoising-diffusion-pytorch's Unet) of the same widths in aediff's recipe"
        ),
    ] = None,
    text_encoder: Annotated[TextEncoderKind | None, typer.Option(help="--condition text: caption encoder")] = None,
    text_encoder_path: Annotated[str | None, typer.Option(help="--text-encoder clip: local folder or hub id")] = None,
    autoencoder: Annotated[
        Path | None,
        typer.Option(help="latent-diffusion: run folder of a trained AE / VAE / VQ-VAE with a spatial latent"),
    ] = None,
    batch_size: Annotated[int | None, typer.Option(min=1, help="global batch size")] = None,
    grad_accumulation: Annotated[
        int | None, typer.Option(min=1, help="compute each step's batch in this many parts (less memory, same step)")
    ] = None,
    lr: Annotated[float | None, typer.Option(min=0.0, help="peak learning rate")] = None,
    max_steps: Annotated[int | None, typer.Option(min=1, help="stop after this many steps")] = None,
    epochs: Annotated[float | None, typer.Option(min=0.0, help="stop after this many epochs")] = None,
    max_time: Annotated[str | None, typer.Option(help="stop after this much training time: 90s, 10m, 1.5h")] = None,
    snapshots: Annotated[
        str | None,
        typer.Option(
            callback=_snapshot_fractions,  # hands on a tuple of floats
            help="keep the model at these fractions of the budget, e.g. 0.25,0.5 (in RUN/snapshots/25 and /50)",
        ),
    ] = None,
    log_with: Annotated[
        list[str] | None,
        typer.Option(
            callback=_log_targets,
            help="experiment trackers (repeatable; default tensorboard): tensorboard, wandb, mlflow",
        ),
    ] = None,
    eval_every: Annotated[
        int | None, typer.Option(min=0, help="steps between held-out loss evaluations (the lowest kept in RUN/best)")
    ] = None,
    keep_checkpoints: Annotated[
        int | None, typer.Option(min=0, help="also keep the last N checkpoints in RUN/checkpoints")
    ] = None,
    seed: Annotated[int | None, typer.Option(min=0, max=2**63 - 1, help="seed of init, data order and noise")] = None,
    mixed_precision: Annotated[MixedPrecision | None, typer.Option(help="autocast")] = None,
    compile_: Annotated[
        bool | None,
        typer.Option("--compile/--no-compile", help="torch.compile the trained networks (faster after a warm-up)"),
    ] = None,
    channels_last: Annotated[bool | None, typer.Option(help="train with channels_last memory layout")] = None,
    resolution: Annotated[
        str | None,
        typer.Option(
            callback=_resolution,  # hands on an int or a (height, width) pair
            metavar="N|HxW",
            help="resize (keeping the aspect ratio) + center-crop to N x N, or to HxW (height x width, e.g. 32x48)",
        ),
    ] = None,
    image_channels: Annotated[int | None, typer.Option(min=1, max=3, help="convert images to 1 or 3 channels")] = None,
    skip_bad: Annotated[bool, typer.Option(help="skip unreadable images instead of stopping")] = False,
    data_dir: Annotated[str | None, typer.Option(help="folder with local dataset copies")] = None,
    stream: Annotated[
        bool | None,
        typer.Option(
            help="read images from disk per batch (default: wds:/hf: data and folders over 2 GB); hf:NAME other than "
            "a save_to_disk folder is read in Hugging Face streaming mode, or with --no-stream downloaded and read "
            "by position"
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            min=0, max=64, help="processes decoding batches ahead (default: 1-4 when streaming; one thread for hf:NAME)"
        ),
    ] = None,
    flip: Annotated[bool, typer.Option(help="augment: mirror training images left-right at random")] = False,
    crop: Annotated[
        float | None, typer.Option(min=0.0, max=1.0, help="augment: random crop keeping this share of each side")
    ] = None,
    resume: Annotated[bool, typer.Option(help="continue the run in --out from its last checkpoint")] = False,
    allow_changed_data: Annotated[
        bool, typer.Option(help="--resume: go on although the data differs from what the run recorded")
    ] = False,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="model config field, key=value (repeatable; a field name or its dotted path, e.g. network.channels)",
        ),
    ] = None,
    train_set: Annotated[list[str] | None, typer.Option("--train-set", help="training config field, key=value")] = None,
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
    dry_run: Annotated[
        bool, typer.Option(help="print the resolved configs, with the defaults the data's image size chooses, and exit")
    ] = False,
) -> None:
    """Train a model: `aediff train vae --data mnist5k --out runs/vae --max-time 5m`."""
    given = dict(locals())  # the options by parameter name, as MODEL_FLAGS and TRAIN_FLAGS name them
    if family is None and not resume:
        raise ConfigError("name the model family to train, e.g. `aediff train vae` (or pass --resume)")
    training = _training_overrides(given, train_set or [], max_time, log_with)
    model = _model_overrides(None if resume else family, {flag: given[flag] for flag in MODEL_FLAGS}, set_ or [])
    if widths is not None:
        model["channels"] = _widths(widths)
    if not resume and not {"max_steps", "epochs", "max_minutes"} & set(training):
        training["epochs"] = 10.0
        console.print("No --max-steps, --epochs or --max-time given: training for 10 epochs.")
    from aediff.data import DataConfig

    data_config = DataConfig(
        spec=data, resolution=resolution, channels=image_channels, skip_bad=skip_bad, data_dir=data_dir,
        stream=stream, workers=workers, flip=flip, crop=1.0 if crop is None else crop,
    )  # fmt: skip
    if dry_run:
        _print_resolved(None if resume else family, training, model, data_config)
        return
    if allow_changed_data and not resume:
        raise ConfigError("--allow-changed-data applies to --resume (a new run records the data it reads)")
    _run_training(family, out, data_config, model, training, resume, progress, allow_changed_data)


# Training options of `aediff train` -> the TrainConfig field each sets (--max-time and --log-with are converted).
TRAIN_FLAGS = {
    "batch_size": "batch_size",
    "grad_accumulation": "grad_accumulation",
    "lr": "lr",
    "max_steps": "max_steps",
    "epochs": "epochs",
    "seed": "seed",
    "eval_every": "eval_every",
    "keep_checkpoints": "keep_checkpoints",
    "mixed_precision": "mixed_precision",
    "compile_": "compile",
    "channels_last": "channels_last",
    "snapshots": "snapshots",
}


def _training_overrides(
    given: dict[str, Any], assignments: list[str], max_time: str | None, log_with: list[str] | None
) -> dict[str, Any]:
    """The training options given (``given``: by parameter name; ``assignments``: --train-set key=value) as
    TrainConfig overrides, each checked against its range now, before torch is even imported."""
    from aediff.config import parse_assignment, parse_duration, update_config
    from aediff.runs.training_config import TrainConfig

    training: dict[str, Any] = dict(parse_assignment(s) for s in assignments)
    training.update({field: given[flag] for flag, field in TRAIN_FLAGS.items() if given[flag] is not None})
    if max_time:
        training["max_minutes"] = parse_duration(max_time, "--max-time")
    if log_with is not None:
        training["tensorboard"] = "tensorboard" in log_with
        training["trackers"] = tuple(dict.fromkeys(t for t in log_with if t != "tensorboard"))
    update_config(TrainConfig(), training)
    return training


def _print_resolved(family: str | None, training: dict[str, Any], model: dict[str, Any], data: Any) -> None:
    """--dry-run: for a new run of ``family``, the defaults its data's shape chooses (the data is read for it) in
    one line; the training config as it resolves, the model overrides, the data config. A resumed run
    (``family`` None) derives no defaults: it goes on with its config.json."""
    from aediff.config import config_to_dict, update_config
    from aediff.runs import TrainConfig
    from aediff.training.train import data_defaults_for, new_train_config

    defaults = None if family is None else data_defaults_for(family, data.load("train"), model, training)
    if defaults is None:
        console.print("defaults: none derived on --resume (the run goes on with its config.json)", markup=False)
        resolved = update_config(TrainConfig(), training)
    else:
        console.print(defaults.describe(), soft_wrap=True, markup=False)
        resolved = new_train_config(defaults, training)
    _print_json("training", config_to_dict(resolved))
    _print_json("model overrides", model)
    if defaults is not None:
        _print_json("data defaults", defaults.record())
    _print_json("data", config_to_dict(data))


def _run_training(
    family: str | None,
    out: Path,
    data: Any,
    model: dict[str, Any],
    training: dict[str, Any],
    resume: bool,
    progress: bool,
    allow_changed_data: bool = False,
) -> None:
    """Train, then say how it ended: done (exit 0); stopped by Ctrl-C or SIGTERM after a step, checkpoint saved
    (exit 130 or 143, as other Unix tools: a script or job system sees that it did not finish); or aborted by a
    second signal (its exit code, naming the checkpoint kept)."""
    from aediff import train as run_training
    from aediff.training.signals import TrainingAborted

    try:
        result = run_training(
            family, out, data, model=model, training=training, resume=resume, progress=progress,
            allow_changed_data=allow_changed_data,
        )  # fmt: skip
    except TrainingAborted as exc:  # a second Ctrl-C / SIGTERM: say which checkpoint is kept (Typer would not)
        errors.print(escape(str(exc)), soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None
    if not result.is_main_process:
        return
    if result.stop_signal is not None:  # saved; a non-zero status says it did not finish
        name = signal.Signals(result.stop_signal).name
        errors.print(
            f"stopped by {name} at step {result.step}; checkpoint saved in {escape(str(out))}; continue with --resume",
            soft_wrap=True,
        )
        raise typer.Exit(128 + result.stop_signal)
    state = "interrupted; continue with --resume" if result.interrupted else "done"
    console.print(
        f"{state}: {result.step} steps, {result.images_per_second:.0f} images/s, "
        f"loss {result.last_logs.get('loss', float('nan')):.4g} -> {result.run_dir}"
    )


# --- using a trained model -------------------------------------------------------------------------------
def _load(run: Path) -> Run:
    import aediff

    return aediff.load(run)


def _latent_run(run: Path, data: str | None, split: str, command: str) -> tuple[Run, Any]:
    """The run at ``run`` (its model must have LATENT, else ``command`` is named in the error) and the
    ``split`` of its data (``_dataset``)."""
    from aediff.models import Capability

    loaded = _load(run)
    loaded.model.require(Capability.LATENT, command)
    return loaded, _dataset(loaded, data, split)


def _dataset(run: Run, data: str | None, split: str) -> Any:
    """The ``split`` of the run's training data, or of ``data`` shaped like the run's images (resized, and
    converted to the model's channels with a printed note: colour made grey loses it, grey is repeated on 3
    channels); checked to fit. A split in Hugging Face streaming mode gives its first images
    (``DataConfig.load_by_position``)."""
    from aediff.data import DataConfig

    channels, height, width = run.model.image_shape
    if data is not None:
        config = DataConfig(spec=data, resolution=(height, width), channels=channels)
    elif run.data is not None:
        config = run.data
    else:
        raise ConfigError(f"{run.path} records no dataset; name one with --data")
    dataset = config.load_by_position(split)
    if dataset.resolution != (height, width) or dataset.channels != channels:
        raise ConfigError(
            f"the model takes {channels}x{height}x{width} images but the data is "
            f"{dataset.channels}x{dataset.resolution[0]}x{dataset.resolution[1]}"
        )
    if dataset.converted:
        note = f"note: {dataset.name}:{split}: {dataset.converted}, for a {channels}-channel model"
        console.print(escape(note), soft_wrap=True)  # one line, however narrow the terminal
    return dataset


@app.command()
def reconstruct(
    run: Annotated[Path, typer.Argument(metavar="RUN", help="run folder of an AE, VAE, KL-AE, VQ-VAE or DAE")],
    data: DataOpt = None,
    split: SplitOpt = "test",
    images: Annotated[int, typer.Option(min=1, max=1024, help="images in the grid")] = 32,
    out: Annotated[Path, typer.Option(help="PNG grid: originals above reconstructions")] = Path("reconstruction.png"),
    overwrite: OverwriteOpt = False,
) -> None:
    """Reconstruct images; write a grid and print MSE / PSNR / SSIM over the whole split."""
    import torch

    from aediff.data import save_image_grid
    from aediff.evaluation import reconstruction_metrics

    out = _writable_out(out, overwrite, (".png",))
    loaded, dataset = _latent_run(run, data, split, "aediff reconstruct")
    x = dataset.batch(torch.arange(min(images, len(dataset))))["images"].to(loaded.model.device)
    with torch.no_grad():
        save_image_grid(torch.cat([x, loaded.model.reconstruct(x)]).cpu(), out, nrow=len(x))
    _print_json(
        f"reconstruction on {dataset.name}:{split} (grid: {out})", reconstruction_metrics(loaded.model, dataset)
    )


@app.command()
def sample(
    run: Annotated[Path, typer.Argument(metavar="RUN", help="run folder of a generative model")],
    samples: Annotated[int, typer.Option(min=1, max=100_000, help="number of samples")] = 64,
    seed: SeedOpt = 0,
    out: Annotated[Path, typer.Option(help="PNG grid, or .npz (uint8 arrays; a PNG grid is written beside)")] = Path(
        "samples.png"
    ),
    overwrite: OverwriteOpt = False,
    sampler: Annotated[
        str | None, typer.Option(help=f"diffusion: {SAMPLER_HELP} (default: the run's)", callback=_sampler_name)
    ] = None,
    steps: Annotated[
        int | None, typer.Option(min=1, max=MAX_SAMPLING_STEPS, help="diffusion: sampling steps (default: the run's)")
    ] = None,
    eta: Annotated[float | None, typer.Option(min=0.0, max=1.0, help="ddim: stochasticity (0 = deterministic)")] = None,
    s_churn: Annotated[
        float | None,
        typer.Option(min=0.0, help="euler, heun: stochastic churn (Karras et al. 2022; 0 = deterministic)"),
    ] = None,
    trajectory: Annotated[
        Path | None, typer.Option(help="diffusion: PNG strip of x_t and the predicted x0 along the sampling path")
    ] = None,
    frames: Annotated[int, typer.Option(min=1, max=1000, help="--trajectory: steps shown, evenly spread")] = 8,
    class_: Annotated[
        str | None,
        typer.Option(
            "--class",
            help="class-conditioned diffusion: a class index, or 'all' to cycle through the classes "
            "(the default: every class in turn, as often as each other)",
        ),
    ] = None,
    negative_class: Annotated[str | None, typer.Option(help="guide away from this class index")] = None,
    prompt: Annotated[str | None, typer.Option(help="text-conditioned diffusion: the caption to draw")] = None,
    negative_prompt: Annotated[str | None, typer.Option(help="guide away from this caption")] = None,
    guidance: Annotated[
        float | None,
        typer.Option(help="classifier-free guidance scale, 0..20 (1 = none, 0 = unconditional; default: the run's)"),
    ] = None,
) -> None:
    """Generate images. VAE: from the prior; AE/DAE: from a Gaussian fitted to the training latents;
    diffusion: with a sampler (`--sampler dpm++ --steps 20`), conditioned with `--class 7` or
    `--prompt "a handwritten seven" --guidance 3`."""
    import numpy as np

    from aediff.data import save_image_grid, to_uint8
    from aediff.evaluation import sample_images, sampling_trajectory
    from aediff.models import Capability
    from aediff.outputs import output_suffix, written_whole
    from aediff.requests import parse_sampling

    if trajectory is None:
        target = _writable_out(out, overwrite, (".png", ".npz"))
    else:
        target = _writable_out(trajectory, overwrite, (".png",), "--trajectory")
    loaded = _load(run)
    loaded.model.require(Capability.GENERATE, "aediff sample")
    request = parse_sampling(
        loaded.model, samples, class_=class_, negative_class=negative_class, prompt=prompt,
        negative_prompt=negative_prompt, guidance=guidance, sampler=sampler, steps=steps, eta=eta, s_churn=s_churn,
    )  # fmt: skip
    condition, options = request.condition, request.options
    if trajectory is not None:
        loaded.model.require(Capability.DIFFUSION_SAMPLER, "--trajectory")
        strip, columns = sampling_trajectory(loaded.model, min(samples, 4), seed, frames, condition, options)
        save_image_grid(strip, target, nrow=columns)
        console.print(f"trajectory (rows: x_t, predicted x0; left to right: high to low noise) -> {target}")
        return
    arrays = output_suffix(target, (".png", ".npz")) == ".npz"
    grid = target.with_suffix(".png") if arrays else target
    if arrays:
        _writable_out(grid, overwrite, (".png",))
    images = sample_images(loaded.model, samples, seed, condition, options)
    save_image_grid(images[:256], grid)
    if arrays:
        with written_whole(target) as f:
            np.savez_compressed(f, images=to_uint8(images).permute(0, 2, 3, 1).cpu().numpy())
    console.print(f"{samples} samples -> {grid}" + (f" and {target}" if grid != target else ""))


@app.command()
def encode(
    run: Annotated[
        Path,
        typer.Argument(
            metavar="RUN", help="run folder of an AE, VAE, KL-AE, VQ-VAE or DAE, or with --features a diffusion model"
        ),
    ],
    data: DataOpt = None,
    split: SplitOpt = "test",
    features: Annotated[
        str | None,
        typer.Option(help="diffusion: the denoising network's features at this level (unet-mid, unet-encoder)"),
    ] = None,
    sigma: Annotated[
        float | None, typer.Option(min=0.0, help="--features: the noise level the images are read at, e.g. 0.5")
    ] = None,
    seed: SeedOpt = 0,
    out: Annotated[Path, typer.Option(help=".npz with `latents` and, when known, `labels`")] = Path("latents.npz"),
    overwrite: OverwriteOpt = False,
) -> None:
    """Encode a dataset split to latents (the posterior mean for a VAE), or with --features read a diffusion
    model's inner features of the images noised to --sigma, pooled per image."""
    import numpy as np

    from aediff.evaluation import latent_codes
    from aediff.evaluation.latents import network_codes
    from aediff.models import Capability
    from aediff.outputs import written_whole

    out = _writable_out(out, overwrite, (".npz",))
    if features is None and sigma is not None:
        raise ConfigError("--sigma is the noise level of --features; give --features unet-mid (a diffusion run)")
    if features is not None:
        loaded = _load(run)
        loaded.model.require(Capability.NETWORK_FEATURES, "aediff encode --features")
        if sigma is None:
            raise ConfigError("--features reads noised images: give their noise level, e.g. --sigma 0.5")
        dataset = _dataset(loaded, data, split)
        codes, labels = network_codes(loaded.model, dataset, features, sigma, seed=seed)
    else:
        loaded, dataset = _latent_run(run, data, split, "aediff encode")
        codes, labels = latent_codes(loaded.model, dataset, flatten=False)
    arrays = {"latents": codes} if dataset.labels is None else {"latents": codes, "labels": labels}
    with written_whole(out) as f:  # a full disk leaves no 0-byte file
        np.savez_compressed(f, **arrays)
    console.print(f"{len(codes)} latents of shape {codes.shape[1:]} -> {out}")


@app.command()
def denoise(
    run: Annotated[
        Path, typer.Argument(metavar="RUN", help="run folder of a model that denoises (AE, VAE, DAE, diffusion)")
    ],
    noise: Annotated[str, typer.Option(help="corruption, e.g. gaussian:0.5 or mask:0.3")] = "gaussian:0.5",
    data: DataOpt = None,
    split: SplitOpt = "test",
    images: Annotated[int, typer.Option(min=1, max=1024, help="images in the grid")] = 16,
    seed: SeedOpt = 0,
    steps: Annotated[
        int,
        typer.Option(
            min=1,
            max=MAX_SAMPLING_STEPS,
            help="diffusion: 1 = the one-step x0 estimate; more = integrate from the noise level down to 0",
        ),
    ] = 1,
    out: Annotated[Path, typer.Option(help="PNG grid: clean, corrupted, denoised rows")] = Path("denoised.png"),
    overwrite: OverwriteOpt = False,
) -> None:
    """Corrupt test images, denoise them; write a grid and print PSNR / SSIM before and after.
    A diffusion model is told the noise level: one model serves every sigma."""
    import torch

    from aediff.data import save_image_grid
    from aediff.evaluation import denoising_metrics
    from aediff.models import Capability, Corruption

    out = _writable_out(out, overwrite, (".png",))
    loaded = _load(run)
    model = loaded.model
    model.require(Capability.DENOISE, "aediff denoise")
    corruption = Corruption.parse(noise)
    sigma = corruption.fixed_sigma
    if model.can(Capability.NOISE_LEVEL) and sigma is None:
        raise ConfigError(
            f"a diffusion model removes Gaussian noise of a known level: use --noise gaussian:SIGMA, not {noise!r}"
        )
    if steps > 1 and not model.can(Capability.NOISE_LEVEL):
        model.require(Capability.NOISE_LEVEL, "--steps")
    dataset = _dataset(loaded, data, split)
    x = dataset.batch(torch.arange(min(images, len(dataset))))["images"].to(model.device)
    noisy = corruption(x, torch.Generator(x.device).manual_seed(seed))
    with torch.no_grad():
        denoised = model.denoise(noisy, sigma=sigma, steps=steps)
        save_image_grid(torch.cat([x, noisy.clamp(-1, 1), denoised]).cpu(), out, nrow=len(x))
    _print_json(
        f"denoising {corruption.spec} on {dataset.name}:{split} (grid: {out})",
        denoising_metrics(model, dataset, corruption, seed, steps=steps),
    )


@app.command()
def restore(
    run: Annotated[Path, typer.Argument(metavar="RUN", help="run folder of an AE, VAE, DAE or pixel diffusion model")],
    mask: Annotated[
        str | None,
        typer.Option(help="box:SIDE, random:RATE, half, lines:N, or a PNG of the images' size (white = fill)"),
    ] = None,
    upscale: Annotated[str | None, typer.Option(help="super-resolution: the factor, e.g. 2 or 4")] = None,
    method: Annotated[
        str | None, typer.Option(help="ddnm or repaint (diffusion), one-pass (autoencoders); default: the model's")
    ] = None,
    sampler: Annotated[
        str | None, typer.Option(help=f"ddnm: the sampler (default: the run's). {SAMPLER_HELP}", callback=_sampler_name)
    ] = None,
    steps: Annotated[
        int | None, typer.Option(min=1, max=MAX_SAMPLING_STEPS, help="ddnm, repaint: steps (default: the run's)")
    ] = None,
    jump_length: Annotated[int | None, typer.Option(min=1, help="repaint: levels per jump back up (10)")] = None,
    jump_n_sample: Annotated[int | None, typer.Option(min=1, help="repaint: resamplings per jump (10)")] = None,
    sigma: Annotated[
        float | None, typer.Option(help="one-pass on a diffusion model: the noise level it reads the filled image at")
    ] = None,
    class_: Annotated[
        str | None, typer.Option("--class", help="class-conditioned diffusion: restore as this class")
    ] = None,
    guidance: Annotated[float | None, typer.Option(help="classifier-free guidance scale with --class")] = None,
    samples: Annotated[int, typer.Option(min=1, max=64, help="restorations per image (stochastic methods)")] = 1,
    data: DataOpt = None,
    split: SplitOpt = "test",
    images: Annotated[int, typer.Option(min=1, max=256, help="test images to degrade and restore")] = 8,
    seed: SeedOpt = 0,
    out: Annotated[Path, typer.Option(help="PNG grid: originals, degraded, restored rows")] = Path("restored.png"),
    overwrite: OverwriteOpt = False,
) -> None:
    """Degrade test images with a known mask or downsampling, restore them; write a grid and print the PSNR
    on the missing pixels (every pixel for super-resolution) against the trivial fill."""
    from aediff.data import save_image_grid
    from aediff.evaluation.restoration import restore_images
    from aediff.models import Condition
    from aediff.requests import parse_class, parse_degradation, parse_guidance, parse_restoration

    out = _writable_out(out, overwrite, (".png",))
    loaded = _load(run)
    model = loaded.model
    operator = parse_degradation(mask, upscale, images, model.image_shape, seed)
    options = parse_restoration(model, operator, method, sampler, steps, jump_length, jump_n_sample, sigma)
    labels, scale = parse_class(class_, model, "class"), parse_guidance(guidance, model)
    condition = Condition(class_labels=labels, guidance=scale) if labels is not None or scale is not None else None
    dataset = _dataset(loaded, data, split)
    if len(dataset) < images:
        raise ConfigError(f"{dataset.name}:{split} has {len(dataset)} images; ask for --images {len(dataset)} or fewer")
    result = restore_images(model, dataset, operator, options, condition, images, samples, seed)
    save_image_grid(result.grid(), out, nrow=images)
    _print_json(f"restoring {operator.describe()} on {dataset.name}:{split} (grid: {out})", result.summary())


@app.command("eval-nll")
def eval_nll(
    run: Annotated[Path, typer.Argument(metavar="RUN", help="run folder of a VAE or a pixel diffusion model")],
    data: DataOpt = None,
    split: SplitOpt = "test",
    k: Annotated[int, typer.Option(min=1, max=100_000, help="VAE: importance samples for the IWAE bound")] = 100,
    timesteps: Annotated[
        int, typer.Option(min=1, max=100_000, help="diffusion: timesteps drawn per image for the bound")
    ] = 32,
    limit: Annotated[int | None, typer.Option(min=1, help="score N images spread over the split")] = None,
    seed: SeedOpt = 0,
) -> None:
    """Negative log-likelihood bound on a split, in nats and bits/dim: a VAE's ELBO and IWAE (k), or a
    diffusion model's variational bound (DDPM's discretized decoder)."""
    from aediff.evaluation import diffusion_nll, vae_likelihood
    from aediff.models import Capability

    loaded = _load(run)
    model = loaded.model
    if model.can(Capability.ELBO):
        result = vae_likelihood(model, _dataset(loaded, data, split), k=k, seed=seed, limit=limit)
    elif model.can(Capability.DIFFUSION_BOUND):
        result = diffusion_nll(
            model, _dataset(loaded, data, split), timesteps_per_image=timesteps, seed=seed, limit=limit
        )
    else:
        raise ConfigError(
            f"{run} holds a {loaded.family!r} model, which defines no likelihood bound; use a VAE "
            f"or a pixel diffusion run"
        )
    _print_json(f"likelihood on {split}", result)


@app.command()
def score(
    run: Annotated[Path, typer.Argument(metavar="RUN", help="run folder of a generative model")],
    classifier: Annotated[
        Path | None,
        typer.Option(help="run folder of `aediff train classifier`: its penultimate features are the feature space"),
    ] = None,
    inception: Annotated[bool, typer.Option(help="Inception-v3 features (torch-fidelity; weights on disk)")] = False,
    samples: Annotated[int, typer.Option(min=2, max=100_000, help="samples to score")] = 1000,
    data: DataOpt = None,
    split: SplitOpt = "test",
    seed: SeedOpt = 0,
) -> None:
    """FID and KID of the model's samples against a data split, in the classifier's feature space."""
    from aediff.evaluation import generation_score, sample_images
    from aediff.models import Capability

    if (classifier is None) == (not inception):
        raise ConfigError(
            "choose one feature space: --classifier RUN (train one with `aediff train classifier`) or --inception"
        )
    if inception:
        from aediff.metrics import inception_extractor

        features, name = inception_extractor(), "inception-v3 (torch-fidelity)"
    else:
        judge = _load(classifier).model
        judge.require(Capability.CLASSIFY, "--classifier")
        features, name = judge.features, f"classifier:{classifier}"
    loaded = _load(run)
    loaded.model.require(Capability.GENERATE, "aediff score")
    reference = _dataset(loaded, data, split)
    images = sample_images(loaded.model, samples, seed)
    result = generation_score(
        images, features, reference, feature_extractor=name, reference_name=f"{reference.name}:{split}", seed=seed
    )
    _print_json(f"samples of {run}", result.to_dict())


def _numbers(text: str, kind: type, option: str, example: str = "4,16,64") -> tuple:
    try:
        values = tuple(kind(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ConfigError(f"{option} takes comma-separated numbers, e.g. {example}; got {text!r}") from None
    if not values or any(v <= 0 for v in values):
        raise ConfigError(f"{option} needs positive numbers, got {text!r}")
    return values


@app.command()
def compare(
    data: Annotated[str, typer.Option(help="dataset name, folder:PATH or npz:PATH")] = "mnist5k",
    budget: Annotated[
        str,
        typer.Option(
            help="training budget of EACH model: wall clock (90s, 10m, 1h) or optimizer steps (400steps: the same "
            "models on any machine)"
        ),
    ] = "10m",
    steps_per_family: Annotated[
        str | None,
        typer.Option(
            help="exact step counts for some families, overriding --budget: FAMILY=STEPS,... (families: ae, vae, "
            "dae, diffusion, latent-diffusion; the judge keeps its 15 epochs), e.g. diffusion=400,ae=800"
        ),
    ] = None,
    out: Annotated[Path, typer.Option(help="report folder (report.html, metrics.json, tables/, figures/)")] = Path(
        "reports/compare"
    ),
    overwrite: Annotated[
        bool, typer.Option(help="replace the report already in --out, and train again the models it trained")
    ] = False,
    runs: Annotated[
        list[str] | None,
        typer.Option(
            help="reuse a trained run instead of training it: NAME=RUN "
            "(names: classifier, ae-4, ae-16, ae-64, vae, dae-0.3, "
            "dae-0.5, dae-0.75, diffusion, diffusion-noskip, "
            "ae-spatial, latent-diffusion)"
        ),
    ] = None,
    peer: Annotated[
        list[str] | None,
        typer.Option(
            help="also score a model outside the family, listed in section 9 beside it: NAME=FOLDER (an aediff "
            "run, a diffusers UNet2DModel + scheduler folder, or hf://owner/name)"
        ),
    ] = None,
    samples: Annotated[
        int, typer.Option(min=20, max=100_000, help="samples per model for FID / KID / precision / recall")
    ] = 1000,
    limit: Annotated[int, typer.Option(min=10, help="test images for denoising, likelihood and probes")] = 500,
    max_steps: Annotated[
        int | None, typer.Option(min=1, help="also stop each model after this many steps (caps a wall-clock budget)")
    ] = None,
    bottlenecks: Annotated[
        str, typer.Option(help="AE bottleneck sizes; the middle one is shared by the VAE and DAEs")
    ] = "4,16,64",
    dae_sigmas: Annotated[
        str, typer.Option(help="Gaussian noise levels of the DAEs (CompareConfig.dae_sigmas)")
    ] = "0.3,0.5,0.75",
    snapshots: Annotated[
        str,
        typer.Option(
            help="budget fractions at which every model is judged again (budget stability, budget curves), "
            "or none: fewer make the evaluation shorter"
        ),
    ] = "0.25,0.5",
    restore_specs: Annotated[
        str,
        typer.Option(
            help="section 10's degradations beside the masking DAE's own masks (box:SIDE, random:RATE, half, "
            "lines:N, upscale:FACTOR), or auto: a box a third of the side, half, lines:3, upscale:2"
        ),
    ] = "auto",
    restore_images: Annotated[int, typer.Option(min=2, max=10_000, help="section 10's test images")] = 100,
    latent_autoencoders: Annotated[
        str,
        typer.Option(
            help="autoencoders made for latent diffusion, trained beside ae-spatial and listed in section 1: kl-ae, "
            "vqvae (comma-separated), none, or auto: both on colour images, none on grey"
        ),
    ] = "auto",
    masking: Annotated[
        float, typer.Option(min=0.01, max=0.99, help="share of pixels the masking DAE hides in training")
    ] = 0.3,
    restore_steps: Annotated[
        int, typer.Option(min=1, max=1000, help="section 10's DDNM and RePaint sampler steps")
    ] = 20,
    seed: SeedOpt = 0,
    seeds: Annotated[
        int,
        typer.Option(
            min=1,
            max=20,
            help="train every model this many times (seeds SEED, SEED+1, ...) and pool each verdict over them; "
            "with 1 the verdicts are about these trained runs, not the method",
        ),
    ] = 1,
    progress: Annotated[bool, typer.Option(help="show the progress display")] = True,
) -> None:
    """Train the whole family under the same budget each, evaluate them with one protocol, and write a
    report whose sections each test a claim about autoencoders and diffusion models."""
    from aediff.config import parse_budget
    from aediff.reports.compare import CompareConfig, parse_family_steps, parse_runs, run_compare

    if (out / "report.html").exists() and not overwrite:
        raise ConfigError(
            f"{out} already holds a report; pass --overwrite to replace it, reuse its trained runs "
            f"with --runs NAME={out}/runs/NAME, or choose another --out"
        )
    config = CompareConfig(
        data=data,
        budget=parse_budget(budget, "--budget"),
        family_steps=parse_family_steps(steps_per_family) if steps_per_family is not None else {},
        samples=samples,
        limit=limit,
        max_steps=max_steps,
        seed=seed,
        seeds=seeds,
        runs=parse_runs(runs or []),
        peers=parse_runs(peer or [], "--peer"),
        bottlenecks=_numbers(bottlenecks, int, "--bottlenecks"),
        dae_sigmas=_numbers(dae_sigmas, float, "--dae-sigmas"),
        snapshots=()
        if snapshots.strip().lower() == "none"
        else _numbers(snapshots, float, "--snapshots", "0.25,0.5 (or none)"),
        restore_specs=None
        if restore_specs.strip().lower() == "auto"
        else tuple(part.strip() for part in restore_specs.split(",") if part.strip()),
        restore_images=restore_images,
        restore_steps=restore_steps,
        masking=masking,
        latent_autoencoders=_names_or_auto(latent_autoencoders),
    )
    results = run_compare(
        config,
        out,
        progress=progress,
        command="aediff " + " ".join(sys.argv[1:]),
        replace_runs=overwrite,
        announce=lambda banner: console.print(f"{escape(banner)}; report -> {escape(str(out))}/report.html"),
    )
    table = Table("section", "claim", "verdict", *(["stability"] if seeds > 1 else []))
    for key, v in results.verdicts.items():
        stability = [f"{round(v.stability * seeds)} of {seeds} seeds"] if v.stability is not None else []
        table.add_row(key, v.claim, v.verdict.verdict, *stability)
    console.print(table)
    console.print(f"report: {results.meta.report}")


def _names_or_auto(text: str) -> tuple[str, ...] | None:
    """'kl-ae, vqvae' -> ('kl-ae', 'vqvae'); 'none' -> (); 'auto' -> None (the default decides)."""
    words = tuple(part.strip().lower() for part in text.split(",") if part.strip())
    return None if words == ("auto",) else () if words == ("none",) else words


# The {judge: FeatureScore} sections of a ModelEvaluation the summary shows as one FID row per judge, and their name.
FID_ROWS = {"reconstruction_fid_by_judge": "rFID", "generation_by_judge": "FID"}


def _metric_rows(result: ModelEvaluation) -> list[tuple[str, str]]:
    """(name, value) rows of ``evaluate_model``'s result for the summary table: the scalars of each
    section, and one row per denoising level, and per judge of rFID and FID."""
    import dataclasses

    from aediff.evaluation.results import encode

    def show(value: Any) -> str:
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    rows = [("family", result.family), ("parameters", f"{result.parameters:,}")]
    for section, values in vars(result).items():  # the fields, in the order metrics.json has them
        if isinstance(values, list) and section == "denoising":
            for row in values:
                steps = f", {row.steps} steps" if row.steps > 1 else ""
                quality = f"PSNR {row.psnr:.2f} dB (noisy {row.psnr_noisy:.2f}), SSIM {row.ssim:.3f}"
                rows.append((f"denoising {row.corruption}{steps}", quality))
        elif isinstance(values, dict) and section in FID_ROWS:
            for judge, score in values.items():
                interval = f" +- {1.96 * score.fid_se:.3g} (95%)" if score.fid_se is not None else ""
                rows.append((f"{FID_ROWS[section]} ({judge} judge)", f"{score.fid:.4g}{interval}"))
        elif section == "class_balance" and values is not None:
            rows += _balance_rows(values)
        elif dataclasses.is_dataclass(values) and section not in ("data", "settings"):
            rows += [
                (f"{section} {key}", show(value))
                for key, value in encode(values).items()
                if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "seed"
            ]
    rows += [(f"skipped {section}", reason) for section, reason in result.skipped.items()]
    return rows


def _balance_rows(balance: Any) -> list[tuple[str, str]]:
    """The summary rows of a ClassBalance: the chi-square test, the histogram's extremes, the confident share."""
    verdict = "rejects" if balance.rejects else "does not reject"
    test = f"chi-square {balance.chi_square:.1f} ({balance.dof} df, p = {balance.p_value:.3g})"
    expected = " ".join(f"{e:.0f}" for e in balance.expected)
    confident = f"{balance.confident_share:.3f} [{balance.confident_low:.3f}, {balance.confident_high:.3f}] (95%)"
    return [
        ("class balance (judge)", f"{test}: {verdict} the data's class frequencies at 1%"),
        ("class histogram", f"{' '.join(map(str, balance.counts))} (the data's: {expected})"),
        (f"confident share (p >= {balance.threshold})", confident),
    ]


@app.command("eval")
def evaluate(
    run: Annotated[Path, typer.Argument(metavar="RUN", help="run folder")],
    data: DataOpt = None,
    split: SplitOpt = "test",
    classifier: Annotated[
        Path | None,
        typer.Option(
            help="run folder of `aediff train classifier`: its features score samples (FID, KID, precision, recall)"
        ),
    ] = None,
    samples: Annotated[
        int, typer.Option(min=2, max=100_000, help="samples to score; also the test images reconstructed for rFID")
    ] = 1000,
    limit: Annotated[
        int | None, typer.Option(min=1, help="test images per protocol (default: the whole split)")
    ] = None,
    seed: SeedOpt = 0,
    out: Annotated[Path, typer.Option(help="JSON file for every number")] = Path("metrics.json"),
    overwrite: OverwriteOpt = False,
) -> None:
    """Every evaluation that applies to the model: reconstruction (PSNR, SSIM; with --classifier rFID of
    --samples test images against themselves), denoising sweep, likelihood, latent probes, FID / KID /
    precision / recall (with --classifier), class accuracy of conditioned samples, speed. Prints a summary
    table and writes all numbers to --out."""
    from aediff.evaluation import evaluate_model
    from aediff.models import Capability

    out = _writable_out(out, overwrite, (".json",))
    loaded = _load(run)
    judge = _load(classifier) if classifier else None
    if judge is not None:
        judge.model.require(Capability.CLASSIFY, "--classifier")
    test, train_split = _dataset(loaded, data, split), _dataset(loaded, data, "train")
    result = evaluate_model(
        loaded, train_split, test, classifier=judge, samples=samples, seed=seed, limit=limit, test_split=split
    )
    result.run = str(run)
    result.write(out)
    table = Table("metric", "value", title=escape(f"{run} on {result.data.reference}"))
    for name, value in _metric_rows(result):
        table.add_row(escape(name), escape(value))
    console.print(table)
    console.print(f"all numbers -> {out}")
    if loaded.unverified_weights is not None:
        console.print(
            f"note: {escape(str(loaded.unverified_weights))} was written before aediff recorded checksums, so it "
            "loaded unverified; weights written since (a new run, or a resumed one at its next checkpoint) are checked"
        )


@app.command()
def distill(
    run: Annotated[Path, typer.Argument(metavar="RUN", help="run folder of a diffusion or latent-diffusion model")],
    out: Annotated[Path, typer.Option(help="new run folder for the distilled model")] = Path("runs/distilled"),
    steps: Annotated[int, typer.Option(min=1, max=1024, help="sampling steps of the distilled model")] = 4,
    teacher_steps: Annotated[
        int, typer.Option(min=2, max=4096, help="steps the distillation starts from: --steps times a power of two")
    ] = 32,
    iterations: Annotated[int, typer.Option(min=1, help="optimizer steps per halving of the steps")] = 500,
    max_time: Annotated[
        str | None, typer.Option(help="instead of --iterations: total time, shared by the halvings: 90s, 10m")
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, max=65536, help="images per optimizer step")] = 64,
    lr: Annotated[float, typer.Option(min=1e-8, max=0.99, help="AdamW learning rate")] = 1e-4,
    lr_decay: Annotated[bool, typer.Option(help="decay the learning rate linearly to 0 within each round")] = True,
    method: Annotated[
        DistillMethodName, typer.Option(help="progressive (halvings) or consistency (one map to the data)")
    ] = "progressive",
    ema_decay: Annotated[
        float, typer.Option(min=0.0, max=0.99999, help="progressive: EMA of the student (0: the student itself)")
    ] = 0.0,
    target_decay: Annotated[
        float, typer.Option(min=0.0, max=0.99999, help="consistency: EMA rate of the target network (mu)")
    ] = 0.95,
    guidance: Annotated[
        float | None,
        typer.Option(
            min=0.0, max=20.0, help="class-conditioned teacher: the guidance the student learns (default: the run's)"
        ),
    ] = None,
    data: DataOpt = None,
    seed: SeedOpt = 0,
) -> None:
    """Distil a diffusion model into one that samples in --steps steps. progressive: each halving teaches a copy
    to take two of its teacher's Euler steps in one (--teacher-steps: --steps times a power of two); the new run
    samples with `euler`. consistency: a copy learns to map every point of the teacher's ODE trajectories on a grid
    of --teacher-steps levels to the same image (--iterations in all); it samples with `consistency`. A
    class-conditioned teacher is followed guided (--guidance), so the student draws guided samples unguided."""
    from aediff.config import parse_duration
    from aediff.training.distill import DistillConfig, distill_run

    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"--out {out} already exists; distil into a new folder")
    config = DistillConfig(
        steps=steps, teacher_steps=teacher_steps, iterations=iterations, batch_size=batch_size, lr=lr, seed=seed,
        max_minutes=parse_duration(max_time, "--max-time") if max_time else None, lr_decay=lr_decay,
        method=method, ema_decay=ema_decay, target_decay=target_decay, guidance=guidance,
    )  # fmt: skip
    loaded = _load(run)
    dataset = _dataset(loaded, data, "train")
    how = f"in {config.rounds} halvings" if method == "progressive" else f"by consistency on {teacher_steps} levels"
    console.print(f"distilling {run} from {teacher_steps} to {steps} steps {how} -> {out}")
    distill_run(loaded, out, dataset, config, report=lambda line: console.print(escape(line)), progress=True)
    console.print(f"done: `aediff sample {out}` draws in {steps} steps")


ExportFormat = Literal["onnx", "diffusers"]


def _require_extra(command: str, modules: tuple[str, ...], extra: str) -> None:
    """Exit 2 with one line naming the pip extra when an optional dependency of ``command`` is missing."""
    import importlib.util

    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    if missing:
        errors.print(
            f"error: aediff {command} needs {' and '.join(missing)}; install with `pip install 'aediff[{extra}]'`",
            soft_wrap=True,
            markup=False,
        )
        raise typer.Exit(2)


@app.command()
def export(
    run: Annotated[Path, typer.Argument(metavar="RUN", help="run folder of an AE, VAE, DAE or diffusion model")],
    format: Annotated[ExportFormat, typer.Option("--format", help="what to write")] = "onnx",
    out: Annotated[Path, typer.Option(help="folder for the graphs and export.json")] = Path("export"),
    overwrite: OverwriteOpt = False,
    sampler: Annotated[
        DiffusersSampler | None,
        typer.Option(help="diffusers: the aediff sampler whose steps the folder's scheduler takes [default: euler]"),
    ] = None,
) -> None:
    """Export the networks a user deploys (encoder / decoder, denoiser) to ONNX, each checked against PyTorch
    with ONNX Runtime (needs `pip install 'aediff[export]'`); or, with --format diffusers, a diffusion run as
    a folder that diffusers' DiffusionPipeline loads (needs `pip install diffusers`)."""
    if format == "diffusers":
        _export_diffusers(run, out, overwrite, sampler or "euler")
        return
    if sampler is not None:
        raise typer.BadParameter("--sampler chooses a diffusers scheduler; it applies only with --format diffusers")
    _require_extra("export", ("onnx", "onnxruntime"), "export")
    from aediff.export import export_onnx, prepare_out

    out = prepare_out(out, overwrite)
    result = export_onnx(_load(run).model, out, run=str(run))
    for name, difference in result.max_abs_diff.items():
        console.print(f"{out / name}: max |ONNX Runtime - PyTorch| = {difference:.2g}", soft_wrap=True)
    console.print(f"manifest -> {out / 'export.json'}", soft_wrap=True)


def _export_diffusers(run: Path, out: Path, overwrite: bool, sampler: DiffusersSampler) -> None:
    import importlib.util

    if importlib.util.find_spec("diffusers") is None:
        errors.print(
            "error: aediff export --format diffusers needs diffusers; install with `pip install diffusers`",
            soft_wrap=True,
            markup=False,
        )
        raise typer.Exit(2)
    from aediff.export.diffusers import export_diffusers
    from aediff.runs import read_run_config

    loaded = _load(run)
    stored = read_run_config(loaded.path)
    export_diffusers(loaded.model, stored["model"], out, loaded.family, loaded.format_version, sampler, overwrite)
    console.print(f"diffusers pipeline -> {out} (load with DiffusionPipeline.from_pretrained(", soft_wrap=True,
                  markup=False, end="")  # fmt: skip
    console.print(
        f"'{out}', custom_pipeline='{out / 'pipeline.py'}', trust_remote_code=True))", soft_wrap=True, markup=False
    )


def _repo_id(text: str) -> str:
    from aediff.export.hub_resolve import check_repo_id

    try:
        return check_repo_id(text)
    except ConfigError as exc:
        raise typer.BadParameter(str(exc)) from None


@app.command()
def push(
    run: Annotated[Path, typer.Argument(metavar="RUN", help="run folder to share")],
    repo: Annotated[str, typer.Argument(metavar="REPO", help="Hub repository: owner/name", callback=_repo_id)],
    private: Annotated[bool, typer.Option("--private", help="create the repository private")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="list what would be uploaded; contact nothing")] = False,
) -> None:
    """Upload a run to the Hugging Face Hub with a generated model card; load it back anywhere with
    `aediff.load("hf://owner/name")`. Log in first with `hf auth login`. Needs `pip install 'aediff[hub]'`."""
    _require_extra("push", ("huggingface_hub",), "hub")
    from aediff.export.hub import push as push_run

    plan = push_run(run, repo, private=private, dry_run=dry_run)
    for name, size in plan:
        console.print(f"{name}  {size:,} bytes", soft_wrap=True, markup=False)
    total = sum(size for _, size in plan)
    if dry_run:
        console.print(f"dry run: nothing was uploaded ({len(plan)} files, {total:,} bytes for {repo})", soft_wrap=True)
    else:
        console.print(f"{len(plan)} files, {total:,} bytes -> https://huggingface.co/{repo}", soft_wrap=True)


@app.command()
def serve(
    runs: Annotated[
        list[Path] | None,
        typer.Argument(metavar="RUNS", help="run folders, or folders of runs (none: train one there)"),
    ] = None,
    host: Annotated[str, typer.Option(help="address to bind; 0.0.0.0 serves other machines too")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="port to serve on")] = 7860,
    report: Annotated[
        list[Path] | None, typer.Option(help="a `compare` report folder the Report tab may open (repeatable)")
    ] = None,
) -> None:
    """Serve a web page to generate, denoise and explore: `aediff serve runs --report reports/demo`.
    Needs Gradio: `pip install 'aediff[app]'`."""
    _require_extra("serve", ("gradio",), "app")
    from aediff.app.page import serve as serve_page

    serve_page(list(runs or []), host, port, list(report or []))


def _os_error_line(exc: OSError) -> str:
    """One line for an OSError a user can act on: what failed, on which file, and for a full disk what to do."""
    where = f" ({exc.filename})" if exc.filename else ""
    if exc.errno == errno.ENOSPC:
        return f"no space left on the device{where}; free some space or write elsewhere, then run the command again"
    return f"{exc.strerror or exc}{where}"


def main() -> None:
    """Entry point. Usage mistakes are Typer's (usage, one line, exit 2); aediff's own errors print one line
    and exit 1; Ctrl-C exits 130; anything else is a bug: one line, and the traceback with AEDIFF_DEBUG=1."""
    debug = os.environ.get("AEDIFF_DEBUG", "") not in ("", "0")
    try:
        app()  # standalone: Typer prints usage errors itself and exits 2
    except AediffError as exc:
        if debug:
            raise
        errors.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)  # messages name extras like aediff[text]
        sys.exit(1)
    except KeyboardInterrupt:
        errors.print("aborted", soft_wrap=True)
        sys.exit(130)
    except OSError as exc:  # a full disk, a folder without write permission...: the system's own words
        if debug:
            raise
        errors.print(f"[red]error:[/red] {escape(_os_error_line(exc))}", soft_wrap=True)
        sys.exit(1)
    except Exception as exc:
        if debug:
            raise
        errors.print(
            f"[red]internal error:[/red] {escape(type(exc).__name__)}: {escape(str(exc))} (a bug in "
            "aediff: rerun with AEDIFF_DEBUG=1 for the traceback, and please report it)",
            soft_wrap=True,
        )
        sys.exit(1)


if __name__ == "__main__":
    main()
