"""The `aediff` command line: parse, call the Python API, print. No logic of its own."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

import click
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from aediff.errors import AediffError, ConfigError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Train, sample, reconstruct, denoise and evaluate autoencoders and diffusion models.")
console = Console()

DataOpt = Annotated[str | None, typer.Option("--data", help="dataset: a name from `aediff datasets`, "
                                             "folder:PATH or npz:PATH (default: the run's training data)")]
SplitOpt = Annotated[Literal["train", "test", "all"], typer.Option(help="which split")]
SeedOpt = Annotated[int, typer.Option(help="random seed")]


def _print_json(title: str, payload: dict[str, Any]) -> None:
    console.print(f"[bold]{title}[/bold]")
    console.print_json(json.dumps(payload))


# --- datasets ----------------------------------------------------------------------------------
@app.command()
def datasets() -> None:
    """List the built-in datasets and whether each is available offline on this machine."""
    from aediff.data import list_datasets

    table = Table("name", "offline", "description", "how to get it")
    for info in list_datasets():
        table.add_row(info.name, "yes" if info.offline_available else "no", info.description, info.how_to_get)
    console.print(table)
    console.print("Also: folder:PATH (an image folder; labels from sub-folders, captions from metadata.jsonl) "
                  "and npz:PATH (arrays `images`, optional `labels`, `captions`).")


# --- train -------------------------------------------------------------------------------------
@app.command(context_settings={"help_option_names": ["-h", "--help"]})
def train(
    family: Annotated[str | None, typer.Argument(help="model family: ae, vae, dae, diffusion, latent-diffusion, "
                                                 "classifier")] = None,
    out: Annotated[Path, typer.Option(help="run folder to create (or continue with --resume)")] = Path("runs/run"),
    data: Annotated[str, typer.Option(help="dataset name, folder:PATH or npz:PATH")] = "mnist5k",
    bottleneck: Annotated[int | None, typer.Option(min=1, help="size of the vector latent")] = None,
    latent: Annotated[Literal["vector", "spatial"] | None, typer.Option(help="bottleneck shape")] = None,
    latent_channels: Annotated[int | None, typer.Option(min=1, help="channels of a spatial latent")] = None,
    widths: Annotated[str | None, typer.Option(help="channels of each resolution stage, e.g. 16,32,64")] = None,
    noise: Annotated[str | None, typer.Option(help="DAE corruption: gaussian:0.5, gaussian:0.1-0.8, mask:0.3, "
                                              "mask:0.5:patch4, saltpepper:0.1")] = None,
    beta: Annotated[float | None, typer.Option(min=0.0, help="VAE: weight of the KL term")] = None,
    likelihood: Annotated[Literal["gaussian", "bernoulli"] | None, typer.Option(help="VAE: p(x|z)")] = None,
    condition: Annotated[Literal["none", "class", "text"] | None,
                         typer.Option(help="diffusion: condition on class labels or captions")] = None,
    text_encoder: Annotated[Literal["learned", "minilm", "clip"] | None,
                            typer.Option(help="--condition text: caption encoder")] = None,
    text_encoder_path: Annotated[str | None, typer.Option(help="--text-encoder clip: local folder or hub id")] = None,
    autoencoder: Annotated[Path | None, typer.Option(help="latent-diffusion: run folder of a trained AE / VAE "
                                                     "with --latent spatial")] = None,
    batch_size: Annotated[int | None, typer.Option(min=1, help="global batch size")] = None,
    lr: Annotated[float | None, typer.Option(min=0.0, help="peak learning rate")] = None,
    max_steps: Annotated[int | None, typer.Option(min=1, help="stop after this many steps")] = None,
    epochs: Annotated[float | None, typer.Option(min=0.0, help="stop after this many epochs")] = None,
    max_minutes: Annotated[float | None, typer.Option(min=0.0, help="stop after this much time")] = None,
    seed: Annotated[int | None, typer.Option(help="seed of init, data order and noise")] = None,
    mixed_precision: Annotated[Literal["no", "fp16", "bf16"] | None, typer.Option(help="autocast")] = None,
    resolution: Annotated[int | None, typer.Option(min=4, help="resize + center-crop to this side")] = None,
    image_channels: Annotated[int | None, typer.Option(min=1, max=3, help="convert images to 1 or 3 channels")] = None,
    skip_bad: Annotated[bool, typer.Option(help="skip unreadable images instead of stopping")] = False,
    data_dir: Annotated[str | None, typer.Option(help="folder with local dataset copies")] = None,
    resume: Annotated[bool, typer.Option(help="continue the run in --out from its last checkpoint")] = False,
    set_: Annotated[list[str] | None, typer.Option("--set", help="model config field, key=value (repeatable)")] = None,
    train_set: Annotated[list[str] | None, typer.Option("--train-set", help="training config field, key=value")] = None,
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
    dry_run: Annotated[bool, typer.Option(help="print the resolved configs and exit")] = False,
) -> None:
    """Train a model: `aediff train vae --data mnist5k --out runs/vae --max-minutes 5`."""
    from aediff.config import parse_assignment
    from aediff.training import DataConfig, TrainConfig
    from aediff.training import train as run_training

    model: dict[str, Any] = dict(parse_assignment(s) for s in set_ or [])
    for key, value in {"bottleneck_dim": bottleneck, "latent": latent, "latent_channels": latent_channels,
                       "beta": beta, "likelihood": likelihood, "corruption": noise, "condition": condition,
                       "text_encoder": text_encoder, "text_encoder_path": text_encoder_path,
                       "autoencoder": str(autoencoder) if autoencoder is not None else None}.items():
        if value is not None:
            model[key] = value
    if widths is not None:
        model["channels"] = [int(c) for c in widths.split(",")]
    if family is not None and not resume:
        from aediff.models import model_class

        fields = set(model_class(family).config_class.__dataclass_fields__)
        wrong = [k for k in model if k not in fields]
        if wrong:
            flags = {"corruption": "--noise", "beta": "--beta", "likelihood": "--likelihood",
                     "bottleneck_dim": "--bottleneck", "condition": "--condition", "text_encoder": "--text-encoder",
                     "text_encoder_path": "--text-encoder-path", "autoencoder": "--autoencoder"}
            raise ConfigError(f"{', '.join(flags.get(k, k) for k in wrong)} does not apply to {family!r} models")
    training: dict[str, Any] = dict(parse_assignment(s) for s in train_set or [])
    for key, value in {"batch_size": batch_size, "lr": lr, "max_steps": max_steps, "epochs": epochs,
                       "max_minutes": max_minutes, "seed": seed, "mixed_precision": mixed_precision}.items():
        if value is not None:
            training[key] = value
    if not resume and not {"max_steps", "epochs", "max_minutes"} & set(training):
        training["epochs"] = 10.0
        console.print("No --max-steps, --epochs or --max-minutes given: training for 10 epochs.")
    data_config = DataConfig(spec=data, resolution=resolution, channels=image_channels, skip_bad=skip_bad,
                             data_dir=data_dir)
    if dry_run:
        from aediff.config import update_config

        _print_json("training", vars(update_config(TrainConfig(), training)))
        _print_json("model overrides", model)
        _print_json("data", vars(data_config))
        return
    result = run_training(family, out, data_config, model=model, training=training, resume=resume,
                          progress=progress)
    if not result.is_main_process:
        return
    state = "interrupted; continue with --resume" if result.interrupted else "done"
    console.print(f"{state}: {result.step} steps, {result.images_per_second:.0f} images/s, "
                  f"loss {result.last_logs.get('loss', float('nan')):.4g} -> {result.run_dir}")


# --- using a trained model ---------------------------------------------------------------------
def _load(run: Path) -> Any:
    import aediff

    return aediff.load(run)


def _dataset(model: Any, data: str | None, split: str) -> Any:
    from aediff.config import config_from_dict
    from aediff.training import DataConfig, load_data

    stored = model.run_config.get("data") or {}
    config = config_from_dict(DataConfig, stored)
    if data is not None:
        config = DataConfig(spec=data, resolution=model.config.image_size,
                            channels=model.config.image_channels)
    return load_data(config, split)


def _check_shape(model: Any, dataset: Any) -> None:
    size, channels = model.config.image_size, model.config.image_channels
    if dataset.resolution != (size, size) or dataset.channels != channels:
        raise ConfigError(f"the model takes {channels}x{size}x{size} images but the data is "
                          f"{dataset.channels}x{dataset.resolution[0]}x{dataset.resolution[1]}")


@app.command()
def reconstruct(
    run: Annotated[Path, typer.Argument(help="run folder")],
    data: DataOpt = None,
    split: SplitOpt = "test",
    n: Annotated[int, typer.Option(min=1, help="images in the grid")] = 32,
    out: Annotated[Path, typer.Option(help="PNG grid: originals above reconstructions")] = Path("reconstruction.png"),
) -> None:
    """Reconstruct images; write a grid and print MSE / PSNR / SSIM over the whole split."""
    import torch

    from aediff.data import save_image_grid
    from aediff.evaluation import model_device, reconstruction_metrics

    model = _load(run)
    dataset = _dataset(model, data, split)
    _check_shape(model, dataset)
    x = dataset.batch(torch.arange(min(n, len(dataset))))["images"].to(model_device(model))
    with torch.no_grad():
        save_image_grid(torch.cat([x, model.reconstruct(x)]).cpu(), out, nrow=len(x))
    _print_json(f"reconstruction on {dataset.name}:{split} (grid: {out})", reconstruction_metrics(model, dataset))


@app.command()
def sample(
    run: Annotated[Path, typer.Argument(help="run folder")],
    n: Annotated[int, typer.Option(min=1, help="number of samples")] = 64,
    seed: SeedOpt = 0,
    out: Annotated[Path, typer.Option(help="PNG grid, or .npz (uint8 arrays; a PNG grid is written beside)")
                   ] = Path("samples.png"),
    npz: Annotated[Path | None, typer.Option(help="also save the samples as uint8 arrays in this .npz")] = None,
    sampler: Annotated[Literal["ddpm", "ddim", "euler", "heun", "dpm++"] | None,
                       typer.Option(help="diffusion: sampler (default: the run's)")] = None,
    steps: Annotated[int | None, typer.Option(min=1, help="diffusion: sampling steps (default: the run's)")] = None,
    eta: Annotated[float | None, typer.Option(min=0.0, help="diffusion, ddim: stochasticity (0 = deterministic)")
                   ] = None,
    trajectory: Annotated[Path | None, typer.Option(help="diffusion: PNG strip of x_t and the predicted x0 "
                                                    "along the sampling path")] = None,
    frames: Annotated[int, typer.Option(min=1, help="--trajectory: steps shown, evenly spread")] = 8,
    class_: Annotated[str | None, typer.Option("--class", help="class-conditioned diffusion: a class index, or "
                                               "'all' to cycle through the classes")] = None,
    prompt: Annotated[str | None, typer.Option(help="text-conditioned diffusion: the caption to draw")] = None,
    guidance: Annotated[float | None, typer.Option(help="classifier-free guidance scale (1 = none; default: "
                                                   "the run's)")] = None,
    negative_class: Annotated[int | None, typer.Option(help="guide away from this class")] = None,
    negative_prompt: Annotated[str | None, typer.Option(help="guide away from this caption")] = None,
) -> None:
    """Generate images. VAE: from the prior; AE/DAE: from a Gaussian fitted to the training latents;
    diffusion: with a sampler (`--sampler dpm++ --steps 20`), conditioned with `--class 7` or
    `--prompt "a handwritten seven" --guidance 3`."""
    import numpy as np
    import torch

    from aediff.data import save_image_grid, to_uint8
    from aediff.evaluation import sample_images, sampling_trajectory
    from aediff.models import DiffusionModel

    model = _load(run)
    class_labels: Any = None
    if class_ == "all":
        class_labels = torch.arange(n) % max(getattr(model.config, "num_classes", 0), 1)
    elif class_ is not None:
        try:
            class_labels = int(class_)
        except ValueError:
            raise ConfigError(f"--class takes a class index or 'all', got {class_!r}") from None
    options = {k: v for k, v in {"sampler": sampler, "steps": steps, "eta": eta, "class_labels": class_labels,
                                 "prompts": prompt, "guidance": guidance, "negative_class": negative_class,
                                 "negative_prompt": negative_prompt}.items() if v is not None}
    if options and not isinstance(model, DiffusionModel):
        raise ConfigError(f"--sampler, --steps, --eta, --class, --prompt and --guidance apply to diffusion models; "
                          f"{run} is a {model.family!r} run")
    if trajectory is not None:
        if not isinstance(model, DiffusionModel):
            raise ConfigError("--trajectory shows a diffusion model's sampling path; use a diffusion run")
        strip, columns = sampling_trajectory(model, min(n, 4), seed, frames=frames, **options)
        save_image_grid(strip, trajectory, nrow=columns)
        console.print(f"trajectory (rows: x_t, predicted x0; left to right: high to low noise) -> {trajectory}")
        return
    images = sample_images(model, n, seed, **options)
    if out.suffix == ".npz":
        npz, out = out, out.with_suffix(".png")
    save_image_grid(images[:256], out)
    if npz is not None:
        np.savez_compressed(npz, images=to_uint8(images).permute(0, 2, 3, 1).cpu().numpy())
    console.print(f"{n} samples -> {out}" + (f" and {npz}" if npz else ""))


@app.command()
def encode(
    run: Annotated[Path, typer.Argument(help="run folder")],
    data: DataOpt = None,
    split: SplitOpt = "test",
    out: Annotated[Path, typer.Option(help=".npz with `latents` and, when known, `labels`")] = Path("latents.npz"),
) -> None:
    """Encode a dataset split to latents (the posterior mean for a VAE)."""
    import numpy as np
    import torch

    from aediff.evaluation import iterate_images, model_device

    model = _load(run)
    dataset = _dataset(model, data, split)
    _check_shape(model, dataset)
    latents, labels = [], []
    with torch.no_grad():
        for batch in iterate_images(dataset, device=model_device(model)):
            latents.append(model.encode(batch["images"]).cpu())
            if "labels" in batch:
                labels.append(batch["labels"].cpu())
    arrays = {"latents": torch.cat(latents).numpy()}
    if labels:
        arrays["labels"] = torch.cat(labels).numpy()
    np.savez_compressed(out, **arrays)
    console.print(f"{len(arrays['latents'])} latents of shape {arrays['latents'].shape[1:]} -> {out}")


@app.command()
def denoise(
    run: Annotated[Path, typer.Argument(help="run folder")],
    noise: Annotated[str, typer.Option(help="corruption, e.g. gaussian:0.5 or mask:0.3")] = "gaussian:0.5",
    data: DataOpt = None,
    split: SplitOpt = "test",
    n: Annotated[int, typer.Option(min=1, help="images in the grid")] = 16,
    seed: SeedOpt = 0,
    steps: Annotated[int, typer.Option(min=1, help="diffusion: 1 = the one-step x0 estimate; more = "
                                       "integrate from the noise level down to 0")] = 1,
    out: Annotated[Path, typer.Option(help="PNG grid: clean, corrupted, denoised rows")] = Path("denoised.png"),
) -> None:
    """Corrupt test images, denoise them; write a grid and print PSNR / SSIM before and after.
    A diffusion model is told the noise level: one model serves every sigma."""
    import torch

    from aediff.data import save_image_grid
    from aediff.evaluation import denoising_metrics, model_device
    from aediff.models import Corruption

    model = _load(run)
    corruption = Corruption.parse(noise)
    sigma = corruption.low if corruption.kind == "gaussian" and corruption.low == corruption.high else None
    if model.family == "diffusion" and sigma is None:
        raise ConfigError(f"a diffusion model removes Gaussian noise of a known level: use --noise gaussian:SIGMA, "
                          f"not {noise!r}")
    dataset = _dataset(model, data, split)
    _check_shape(model, dataset)
    x = dataset.batch(torch.arange(min(n, len(dataset))))["images"].to(model_device(model))
    noisy = corruption(x, torch.Generator(x.device).manual_seed(seed))
    with torch.no_grad():
        denoised = model.denoise(noisy, sigma=sigma, steps=steps)
        save_image_grid(torch.cat([x, noisy.clamp(-1, 1), denoised]).cpu(), out, nrow=len(x))
    _print_json(f"denoising {corruption.spec} on {dataset.name}:{split} (grid: {out})",
                denoising_metrics(model, dataset, corruption, seed, steps=steps))


@app.command("eval-nll")
def eval_nll(
    run: Annotated[Path, typer.Argument(help="run folder of a VAE or a diffusion model")],
    data: DataOpt = None,
    split: SplitOpt = "test",
    k: Annotated[int, typer.Option(min=1, help="VAE: importance samples for the IWAE bound")] = 100,
    timesteps: Annotated[int, typer.Option(min=1, help="diffusion: timesteps drawn per image for the bound")] = 32,
    limit: Annotated[int | None, typer.Option(min=1, help="score N images spread over the split")] = None,
    seed: SeedOpt = 0,
) -> None:
    """Negative log-likelihood bound on a split, in nats and bits/dim: a VAE's ELBO and IWAE (k), or a
    diffusion model's variational bound (DDPM's discretized decoder)."""
    from aediff.evaluation import diffusion_nll, vae_likelihood

    model = _load(run)
    dataset = _dataset(model, data, split)
    _check_shape(model, dataset)
    if model.family == "diffusion":
        result = diffusion_nll(model, dataset, timesteps_per_image=timesteps, seed=seed, limit=limit)
    elif hasattr(model, "iwae_log_likelihood"):
        result = vae_likelihood(model, dataset, k=k, seed=seed, limit=limit)
    else:
        raise ConfigError(f"{run} holds a {model.family!r} model, which defines no likelihood; "
                          f"use a VAE or a diffusion run")
    _print_json(f"likelihood on {dataset.name}:{split}", result)


@app.command()
def score(
    run: Annotated[Path, typer.Argument(help="run folder of a generative model")],
    classifier: Annotated[Path | None, typer.Option(help="run folder of `aediff train classifier`: its "
                                                     "penultimate features are the feature space")] = None,
    inception: Annotated[bool, typer.Option(help="Inception-v3 features (torch-fidelity; weights on disk)")] = False,
    n: Annotated[int, typer.Option(min=2, help="samples to score")] = 1000,
    data: DataOpt = None,
    split: SplitOpt = "test",
    seed: SeedOpt = 0,
) -> None:
    """FID and KID of the model's samples against a data split, in the classifier's feature space."""
    from aediff.evaluation import generation_score, sample_images

    if (classifier is None) == (not inception):
        raise ConfigError("choose one feature space: --classifier RUN (train one with `aediff train classifier`) "
                          "or --inception")
    if inception:
        from aediff.metrics import inception_extractor

        features, name = inception_extractor(), "inception-v3 (torch-fidelity)"
    else:
        features, name = _load(classifier).features, f"classifier:{classifier}"
    model = _load(run)
    reference = _dataset(model, data, split)
    images = sample_images(model, n, seed)
    result = generation_score(images, features, reference, feature_extractor=name,
                              reference_name=f"{reference.name}:{split}", seed=seed)
    _print_json(f"samples of {run}", result.to_dict())


def _numbers(text: str, kind: type, option: str) -> tuple:
    try:
        values = tuple(kind(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ConfigError(f"{option} takes comma-separated numbers, e.g. 4,16,64; got {text!r}") from None
    if not values or any(v <= 0 for v in values):
        raise ConfigError(f"{option} needs positive numbers, got {text!r}")
    return values


@app.command()
def compare(
    data: Annotated[str, typer.Option(help="dataset name, folder:PATH or npz:PATH")] = "mnist5k",
    budget: Annotated[str, typer.Option(help="training budget of EACH model: 90s, 10m, 1h")] = "10m",
    out: Annotated[Path, typer.Option(help="report folder (report.html, metrics.json, tables/, figures/)")] = Path(
        "reports/compare"),
    runs: Annotated[list[str] | None, typer.Option(help="reuse a trained run instead of training it: NAME=RUN "
                                                   "(names: classifier, ae-4, ae-16, ae-64, vae, dae-0.1, "
                                                   "dae-0.3, dae-0.75, diffusion, diffusion-noskip, "
                                                   "ae-spatial, latent-diffusion)")] = None,
    samples: Annotated[int, typer.Option(min=20, help="samples per model for FID / KID / precision / recall")] = 1000,
    limit: Annotated[int, typer.Option(min=10, help="test images for denoising, likelihood and probes")] = 500,
    max_steps: Annotated[int | None, typer.Option(min=1, help="also stop each model after this many steps")] = None,
    bottlenecks: Annotated[str, typer.Option(help="AE bottleneck sizes; the middle one is shared by the "
                                             "VAE and DAEs")] = "4,16,64",
    dae_sigmas: Annotated[str, typer.Option(help="Gaussian noise levels of the DAEs")] = "0.1,0.3,0.75",
    seed: SeedOpt = 0,
    progress: Annotated[bool, typer.Option(help="show the progress display")] = True,
) -> None:
    """Train the whole family under the same budget each, evaluate them with one protocol, and write a
    report whose sections each test a claim about autoencoders and diffusion models."""
    from aediff.reports.compare import CompareConfig, compare_plan, parse_budget, parse_runs, run_compare

    config = CompareConfig(data=data, budget_minutes=parse_budget(budget), samples=samples, limit=limit,
                           max_steps=max_steps, seed=seed, runs=parse_runs(runs or []),
                           bottlenecks=_numbers(bottlenecks, int, "--bottlenecks"),
                           dae_sigmas=_numbers(dae_sigmas, float, "--dae-sigmas"))
    trained = len([p for p in compare_plan(config) if p.name not in config.runs])
    console.print(f"training {trained} models (the judging classifier among them) for {budget} each (about "
                  f"{trained * config.budget_minutes:.0f} min), then evaluating them; report -> {out}/report.html")
    results = run_compare(config, out, progress=progress, command="aediff " + " ".join(sys.argv[1:]))
    table = Table("section", "claim", "verdict")
    for key, v in results["verdicts"].items():
        table.add_row(key, v["claim"], v["verdict"])
    console.print(table)
    console.print(f"report: {results['meta']['report']}")


def _metric_rows(result: dict[str, Any]) -> list[tuple[str, str]]:
    """(name, value) rows of ``evaluate_model``'s result for the summary table: the scalars of each
    section, and one row per denoising level."""
    def show(value: Any) -> str:
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    rows = [("family", str(result["family"])), ("parameters", f"{result['parameters']:,}")]
    for section, values in result.items():
        if section == "denoising":
            for row in values:
                steps = f", {row['steps']} steps" if row["steps"] > 1 else ""
                rows.append((f"denoising {row['corruption']}{steps}", f"PSNR {row['psnr']:.2f} dB (noisy "
                             f"{row['psnr_noisy']:.2f}), SSIM {row['ssim']:.3f}"))
        elif isinstance(values, dict) and section not in ("data", "settings", "skipped"):
            rows += [(f"{section} {key}", show(value)) for key, value in values.items()
                     if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "seed"]
    rows += [(f"skipped {section}", reason) for section, reason in result.get("skipped", {}).items()]
    return rows


@app.command("eval")
def evaluate(
    run: Annotated[Path, typer.Argument(help="run folder")],
    data: DataOpt = None,
    split: SplitOpt = "test",
    classifier: Annotated[Path | None, typer.Option(help="run folder of `aediff train classifier`: its features "
                                                     "score samples (FID, KID, precision, recall)")] = None,
    samples: Annotated[int, typer.Option(min=2, help="samples to score")] = 1000,
    limit: Annotated[int | None, typer.Option(min=1, help="test images per protocol (default: the whole split)")
                     ] = None,
    seed: SeedOpt = 0,
    out: Annotated[Path, typer.Option(help="JSON file for every number")] = Path("metrics.json"),
) -> None:
    """Every evaluation that applies to the model: reconstruction, denoising sweep, likelihood, latent
    probes, FID / KID / precision / recall (with --classifier), class accuracy of conditioned samples,
    speed. Prints a summary table and writes all numbers to --out."""
    from aediff.config import config_from_dict
    from aediff.evaluation import evaluate_model
    from aediff.training import DataConfig, load_data

    model = _load(run)
    # A latent diffusion model's config holds its latent's shape; the images are its autoencoder's.
    images_of = getattr(model, "autoencoder", model)
    config = config_from_dict(DataConfig, model.run_config.get("data") or {})
    if data is not None:
        config = DataConfig(spec=data, resolution=images_of.config.image_size,
                            channels=images_of.config.image_channels)
    test, train_split = load_data(config, split), load_data(config, "train")
    _check_shape(images_of, test)
    result = evaluate_model(model, train_split, test, classifier=_load(classifier) if classifier else None,
                            samples=samples, seed=seed, limit=limit, test_split=split)
    result["run"] = str(run)
    out.write_text(json.dumps(result, indent=2, allow_nan=False) + "\n")
    table = Table("metric", "value", title=escape(f"{run} on {result['data']['reference']}"))
    for name, value in _metric_rows(result):
        table.add_row(escape(name), escape(value))
    console.print(table)
    console.print(f"all numbers -> {out}")


def main() -> None:
    """Entry point: user errors print one message (no stack trace) and exit with status 2."""
    try:
        app(standalone_mode=False)
    except AediffError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}")  # messages name extras like aediff[text]
        sys.exit(2)
    except click.exceptions.Abort:
        console.print("aborted")
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
