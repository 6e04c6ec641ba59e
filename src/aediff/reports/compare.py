"""`aediff compare`: train the family under one budget each, evaluate with one protocol, and write a report
whose sections each state a claim about these models, show the figure that tests it and give the verdict
computed from the numbers.

The plan (``compare_plan``) names every model: AEs at several bottleneck sizes, a VAE, DAEs at three noise
levels, pixel diffusion with and without skip connections (class-conditioned, so one model also serves the
conditioning section; with the null class it samples unconditionally), an AE with a spatial latent and a
text-conditioned latent diffusion model on it, on colour images the autoencoders made for latent diffusion
(LATENT_AUTOENCODERS), and the classifier whose features score FID and whose top class scores conditional
accuracy. Runs given with ``runs`` are reused instead of trained.
"""

from __future__ import annotations

import dataclasses
import json
import platform
import shutil
import time
from collections.abc import Callable
from dataclasses import InitVar, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

import aediff
from aediff.config import Budget, parse_steps
from aediff.device import default_device
from aediff.diffusion.degradations import degradation_from_spec
from aediff.environment import cpu_model
from aediff.errors import ConfigError
from aediff.models.defaults import DataShape, size_rule
from aediff.reports.evaluate import evaluate_all, evaluate_snapshots, prepare_judging, with_snapshot_points
from aediff.reports.record import ComparisonReport, ReportMeta
from aediff.reports.sections import build_report
from aediff.runs import resolve_data_defaults

# The families a step count can be given for (`--steps-per-family`), as `aediff train` names them.
STEP_FAMILIES = ("ae", "vae", "dae", "diffusion", "latent-diffusion")
JUDGE_EPOCHS = 15  # the judge converges in a few epochs; more would only cost time
# The autoencoders made for latent diffusion (LDM's KL-regularised one with its patch discriminator, the VQ-VAE),
# planned beside ae-spatial on colour images, where their sharper reconstructions can show; on grey images the plan
# stays the digits' demo as measured.
# kl-ae's discriminator switches on after 250 steps in the comparison, not LDM's 1000-step default: a 2-minute budget
# trains about 900 AE steps on 2 cores, so the adversarial loss gets most of the budget it can have.
# family -> (its model overrides in the plan, its line in the model table)
LATENT_AUTOENCODER_PLANS: dict[str, tuple[dict[str, Any], str]] = {
    "kl-ae": ({"disc_start": 250}, "KL-regularised autoencoder with a patch discriminator from step 250 (LDM's)"),
    "vqvae": ({}, "vector-quantised autoencoder (VQ-VAE, EMA codebook)"),
}
LATENT_AUTOENCODERS = tuple(LATENT_AUTOENCODER_PLANS)


@dataclass
class CompareConfig:
    data: str = "mnist5k"  # dataset spec (see `aediff datasets`)
    # training budget of each model: wall-clock minutes, or optimizer steps (the same models on any machine)
    budget: Budget = Budget(minutes=10.0)
    # family (as `aediff train` names it) -> exactly this many steps for its models, overriding the budget
    family_steps: dict[str, int] = field(default_factory=dict)
    # also stop each model after this many steps (tests, smoke runs); a cap on a time budget only
    max_steps: int | None = None
    bottlenecks: tuple[int, ...] = (4, 16, 64)  # AE bottleneck sweep; the middle one is the family's shared size
    # One DAE per Gaussian noise level; levels where a 16-number code can beat returning the noisy input
    # (at 0.1 the noisy input scores about 28 dB, above any such DAE, so no claim about it is testable).
    dae_sigmas: tuple[float, ...] = (0.3, 0.5, 0.75)
    samples: int = 1000  # samples per generative model for FID / KID / precision / recall
    curve_samples: int = 200  # samples per point of the budget curves (FID against training time)
    # budget fractions at which every model keeps a snapshot: the first seed's models are judged again at
    # each (budget stability; the curve models also draw the budget curves), from curve_samples samples
    snapshots: tuple[float, ...] = (0.25, 0.5)
    limit: int = 500  # test images for the denoising sweep, likelihoods and latent probes
    guidances: tuple[float, ...] = (1.0, 3.0, 5.0)  # classifier-free guidance scales of section 8
    denoise_steps: int = 5  # the diffusion model's multi-step denoising
    # Section 10: the masking DAE hides this share of pixels in training (Vincent et al. 2008's masking noise)
    masking: float = 0.3
    # Section 10's degradations of restore_images test images: the masking DAE's own masks first (its
    # training distribution), then masks it never saw and super-resolution (degradation_from_spec)
    # None: a box of about a third of the side (10 on 28x28 digits), half, 3 lines, and 2x super-resolution
    # where 2 divides the images
    restore_specs: tuple[str, ...] | None = None
    restore_images: int = 100
    restore_steps: int = 20  # sampler steps of DDNM and RePaint (RePaint adds its resamplings)
    seed: int = 0  # the first training seed, and the evaluation's seed (every training seed is scored alike)
    seeds: int = 1  # training seeds: every planned model but the judge is trained with seed, seed + 1, ...
    # images per optimizer step of every model; None: each family's default for the data (64 up to 64 px,
    # aediff.runs.defaults)
    batch_size: int | None = None
    model_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)  # family -> config overrides
    runs: dict[str, str] = field(default_factory=dict)  # model name -> existing run folder to reuse
    # name -> a model outside the family (an aediff run, a diffusers UNet2DModel folder, hf://...) scored with
    # the same protocol and listed in section 9's table; no verdict is about it
    peers: dict[str, str] = field(default_factory=dict)
    # which of LATENT_AUTOENCODERS the plan adds beside ae-spatial; None: all of them on colour images, none on grey
    latent_autoencoders: tuple[str, ...] | None = None
    # a time budget given in minutes, as Python callers have always passed it: budget=Budget(minutes=...)
    budget_minutes: InitVar[float | None] = None

    def __post_init__(self, budget_minutes: float | None) -> None:
        if isinstance(self.seeds, bool) or not isinstance(self.seeds, int) or self.seeds < 1:
            raise ConfigError(f"--seeds needs a whole number >= 1 of training seeds, got {self.seeds!r}; e.g. 3")
        if budget_minutes is not None:
            if self.budget != Budget(minutes=10.0):
                raise ConfigError("CompareConfig takes budget or budget_minutes, not both")
            self.budget = Budget(minutes=budget_minutes)
        if self.max_steps is not None and self.budget.steps is not None:
            raise ConfigError(
                f"--max-steps caps a wall-clock budget; under --budget {self.budget.steps}steps every model "
                "trains exactly that many steps: drop --max-steps, or give the step count you want as the budget"
            )
        unknown = sorted(set(self.family_steps) - set(STEP_FAMILIES))
        if unknown:
            judge = " (the judge classifier keeps its fixed epochs)" if "classifier" in unknown else ""
            raise ConfigError(
                f"--steps-per-family names {', '.join(unknown)}, not a family the comparison trains by steps"
                f"{judge}; the families are {', '.join(STEP_FAMILIES)}, e.g. diffusion=400,ae=800"
            )
        if any(not 0 < f < 1 for f in self.snapshots) or len(set(self.snapshots)) < len(self.snapshots):
            raise ConfigError(
                f"--snapshots takes distinct budget fractions between 0 and 1, e.g. 0.25,0.5 (or none); "
                f"got {','.join(map(str, self.snapshots))}"
            )
        self.snapshots = tuple(sorted(self.snapshots))
        for spec in self.restore_specs or ():  # the syntax now; whether it fits the images, when they are known
            try:
                degradation_from_spec(spec, 1, (1024, 1024))
            except ConfigError as exc:
                raise ConfigError(f"--restore-specs {spec}: {exc}") from None
        if self.restore_images < 2 or self.restore_steps < 1:
            raise ConfigError("section 10 needs --restore-images >= 2 and --restore-steps >= 1")
        if not 0 < self.masking < 1:
            raise ConfigError(f"--masking is the share of pixels the masking DAE hides, in (0, 1); got {self.masking}")
        unknown_autoencoders = sorted(set(self.latent_autoencoders or ()) - set(LATENT_AUTOENCODERS))
        if unknown_autoencoders:
            raise ConfigError(
                f"--latent-autoencoders names {', '.join(unknown_autoencoders)}; the comparison can add "
                f"{', '.join(LATENT_AUTOENCODERS)} (comma-separated), or none"
            )
        bad = {k: v for k, v in self.family_steps.items() if isinstance(v, bool) or not isinstance(v, int) or v < 1}
        if bad:
            raise ConfigError(f"--steps-per-family needs whole step counts >= 1, got {bad}; e.g. diffusion=400")

    def steps_for(self, planned: PlannedModel) -> int | None:
        """The exact step count ``planned`` trains for (its family's, else a step budget's); None when it
        trains under the time budget, and always for the judge, which trains JUDGE_EPOCHS epochs."""
        return None if planned.judge else self.family_steps.get(planned.family, self.budget.steps)

    @property
    def training_seeds(self) -> list[int]:
        return [self.seed + i for i in range(self.seeds)]

    @property
    def masking_spec(self) -> str:
        """The degradation that draws the masking DAE's own training masks (random pixels at its rate)."""
        return f"random:{self.masking:g}"

    def restorations_for(self, shape: tuple[int, ...]) -> list[str]:
        """Section 10's degradations of images of ``shape`` (..., H, W): the masking DAE's own masks first, then
        ``restore_specs`` (or, when None, the defaults sized to the images)."""
        h, w = shape[-2:]
        specs = self.restore_specs
        if specs is None:
            halvable = ("upscale:2",) if h % 2 == 0 and w % 2 == 0 else ()
            specs = (f"box:{max(1, round(0.36 * min(h, w)))}", "half", "lines:3", *halvable)
        return list(dict.fromkeys([self.masking_spec, *specs]))

    def latent_autoencoders_for(self, shape: DataShape | None) -> tuple[str, ...]:
        """The LATENT_AUTOENCODERS the plan adds for images of ``shape`` (None: not known, as grey)."""
        if self.latent_autoencoders is not None:
            return self.latent_autoencoders
        return LATENT_AUTOENCODERS if shape is not None and shape.channels > 1 else ()

    @property
    def shared_bottleneck(self) -> int:
        return sorted(self.bottlenecks)[len(self.bottlenecks) // 2]

    @property
    def guidance_samples(self) -> int:
        """Class-conditioned samples per guidance scale: a fifth of ``samples``, whole rounds of 10 classes
        (each costs two network evaluations per step; the paired accuracy gain needs no more)."""
        return max(10, (self.samples // 5) // 10 * 10)


@dataclass
class PlannedModel:
    name: str
    family: str  # what `aediff train` trains
    model: dict[str, Any]  # model config overrides
    role: str  # one line for the report's model table
    sweep: Literal["bottleneck", "noise"] | None = None  # which sweep of the autoencoders it belongs to
    bottleneck: int | None = None  # the bottleneck sweep's size
    noise_sigma: float | None = None  # the noise sweep's training sigma
    judge: bool = False  # the classifier whose features score FID and whose top class scores accuracy
    autoencoder: str | None = None  # latent diffusion: the planned model whose latent space it works in
    subject: bool = False  # the pixel diffusion model sections 5, 6 and 8 are about
    ablation_of: str | None = None  # section 7: the planned model this one is, minus its skip connections
    curve: bool = False  # evaluated at each budget snapshot for the budget curves
    peer: bool = False  # a model outside the plan (CompareConfig.peers): scored and listed, never judged
    # section 10: the masking DAE it is about, the plain AE of its shape, or the diffusion model (restores)
    restorer: Literal["masking", "plain", "diffusion"] | None = None
    # section 1's table lists its reconstructions beside the bottleneck sweep (a spatial latent: no verdict reads it)
    spatial_row: bool = False


def compare_plan(config: CompareConfig, labelled: bool = True, shape: DataShape | None = None) -> list[PlannedModel]:
    """Every model the comparison trains, in training order (the spatial AE before latent diffusion); the images'
    ``shape`` decides which LATENT_AUTOENCODERS join (``CompareConfig.latent_autoencoders_for``)."""
    b = config.shared_bottleneck
    plan = [
        PlannedModel(
            "classifier", "classifier", {"dropout": 0.1}, "judge: FID features, conditional accuracy", judge=True
        )
    ]
    plan += [
        PlannedModel(
            f"ae-{k}",
            "ae",
            {"bottleneck_dim": k},
            f"autoencoder, {k}-d bottleneck",
            "bottleneck",
            k,
            curve=k <= b,
            restorer="plain" if k == b else None,
        )
        for k in sorted(config.bottlenecks)
    ]
    plan.append(PlannedModel("vae", "vae", {"bottleneck_dim": b}, f"variational autoencoder, {b}-d latent", curve=True))
    plan += [
        PlannedModel(
            f"dae-{s:g}",
            "dae",
            {"bottleneck_dim": b, "corruption": f"gaussian:{s:g}"},
            f"denoising autoencoder, trained at sigma {s:g}",
            "noise",
            b,
            s,
        )
        for s in config.dae_sigmas
    ]
    plan.append(
        PlannedModel(
            "dae-mask",
            "dae",
            {"bottleneck_dim": b, "corruption": f"mask:{config.masking:g}"},
            f"masking denoising autoencoder, {config.masking:.0%} of pixels hidden in training",
            restorer="masking",
        )
    )
    condition = "class" if labelled else "none"
    # The report's own protocol: samples are asked for by class (section 9) or by guidance scale (section 8), and
    # the reference draw is the null class, unguided, so the report does not move with the sampling defaults.
    unguided = {"sampling.guidance": 1.0, "sampling.classes": "null"}
    plan.append(
        PlannedModel(
            "diffusion",
            "diffusion",
            {"conditioning.kind": condition, **unguided},
            "pixel diffusion (U-Net with skips)" + (", class-conditioned" if labelled else ""),
            subject=True,
            curve=True,
            restorer="diffusion",
        )
    )
    plan.append(
        PlannedModel(
            "diffusion-noskip",
            "diffusion",
            {"conditioning.kind": condition, "skip_connections": False, **unguided},
            "the same network without encoder-decoder skips",
            ablation_of="diffusion",
        )
    )
    plan.append(
        PlannedModel(
            "ae-spatial",
            "ae",
            {"latent": "spatial"},  # its latent channels: the data's default (4; 16 over 64 px)
            "autoencoder with a spatial latent, for latent diffusion",
            spatial_row=True,
        )
    )
    plan += [
        PlannedModel(family, family, *LATENT_AUTOENCODER_PLANS[family], spatial_row=True)
        for family in config.latent_autoencoders_for(shape)
    ]
    plan.append(
        PlannedModel(
            "latent-diffusion",
            "latent-diffusion",
            {"conditioning.kind": "text" if labelled else "none", **unguided},
            "diffusion in ae-spatial's latent space" + (", text-conditioned" if labelled else ""),
            autoencoder="ae-spatial",
            curve=True,
        )
    )
    if not labelled:
        plan = [p for p in plan if not p.judge]
    return plan


def parse_runs(items: list[str], option: str = "--runs") -> dict[str, str]:
    """['vae=runs/vae', ...] -> {'vae': 'runs/vae'} (``option`` names the flag in errors); a Hub run
    (hf://owner/name) is kept as given and resolved when it is loaded."""
    out = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ConfigError(f"{option} takes NAME=RUN_FOLDER (e.g. vae=runs/vae), got {item!r}")
        if not path.startswith("hf://") and not Path(path).is_dir():
            raise ConfigError(f"{option} {item!r}: {path} is not a run folder")
        if name in out:
            raise ConfigError(f"{option} names {name!r} twice; give each model one folder")
        out[name] = path
    return out


def parse_family_steps(text: str, option: str = "--steps-per-family") -> dict[str, int]:
    """'diffusion=400,ae=800' -> {'diffusion': 400, 'ae': 800}; the family names are CompareConfig's to check."""
    out: dict[str, int] = {}
    for item in (part.strip() for part in text.split(",")):
        family, sep, count = item.partition("=")
        family = family.strip()
        if not sep or not family:
            raise ConfigError(f"{option} takes FAMILY=STEPS pairs, e.g. diffusion=400,ae=800; got {item!r}")
        if family in out:
            raise ConfigError(f"{option} names {family!r} twice; give each family one step count")
        out[family] = parse_steps(count, f"{option} {family}")
    return out


def peer_plan(config: CompareConfig, plan: list[PlannedModel]) -> list[PlannedModel]:
    """The peers of ``config`` as planned models, each loaded once to fail early (naming its folder) and to
    learn its family. ConfigError when a peer's name is a planned model's."""
    clash = sorted(set(config.peers) & {p.name for p in plan})
    if clash:
        raise ConfigError(
            f"--peer names {clash}, which the comparison trains itself; reuse a run for it with --runs "
            f"NAME=FOLDER, or give the peer another name"
        )
    return [
        PlannedModel(name, aediff.load(path, device="cpu").family, {}, f"peer: {path}", peer=True)
        for name, path in config.peers.items()
    ]


# --- the run -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """One item of the progress display: training or evaluating a model, with what its time is estimated
    from: ``seconds`` (a time budget; an evaluation's first guess), or ``steps`` (a step budget: the seconds
    per step measured on the models trained so far); neither: unknown until it is done (the judge's epochs
    under a step budget)."""

    kind: Literal["train", "eval"]
    seconds: float | None = None
    steps: int | None = None


def planned_jobs(plan: list[PlannedModel], peers: list[PlannedModel], config: CompareConfig) -> list[Job]:
    """The progress display's jobs: training every run the comparison trains (``_to_train``: each model once
    per training seed, the judge once), then evaluating every seed's models (not the judge) and the peers,
    then the first seed's models at each budget snapshot."""
    jobs = []
    for _, planned in _to_train(plan, config):
        steps = config.steps_for(planned)
        if steps is not None:
            jobs.append(Job("train", steps=steps))
        else:
            minutes = config.budget.minutes
            jobs.append(Job("train", seconds=None if minutes is None else minutes * 60))
    jobs += [Job("eval", seconds=30.0) for _ in config.training_seeds for p in plan if not p.judge]
    jobs += [Job("eval", seconds=30.0) for _ in peers]  # scored beside the first seed only
    return jobs + [Job("eval", seconds=30.0) for _ in config.snapshots for p in plan if not p.judge]


class Progress:
    """Which model is training or being evaluated, and an estimate of the time left (Rich, or silent)."""

    def __init__(self, jobs: list[Job], enabled: bool = True):
        self.jobs, self.done, self.enabled = jobs, 0, enabled
        self.seconds: dict[str, list[float]] = {"train": [], "eval": []}
        self.trained_steps, self.trained_seconds = 0, 0.0  # models trained so far: their steps and seconds
        self.started = time.perf_counter()
        self._progress = None
        if enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("{task.fields[left]}"),
            )
            self._task = self._progress.add_task("compare", total=len(jobs), left="")
            self._progress.start()

    def time_left(self) -> float | None:
        """Seconds left (None: unknown until a model has trained). A time budget's training takes its budget,
        a step budget's its steps at the seconds per step measured so far; evaluations as measured so far."""
        left = 0.0
        for job in self.jobs[self.done :]:
            seen = self.seconds[job.kind]
            if job.kind == "eval" and seen:
                left += float(np.median(seen))
            elif job.steps is not None and self.trained_steps:
                left += job.steps * self.trained_seconds / self.trained_steps
            elif job.seconds is not None:
                left += job.seconds
            else:
                return None
        return left

    def start(self, what: str) -> float:
        if self._progress is not None:
            seconds = self.time_left()
            left = "time left unknown" if seconds is None else f"about {seconds / 60:.1f} min left"
            self._progress.update(self._task, description=what, left=left)
        return time.perf_counter()

    def finish(self, kind: str, started: float, steps: int | None = None) -> None:
        """``steps``: the optimizer steps of a model just trained (None for a reused one or an evaluation)."""
        seconds = time.perf_counter() - started
        self.seconds[kind].append(seconds)
        if steps:
            self.trained_steps, self.trained_seconds = self.trained_steps + steps, self.trained_seconds + seconds
        self.done += 1
        if self._progress is not None:
            self._progress.update(self._task, completed=self.done)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()


def training_overrides(planned: PlannedModel, config: CompareConfig, seed: int | None = None) -> dict[str, Any]:
    """The TrainConfig fields ``planned`` trains with (training ``seed``, default ``config.seed``): under a
    step count (``config.steps_for``) exactly that many steps and no time limit; else the time budget, capped
    at ``max_steps``; the judge JUDGE_EPOCHS epochs (within a time budget, none under a step budget); every
    other model keeps its snapshots (budget stability; the curve models also draw the budget curves)."""
    seed = config.seed if seed is None else seed
    args: dict[str, Any] = {"seed": seed, "tensorboard": False}
    if config.batch_size is not None:
        args["batch_size"] = config.batch_size
    steps = config.steps_for(planned)
    if steps is not None:
        args["max_steps"] = steps
    else:
        if config.budget.minutes is not None:
            args["max_minutes"] = config.budget.minutes
        if config.max_steps:
            args["max_steps"] = config.max_steps
    if planned.judge:
        args["epochs"] = JUDGE_EPOCHS
    else:
        args["snapshots"] = tuple(config.snapshots)
    return args


def _train_model(planned: PlannedModel, config: CompareConfig, run_dir: Path, runs: dict[str, Path], seed: int) -> int:
    """Train ``planned`` with training ``seed`` into ``run_dir``; returns its optimizer steps."""
    from aediff import train

    overrides = planned_overrides(planned, config)
    if planned.autoencoder is not None:
        overrides["autoencoder.path"] = str(runs[planned.autoencoder])
    training = training_overrides(planned, config, seed)
    return train(planned.family, run_dir, config.data, model=overrides, training=training, progress=False).step


def planned_overrides(planned: PlannedModel, config: CompareConfig) -> dict[str, Any]:
    """The model config overrides ``planned`` trains with: the user's for its family, then the plan's."""
    return {**config.model_overrides.get(planned.family, {}), **planned.model}


def defaults_note(config: CompareConfig, plan: list[PlannedModel], shape: DataShape) -> str:
    """Which size rule the data falls under and what it sets in the models trained here (the plan's and the
    user's own settings win: an AE of the bottleneck sweep keeps its bottleneck), per family."""
    said: dict[str, list[str]] = {}  # what the rule sets -> the families it sets it in
    rule = size_rule(shape).name
    for planned in (p for p in plan if p.name not in config.runs):
        found = resolve_data_defaults(
            planned.family, shape, planned_overrides(planned, config), training_overrides(planned, config)
        )
        families = said.setdefault(found.changes(), [])
        families += [planned.family] if planned.family not in families else []
    changes = [f"{', '.join(families)}: {what}" for what, families in said.items() if what]
    return f"defaults for {shape.describe()} (rule {rule}): " + ("; ".join(changes) or "the built-in defaults")


def _check_reused(planned: PlannedModel, folder: Path) -> None:
    """Fail early, naming the folder, unless ``folder`` is a run of the family ``planned`` is (the sections
    measure what that family can do)."""
    family = aediff.runs.read_run_config(folder)["family"]
    if family != planned.family:
        raise ConfigError(
            f"--runs {planned.name}={folder} holds a {family!r} model, and the comparison's {planned.name} is a "
            f"{planned.family!r} one; to score it beside the family, pass it with --peer NAME={folder}"
        )


def run_folder(out: Path, planned: PlannedModel, seed: int, config: CompareConfig) -> Path:
    """Where the comparison trains ``planned`` with training ``seed``: out/runs/NAME with one seed (and for the
    judge, trained once), out/runs/seed-S/NAME with several."""
    if planned.judge or config.seeds == 1:
        return out / "runs" / planned.name
    return out / "runs" / f"seed-{seed}" / planned.name


def _to_train(plan: list[PlannedModel], config: CompareConfig) -> list[tuple[int, PlannedModel]]:
    """(training seed, model) for every run the comparison trains, in order: the judge once, at the first seed."""
    return [
        (seed, p)
        for seed in config.training_seeds
        for p in plan
        if p.name not in config.runs and not (p.judge and seed != config.seed)
    ]


def _clear_old_runs(plan: list[PlannedModel], config: CompareConfig, out: Path, replace: bool) -> None:
    """Before any training: the run folders this comparison will train must be free, or be replaced."""
    for seed, planned in _to_train(plan, config):
        folder = run_folder(out, planned, seed, config)
        if not folder.exists():
            continue
        if not replace:
            reuse = f"reuse it with --runs {planned.name}={folder}, or " if config.seeds == 1 else ""
            raise ConfigError(
                f"{folder} holds a run from an earlier comparison; {reuse}pass --overwrite to train it again"
            )
        shutil.rmtree(folder)


def run_compare(
    config: CompareConfig,
    out: str | Path,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    command: str = "",
    replace_runs: bool = False,
    announce: Callable[[str], None] | None = None,
) -> ComparisonReport:
    """Train (or reuse) every model of the plan, once per training seed, evaluate them, write the report
    into ``out``. ``announce`` is told what will be trained once the data is read (``plan_banner``).

    replace_runs: train again the models whose run folders an earlier comparison left in ``out/runs``
    (else that is an error, checked before any training). Returns the ``ComparisonReport`` that is also
    written to ``out/metrics.json``; ``out/report.html`` is the report. The judge is trained once and
    measures every seed's models; every verdict is pooled over the seeds (``aediff.reports.seeds``).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    aediff.runs.recover(out)  # a report write cut short after its commit point is finished first
    started = time.perf_counter()
    train_set, test_set, plan, peers = _checked_plan(config, out, replace_runs)
    if announce is not None:
        labelled = train_set.labels is not None and test_set.labels is not None
        announce(plan_banner(config, plan, labelled, DataShape.of(train_set)))
    meter = Progress(planned_jobs(plan, peers, config), enabled=progress)
    try:
        runs, train_seconds = _train_all(plan, config, out, meter, log)
        evaluating = time.perf_counter()
        judging = prepare_judging(plan, runs[config.seed], train_set, test_set)
        results = {}
        for seed in config.training_seeds:  # the peers are the same for every seed: scored beside the first
            scored = plan + peers if seed == config.seed else plan
            runs[seed].update({p.name: Path(config.peers[p.name]) for p in peers if seed == config.seed})
            results[seed] = evaluate_all(config, scored, runs[seed], judging, train_set, test_set, meter, log)
        snapshots = evaluate_snapshots(config, plan, runs[config.seed], judging, train_set, test_set, meter, log)
        with_snapshot_points(results[config.seed].sections, snapshots)
        eval_seconds = time.perf_counter() - evaluating
    finally:
        meter.close()
    meta = _meta(config, command, started, runs[config.seed], train_seconds, eval_seconds)
    record, _ = build_report(results, meta, plan + peers, out, config.denoise_steps, runs, snapshots)
    return record


def plan_banner(config: CompareConfig, plan: list[PlannedModel], labelled: bool, shape: DataShape | None = None) -> str:
    """What the comparison will train, counted from ``plan`` itself, what unlabelled data left out, and (given
    the images' ``shape``) the defaults that the data chose (``defaults_note``)."""
    planned = [p for p in plan if p.name not in config.runs]
    trained = sum(1 if p.judge else config.seeds for p in planned)
    notes = ["the judging classifier among them"] if any(p.judge for p in planned) else []
    notes += [f"the others once per seed, {config.seeds} seeds"] if config.seeds > 1 else []
    opened = f" ({'; '.join(notes)})" if notes else ""
    minutes, overrides = config.budget.minutes, config.family_steps
    about = f" (about {trained * minutes:.0f} min)" if minutes and not overrides else ""
    families = "".join(f", {family}: {steps} steps" for family, steps in overrides.items())
    banner = f"training {trained} models{opened}, {config.budget.describe()}{about}{families}, then evaluating them"
    if not labelled:
        banner += (
            f". {config.data} has no labels, so the judging classifier, class conditioning and the captions made "
            "from class names are left out: diffusion trains unconditional, latent diffusion without text, and "
            "the sections judged by the classifier are not scored"
        )
    if shape is not None:
        banner += f"; {defaults_note(config, plan, shape)}"
    return banner


def _checked_plan(config: CompareConfig, out: Path, replace_runs: bool):
    """The data and the plan, every check that can fail made before the first model trains: (train split,
    test split, plan, peers)."""
    from aediff.data import ImageStream, check_captions_available, load_dataset

    train_set = load_dataset(config.data, "train")
    if isinstance(train_set, ImageStream):  # its evaluations read whole splits by position
        raise ConfigError(
            f"aediff compare scores every model on whole splits, and {config.data} is read in Hugging Face streaming "
            "mode, in order; save it with datasets' save_to_disk and compare on hf:FOLDER"
        )
    test_set = load_dataset(config.data, "test")
    labelled = train_set.labels is not None and test_set.labels is not None
    plan = compare_plan(config, labelled, DataShape.of(train_set))
    unknown = set(config.runs) - {p.name for p in plan}
    if unknown:
        raise ConfigError(
            f"--runs names models the comparison does not have: {sorted(unknown)}; it has {[p.name for p in plan]}"
            f" (to score another model beside them, pass it with --peer NAME=FOLDER)"
        )
    if config.runs and config.seeds > 1:
        raise ConfigError(
            f"--runs reuses one trained run per model, and --seeds {config.seeds} trains every model "
            f"{config.seeds} times; leave out --runs, or compare with --seeds 1"
        )
    for planned in plan:  # every given folder is checked before the first model trains
        if planned.name in config.runs:
            _check_reused(planned, Path(config.runs[planned.name]))
    shape = tuple(test_set.batch(torch.arange(1))["images"].shape[1:])
    for spec in config.restorations_for(shape):  # section 10's degradations must fit: say so before training
        try:
            degradation_from_spec(spec, 1, shape[1:]).check((1, *shape))
        except ConfigError as exc:
            raise ConfigError(f"--restore-specs {spec} on {config.data}'s images: {exc}") from None
    peers = peer_plan(config, plan)
    for planned in plan:  # a text-conditioned model needs captions: say so before the first model trains
        if planned.model.get("conditioning.kind") == "text":
            check_captions_available(train_set, f"aediff compare's {planned.name} model (text-conditioned)")
    _clear_old_runs(plan, config, out, replace_runs)
    return train_set, test_set, plan, peers


def _train_all(plan, config: CompareConfig, out: Path, meter: Progress, log):
    """Train (or take from ``config.runs``) every model for every training seed. Returns ({seed: {model
    name: run folder}}, {"NAME" or "NAME@seed-S": training seconds})."""
    runs: dict[int, dict[str, Path]] = {s: {} for s in config.training_seeds}
    seconds: dict[str, float] = {}
    for name, folder in config.runs.items():
        runs[config.seed][name] = Path(folder)
    for seed, planned in _to_train(plan, config):
        label = planned.name if config.seeds == 1 or planned.judge else f"{planned.name}@seed-{seed}"
        begun = meter.start(f"training {label}")
        runs[seed][planned.name] = folder = run_folder(out, planned, seed, config)
        steps = _train_model(planned, config, folder, runs[seed], seed)
        seconds[label] = time.perf_counter() - begun
        meter.finish("train", begun, steps)
        if log:
            log(f"trained {label} in {seconds[label]:.0f} s")
    judge = next((p.name for p in plan if p.judge), None)
    for seed in config.training_seeds:  # the judge measures every seed's models
        if judge is not None:
            runs[seed][judge] = runs[config.seed][judge]
        runs[seed] = {p.name: runs[seed][p.name] for p in plan}  # plan order
    return runs, seconds


def _meta(config, command, started, runs, train_seconds, eval_seconds) -> ReportMeta:
    return ReportMeta(
        data=config.data,
        budget_minutes=config.budget.minutes,
        max_steps=config.max_steps,
        date=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        aediff=aediff.__version__,
        torch=torch.__version__,
        python=platform.python_version(),
        machine=platform.machine(),
        cpu=cpu_model(),
        threads=torch.get_num_threads(),
        device=str(default_device()),
        wall_seconds=time.perf_counter() - started,
        config=_jsonable(dataclasses.asdict(config)),
        runs={k: str(v) for k, v in runs.items()},
        train_wall_seconds=train_seconds,
        train_seconds=sum(train_seconds.values()),
        eval_seconds=eval_seconds,
        command=command,
        budget_steps=config.budget.steps,
        family_steps=dict(config.family_steps),
        snapshots=list(config.snapshots),
    )


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))
