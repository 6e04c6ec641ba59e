"""Distillation: a diffusion model that samples in a few steps, by progressive distillation (Salimans & Ho 2022)
or consistency distillation (Song et al. 2023).

Progressive distillation:

A student starts as a copy of the teacher and learns to take in ONE deterministic step what the teacher
takes in TWO; then it becomes the teacher and the number of steps halves again, until ``steps`` remain.
aediff's deterministic step is Euler's on the probability-flow ODE in the variance-exploding view (DDIM with
eta = 0): from x at sigma to sigma', x' = D + (sigma' / sigma) (x - D), where D = D(x, sigma) is the x0
estimate. Given the teacher's two steps x -> x_mid -> x'' over sigma -> sigma_mid -> sigma', the student's
target is the x0 estimate whose single step lands on x'':

    D_target = (x'' - (sigma' / sigma) x) / (1 - sigma' / sigma)        (= x'' when sigma' = 0)

trained with the squared error weighted by max(1, 1 / sigma^2) ("truncated SNR" weighting in x0 space: the
error of a step is the x0 error scaled by how far the step goes).

The grids nest: the final student walks aediff's own Karras grid of ``steps`` steps (so the distilled run
samples with `euler` and ``steps`` like any run), and each teacher's grid splits every interval of its
student's at the midpoint in sigma^(1/rho) (Karras' rho = 7 spacing: the grid of 2n steps is the grid of n
with its midpoints). The last interval (sigma_min -> 0) splits at sigma_min / 2^rho.

The published recipe, aediff's default: the student starts from the teacher, the learning rate decays linearly
to 0 within each halving, and the student itself (no EMA of it, ``ema_decay = 0``) becomes the next teacher.

Consistency distillation: a student f(x, sigma) learns to map every point of a probability-flow ODE trajectory
to the same end. On the Karras grid of ``teacher_steps`` levels, a pair of neighbours sigma_hi > sigma_lo is drawn,
x_hi = x0 + sigma_hi z, the teacher takes one Heun step to x_lo, and the loss is ||f(x_hi, sigma_hi) -
f_target(x_lo, sigma_lo)||^2 where f_target is an EMA of the student (``target_decay``, the paper's mu) that is
also the result. f(x, sigma) = c_skip x + (1 - c_skip) D(x, sigma) with c_skip = (sigma_min / sigma)^2 holds the
boundary condition f(x, sigma_min) = x and leaves D alone at every level a sampler visits (c_skip < 0.01 above
10 sigma_min), so the student samples with its own denoiser: multistep consistency sampling (``consistency``).
"""

from __future__ import annotations

import copy
import functools
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

import torch
from torch import nn

from aediff import runs
from aediff.config import bounded, check_ranges, config_to_dict
from aediff.diffusion.samplers import SamplerOptions
from aediff.diffusion.schedules import karras_sigmas
from aediff.errors import ConfigError
from aediff.models import Capability, Model
from aediff.modes import DistillMethodName as DistillMethod
from aediff.modes import SamplerName

RHO = 7.0  # Karras et al.'s spacing exponent, as aediff.diffusion.schedules.karras_sigmas


@dataclass
class DistillConfig:
    """The recipe of ``distill`` (module docstring). Progressive: from ``teacher_steps`` down to ``steps`` (a
    power of two apart), ``iterations`` per halving. Consistency: ``teacher_steps`` levels of the Karras grid the
    teacher steps between, ``iterations`` in all, sampled in ``steps`` steps. Ranges are declared with each field
    (``aediff.config.bounded``) and checked when the config is built."""

    steps: int = bounded(4, 1, 1024)  # sampling steps of the final student (network evaluations per image)
    teacher_steps: int = bounded(32, 2, 4096)  # the grid the original model is distilled on
    iterations: int = bounded(500, 1)  # optimizer steps per round (progressive) or in all (consistency)
    max_minutes: float | None = bounded(None, 0, low_open=True)  # instead: this much time, shared by the rounds
    batch_size: int = bounded(64, 1, 65536)
    lr: float = bounded(1e-4, 0, 1, low_open=True, high_open=True)  # AdamW, after a 20-step warm-up per round
    lr_decay: bool = True  # linearly to 0 within each round (the published recipe); False: constant
    ema_decay: float = bounded(0.0, 0, 1, high_open=True)  # progressive: the student's EMA (0: the student itself)
    method: DistillMethod = "progressive"
    target_decay: float = bounded(0.95, 0, 1, high_open=True)  # consistency: the target network's EMA (mu)
    # a class-conditioned teacher is followed at this classifier-free guidance scale, so that the student draws
    # guided samples in one network call per step (Meng et al. 2023, at one scale); None: the teacher's default
    guidance: float | None = bounded(None, 0, 20)
    seed: int = bounded(0, 0, 2**63 - 1)
    history: list[dict[str, Any]] = field(default_factory=list)  # filled in: one entry per round

    def __post_init__(self) -> None:
        check_ranges(self)
        if self.method not in get_args(DistillMethod):
            raise ConfigError(f"distill method {self.method!r}: choose {' or '.join(get_args(DistillMethod))}")
        if self.method == "consistency":
            return
        ratio = self.teacher_steps / self.steps
        if ratio < 2 or ratio != 2 ** round(math.log2(ratio)):
            raise ConfigError(
                f"distill teacher_steps ({self.teacher_steps}) must be steps ({self.steps}) times a power of two "
                f"(2, 4, 8, ...), e.g. --steps {self.steps} --teacher-steps {self.steps * 8}"
            )

    @property
    def rounds(self) -> int:
        return 1 if self.method == "consistency" else round(math.log2(self.teacher_steps / self.steps))

    @property
    def sampler(self) -> SamplerName:
        """The sampler the student samples with."""
        return "consistency" if self.method == "consistency" else "euler"


def refine(sigmas: torch.Tensor) -> torch.Tensor:
    """A grid [n + 1] ending in 0 -> the grid of 2n steps [2n + 1] that holds it: each interval split at its
    midpoint in sigma^(1/rho) (module docstring). float64."""
    sigmas = sigmas.double()
    roots = sigmas ** (1 / RHO)
    middles = ((roots[:-1] + roots[1:]) / 2) ** RHO
    return torch.cat([torch.stack([sigmas[:-1], middles], dim=1).flatten(), sigmas[-1:]])


def euler_step(x: torch.Tensor, denoised: torch.Tensor, sigma: torch.Tensor, sigma_next: torch.Tensor) -> torch.Tensor:
    """One deterministic step from sigma to sigma_next ([N, 1, 1, 1] each): D + (sigma_next / sigma)(x - D)."""
    return denoised + (sigma_next / sigma) * (x - denoised)


def student_target(
    teacher: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    sigma: torch.Tensor,
    sigma_mid: torch.Tensor,
    sigma_next: torch.Tensor,
) -> torch.Tensor:
    """The x0 estimate whose one step from sigma lands where the teacher's two steps land ([N, ...])."""
    x_mid = euler_step(x, teacher(x, sigma), sigma, sigma_mid)
    x_next = euler_step(x_mid, teacher(x_mid, sigma_mid), sigma_mid, sigma_next)
    ratio = sigma_next / sigma
    return (x_next - ratio * x) / (1 - ratio)


def _conditioned(model: Model, labels: torch.Tensor | None) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """D(x, sigma [N]) of ``model`` with class labels (None: unconditional), unclamped and not guided."""
    condition = {} if labels is None else {"class_labels": labels}

    def denoise(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return model.sampling_network()(x, sigma.flatten().to(x.dtype), **condition)

    return denoise


def _labels(model: Model, batch: dict[str, Any], generator: torch.Generator) -> torch.Tensor | None:
    """A class-conditioned model is distilled on the batch's labels, the null class for a tenth (so the
    student can still be guided, as the teacher was trained)."""
    if not model.can(Capability.CLASS_CONDITION):
        return None
    labels = batch["labels"].to(model.device)
    null = torch.rand(len(labels), generator=generator) < 0.1
    return torch.where(null.to(labels.device), model.num_classes, labels)


def _batches(dataset: Any, batch_size: int, generator: torch.Generator):
    """Endless random batches of the training split (reshuffled every pass)."""
    while True:
        order = torch.randperm(len(dataset), generator=generator)
        for start in range(0, len(order) - batch_size + 1, batch_size):
            yield dataset.batch(order[start : start + batch_size])


class Round:
    """One round of training a student that starts as a copy of ``teacher``: the optimizer, its learning rate (a
    20-step warm-up, then constant or decaying linearly to 0 over the round), gradient clipping, and an EMA of the
    student where ``ema_decay`` > 0. A method gives the loss (``loss``)."""

    def __init__(self, teacher: Model, config: DistillConfig, ema_decay: float, guidance: float = 1.0):
        self.teacher, self.config, self.ema_decay = teacher.eval(), config, ema_decay
        self.guidance = guidance  # the scale the teacher is followed at (1: as it is; a student is, after round 1)
        self.student = copy.deepcopy(teacher).train().requires_grad_(True)
        self.ema = copy.deepcopy(teacher).eval().requires_grad_(False) if ema_decay > 0 else None
        self.optimizer = torch.optim.AdamW(self.student.parameters(), lr=config.lr, weight_decay=0.0)

    @property
    def steps(self) -> int:
        """The student's sampling steps."""
        raise NotImplementedError

    def loss(self, images: torch.Tensor, labels: torch.Tensor | None, generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    def step(
        self, images: torch.Tensor, labels: torch.Tensor | None, generator: torch.Generator, i: int, progress: float
    ) -> float:
        """One optimizer step at iteration i, ``progress`` in [0, 1] through the round; returns the loss."""
        decay = 1 - progress if self.config.lr_decay else 1.0
        for group in self.optimizer.param_groups:
            group["lr"] = self.config.lr * min(1.0, (i + 1) / 20) * decay  # a short warm-up: the student starts trained
        loss = self.loss(images, labels, generator)
        if not torch.isfinite(loss):
            raise ConfigError(f"the distillation loss became {loss.item()} at iteration {i}; lower --lr")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(self.student.parameters(), 1.0)
        self.optimizer.step()
        if self.ema is not None:
            with torch.no_grad():
                rate = 1 - min(self.ema_decay, (1 + i) / (10 + i))
                for e, s in zip(self.ema.parameters(), self.student.parameters(), strict=True):
                    e.lerp_(s, rate)
        return loss.item()

    def result(self) -> Model:
        """What the round gives: the EMA where kept, else the student."""
        return (self.ema if self.ema is not None else self.student).eval()

    def _teacher(self, labels: torch.Tensor | None) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """The teacher's D(x, sigma [N, 1, ...]) (clamped as it samples) with ``labels``, guided at
        the round's guidance w: D_null + w (D_cond - D_null), both in one batched call."""
        w = self.guidance
        if labels is None or w == 1:
            condition = {} if labels is None else {"class_labels": labels}
            return lambda x, sigma: self.teacher.predict_x0(x, sigma.flatten(), **condition)
        both = torch.cat([labels, torch.full_like(labels, self.teacher.num_classes)])

        def guided(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
            levels = sigma.flatten().to(x.dtype)
            d_cond, d_null = self.teacher.denoiser(
                torch.cat([x, x]), torch.cat([levels, levels]), class_labels=both
            ).chunk(2)
            denoised = d_null + w * (d_cond - d_null)
            return denoised.clamp(-1, 1) if self.teacher.clip_denoised else denoised

        return guided


def distillation_guidance(teacher: Model, config: DistillConfig) -> float:
    """The guidance scale the student learns to follow: 1 (none) for a model without classes."""
    if not teacher.can(Capability.CLASS_CONDITION):
        return 1.0
    return teacher.default_guidance if config.guidance is None else config.guidance


class ProgressiveRound(Round):
    """One halving: a student learns to take in one step the teacher's two, on the student's ``grid``."""

    def __init__(self, teacher: Model, grid: torch.Tensor, config: DistillConfig, guidance: float = 1.0):
        super().__init__(teacher, config, config.ema_decay, guidance)
        self.grid = grid.to(teacher.device)  # [n + 1], the student's noise levels, ending in 0
        self.middles = refine(grid)[1::2].to(teacher.device)  # [n], where the teacher's two steps meet

    @property
    def steps(self) -> int:
        return len(self.grid) - 1

    def loss(self, images: torch.Tensor, labels: torch.Tensor | None, generator: torch.Generator) -> torch.Tensor:
        """The weighted squared error of the student's x0 estimate against its target, on one batch."""
        x0 = self.teacher.diffusion_input(images)
        i = torch.randint(0, len(self.middles), (len(x0),), generator=generator).to(x0.device)
        shape = (-1,) + (1,) * (x0.ndim - 1)
        sigma, middle, following = (t[i].float().view(shape) for t in (self.grid, self.middles, self.grid[1:]))
        noise = torch.randn(x0.shape, generator=generator).to(x0.device)
        x = x0 + sigma * noise
        with torch.no_grad():
            target = student_target(self._teacher(labels), x, sigma, middle, following)
        predicted = _conditioned(self.student, labels)(x, sigma)
        weight = sigma.pow(-2).clamp_min(1.0)  # max(SNR, 1), SNR = 1 / sigma^2 in the variance-exploding view
        return (weight * (predicted - target) ** 2).mean()


def heun_step(denoise, x: torch.Tensor, sigma: torch.Tensor, sigma_next: torch.Tensor) -> torch.Tensor:
    """One Heun step of the probability-flow ODE from sigma to sigma_next > 0 ([N, 1, ...] each)."""
    slope = (x - denoise(x, sigma)) / sigma
    x_euler = x + (sigma_next - sigma) * slope
    return x + (sigma_next - sigma) * (slope + (x_euler - denoise(x_euler, sigma_next)) / sigma_next) / 2


def consistency_function(denoise, x: torch.Tensor, sigma: torch.Tensor, sigma_min: float) -> torch.Tensor:
    """f(x, sigma) = c_skip x + (1 - c_skip) D(x, sigma), c_skip = (sigma_min / sigma)^2: f(x, sigma_min) = x."""
    c_skip = (sigma_min / sigma) ** 2
    return c_skip * x + (1 - c_skip) * denoise(x, sigma)


class ConsistencyRound(Round):
    """Consistency distillation (module docstring) on the Karras grid of ``config.teacher_steps`` levels."""

    def __init__(self, teacher: Model, config: DistillConfig, guidance: float = 1.0):
        super().__init__(teacher, config, config.target_decay, guidance)
        low, high = teacher.karras_range
        self.sigma_min = low
        self.grid = karras_sigmas(config.teacher_steps, low, high)[:-1].to(teacher.device)  # [N], decreasing

    @property
    def steps(self) -> int:
        return self.config.steps

    def loss(self, images: torch.Tensor, labels: torch.Tensor | None, generator: torch.Generator) -> torch.Tensor:
        """The squared distance between the student's f at x_hi and the target network's at the teacher's x_lo."""
        x0 = self.teacher.diffusion_input(images)
        n = torch.randint(0, len(self.grid) - 1, (len(x0),), generator=generator).to(x0.device)
        shape = (-1,) + (1,) * (x0.ndim - 1)
        high, low = self.grid[n].float().view(shape), self.grid[n + 1].float().view(shape)
        x_high = x0 + high * torch.randn(x0.shape, generator=generator).to(x0.device)
        with torch.no_grad():
            x_low = heun_step(self._teacher(labels), x_high, high, low)
            target = consistency_function(_conditioned(self.ema, labels), x_low, low, self.sigma_min)
        predicted = consistency_function(_conditioned(self.student, labels), x_high, high, self.sigma_min)
        return ((predicted - target) ** 2).mean()


def distill(
    model: Model,
    dataset: Any,
    config: DistillConfig,
    report: Callable[[str], None] | None = None,
    progress: bool = False,
    on_round: Callable[[int, Model], None] | None = None,
) -> Model:
    """The student of ``model`` that samples in ``config.steps`` Euler steps on the model's own Karras grid
    (a new model; ``model`` is unchanged). ``dataset``: the training split; ``report`` gets one line per
    round; ``progress``: a progress bar per round; ``on_round(steps, student)`` gets each round's result (a
    progressive distillation's intermediate students). ``config.history`` receives each round's steps,
    iterations, seconds and final loss."""
    model.require(Capability.DIFFUSION_SAMPLER, "distillation")
    if model.can(Capability.TEXT_CONDITION):
        raise ConfigError("distillation of a text-conditioned model is not supported yet; distil an "
                          "unconditional or class-conditioned one")  # fmt: skip
    generator = torch.Generator().manual_seed(config.seed)
    batches = _batches(dataset, config.batch_size, generator)
    if config.method == "consistency":
        rounds: list[Callable[..., Round]] = [functools.partial(ConsistencyRound, config=config)]
    else:
        grids = [model.sampling_sigmas(model.sampler_plan(SamplerOptions(sampler="euler", steps=config.steps)))]
        for _ in range(config.rounds - 1):
            grids.append(refine(grids[-1]))
        rounds = [functools.partial(ProgressiveRound, grid=grid, config=config) for grid in reversed(grids)]
    teacher, guidance = model, distillation_guidance(model, config)
    student_guidance = 1.0 if guidance != 1 else None  # a student of the guided teacher samples unguided
    for make_round in rounds:  # progressive: the most steps first
        round_ = make_round(teacher, guidance=guidance)
        teacher = _run_round(round_, batches, generator, config, report, progress)
        teacher.config = model.config_with_sampling(config.sampler, round_.steps, student_guidance)
        guidance = 1.0  # the next round's teacher, this student, has learnt the guided denoiser already
        if on_round is not None:
            on_round(round_.steps, teacher)
    return teacher


def _run_round(round_: Round, batches, generator, config: DistillConfig, report, progress: bool) -> Model:
    """Train one round for its iterations or its share of the time; returns the student's EMA."""
    from tqdm.auto import tqdm

    started, seconds = time.perf_counter(), None
    if config.max_minutes is not None:
        seconds = config.max_minutes * 60 / config.rounds
    steps = round_.steps
    teacher_steps = config.teacher_steps if config.method == "consistency" else 2 * steps
    name = f"{config.method} {teacher_steps} -> {steps}"
    bar = tqdm(total=None if seconds else config.iterations, desc=name, unit="it", disable=not progress)

    def done() -> float:
        """How far through the round, in [0, 1]: by iterations, or by the round's share of the time."""
        return min(1.0, i / config.iterations if seconds is None else (time.perf_counter() - started) / seconds)

    i, loss = 0, math.nan
    while done() < 1:
        batch = next(batches)
        images = batch["images"].to(round_.teacher.device)
        loss = round_.step(images, _labels(round_.teacher, batch, generator), generator, i, done())
        i += 1
        bar.update()
        bar.set_postfix(loss=f"{loss:.4g}", refresh=False)
    bar.close()
    entry = {"method": config.method, "teacher_steps": teacher_steps, "steps": steps, "iterations": i,
             "seconds": time.perf_counter() - started, "final_loss": loss}  # fmt: skip
    config.history.append(entry)
    if report is not None:
        report(f"{name} steps: {i} iterations in {entry['seconds']:.0f} s, loss {loss:.4g}")
    return round_.result()


def distill_run(
    run: Any, out: str | Path, dataset: Any, config: DistillConfig, report=None, progress: bool = False
) -> Path:
    """Distil the loaded run ``run`` (``aediff.load``) on ``dataset`` into the new run folder ``out``: the
    student's weights, the teacher's config with sampling set to ``config.sampler`` and ``config.steps`` steps, and
    a "distillation" entry (the teacher, the recipe, every round). Holds ``out``'s writer lock."""
    started = time.perf_counter()
    student = distill(run.model, dataset, config, report, progress)
    model_config = student.config  # the teacher's, with the student's sampler, steps and guidance
    iterations = sum(entry["iterations"] for entry in config.history)
    seconds = time.perf_counter() - started
    recipe = {k: v for k, v in config_to_dict(config).items() if k != "history"}
    record = {"teacher": str(run.path), "teacher_weights": run.weights, **recipe, "rounds": config.history}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with runs.writer_lock(out):
        runs.write_run_config(out, {
            "family": run.family,
            "model": config_to_dict(model_config),
            "training": config_to_dict(run.training),
            "data": config_to_dict(run.data) if run.data is not None else None,
            "distillation": record,
        })  # fmt: skip
        state = {"step": iterations, "images_seen": iterations * config.batch_size,
                 "train_seconds": seconds, "elapsed_seconds": seconds}  # fmt: skip
        runs.write_files_atomically(out, {
            runs.MODEL_FILE: runs.tensors_to_bytes(student.state_dict(), {"step": str(iterations)}),
            runs.STATE_FILE: json.dumps(state, indent=2).encode(),
        })  # fmt: skip
    return out
