"""diffusers' schedulers as aediff samplers: ``--sampler diffusers:NAME`` walks aediff's denoiser with diffusers'
own scheduler, in process, for pixel and latent diffusion, with guidance (the denoiser is the model's guided one).

The scheduler is driven as a diffusers pipeline drives a UNet, with one conversion at each call:

- the scheduler is built on the model's noise levels (``NoiseGrid``): a discrete schedule's own betas, or for a
  continuous (edm) schedule 1000 levels log-uniform in sigma over the range aediff's samplers walk; where the
  scheduler can space its steps as Karras et al. do, it does so over that same range (``karras``), as
  aediff's euler / heun / dpm++ do, so a comparison is of methods, not of spacings;
- the model input ``scale_model_input(state, t)`` is the variance-preserving state x_vp for every scheduler
  (variance-exploding schedulers divide by sqrt(1 + sigma^2) there, the others keep x_vp), so the denoiser's
  x = x_vp * sqrt(1 + sigma^2) at the scheduler's noise level sigma of that call (``aligned_sigmas``: its own
  ``sigmas[i]``, exact where the timesteps are rounded to integers; otherwise the grid's sigma at the timestep,
  interpolated in log sigma as diffusers' ``_sigma_to_t`` is);
- the model output is what ``step`` takes (``output``): the x0 estimate ("sample"), the noise
  (x - x0) / sigma ("epsilon"), or for the EDM schedulers the raw network output that their preconditioning
  c_skip x + c_out F turns back into x0 ("edm", inverted with the scheduler's own ``precondition_outputs``).

Sampling starts where aediff's samplers start, x = sigma_0 * noise at the scheduler's first level, and ends in
the state at the scheduler's last level (0 for most). The trajectory callback gets aediff's frame
({"i", "sigma", "x", "denoised"}, samplers.py) at every network evaluation.

Not offered, and why (``UNFIT``): schedulers for other processes (flow matching, consistency-model
parameterizations, discrete tokens, video-specific or protein schedules), inversion schedulers (image to noise),
and those that need an optional package aediff does not install (torchsde).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from aediff.errors import ConfigError

PREFIX = "diffusers:"  # --sampler diffusers:NAME
GRID_LEVELS = 1000  # levels of the grid a continuous schedule is given to a betas-based scheduler
Output = Literal["sample", "epsilon", "edm"]
Denoise = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class NoiseGrid:
    """The model's noise levels as a scheduler is built on them.

    alphas_cumprod: abar_t [T] float64 of a discrete schedule (t = 0 least noisy), or None for a continuous one;
    sigma_min, sigma_max: the range aediff's continuous samplers walk (``DiffusionModel.karras_range``).
    """

    alphas_cumprod: torch.Tensor | None
    sigma_min: float
    sigma_max: float

    @property
    def discrete(self) -> bool:
        return self.alphas_cumprod is not None

    def training_alphas_cumprod(self) -> torch.Tensor:
        """abar [T] a betas-based scheduler is given: the schedule's own, or GRID_LEVELS levels log-uniform in
        sigma from sigma_min to sigma_max for a continuous schedule."""
        if self.alphas_cumprod is not None:
            return self.alphas_cumprod.double()
        sigmas = torch.logspace(
            math.log10(self.sigma_min), math.log10(self.sigma_max), GRID_LEVELS, dtype=torch.float64
        )
        return 1 / (1 + sigmas**2)

    def log_sigmas(self) -> np.ndarray:
        """ln sigma at each whole timestep of the training grid [T] (float64)."""
        abar = self.training_alphas_cumprod()
        return (((1 - abar) / abar).sqrt()).log().numpy()


def sigma_at(log_sigmas: np.ndarray, timestep: torch.Tensor | float) -> float:
    """The noise level at a (fractional) timestep of a grid with ``log_sigmas`` [T]: log sigma interpolated linearly
    between whole timesteps, the inverse of diffusers' ``_sigma_to_t``."""
    return float(np.exp(np.interp(float(timestep), np.arange(len(log_sigmas)), log_sigmas)))


def betas_from_alphas_cumprod(alphas_cumprod: torch.Tensor) -> list[float]:
    """The betas whose cumulative product of (1 - beta) is ``alphas_cumprod`` [T] (float64)."""
    previous = torch.cat([torch.ones(1, dtype=torch.float64), alphas_cumprod[:-1]])
    return (1 - alphas_cumprod / previous).tolist()


def _one_per_step(steps: int) -> int:
    return steps


def _two_per_step_but_one(steps: int) -> int:
    # Heun-type second order: two evaluations per step but the first (diffusers interleaves the timesteps).
    return 2 * steps - 1


def _one_more(steps: int) -> int:
    # PLMS without its Runge-Kutta warm-up evaluates its second timestep twice.
    return steps + 1


@dataclass(frozen=True)
class SchedulerEntry:
    """One diffusers scheduler aediff drives, declared once (module docstring for the conversions).

    name: the diffusers class name (``--sampler diffusers:NAME``); output: what its ``step`` takes; discrete_only:
    its method is a discrete Markov chain on the schedule's own timesteps, refused on a continuous (edm) run;
    karras: built with Karras spacing over the grid's range; native_sigmas: built from sigma_min / sigma_max alone
    (EDM schedulers, no betas); aligned_sigmas: ``sigmas[i]`` is the level of evaluation i; stochastic: its
    ``step`` draws fresh noise (the generator is passed to it); network_evaluations(steps) per sample;
    settings: the other constructor options aediff sets.
    """

    name: str
    output: Output = "sample"
    discrete_only: bool = False
    karras: bool = False
    native_sigmas: bool = False
    aligned_sigmas: bool = False
    stochastic: bool = False
    network_evaluations: Callable[[int], int] = field(default=_one_per_step, repr=False)
    settings: Mapping[str, Any] = field(default_factory=dict)

    @property
    def sampler_name(self) -> str:
        return PREFIX + self.name

    def scheduler_class(self) -> type:
        import diffusers

        return getattr(diffusers, self.name)

    def check(self, grid: NoiseGrid) -> None:
        """ConfigError when this scheduler needs discrete timesteps and ``grid`` has none."""
        if self.discrete_only and not grid.discrete:
            raise ConfigError(
                f"--sampler {self.sampler_name} needs a discrete schedule's timesteps and this run's schedule is "
                "continuous (edm); choose a scheduler that takes any noise level, such as "
                f"{PREFIX}EulerDiscreteScheduler or {PREFIX}DPMSolverMultistepScheduler, or one of aediff's samplers"
            )

    def build(self, grid: NoiseGrid) -> Any:
        """The scheduler on ``grid`` (``check`` first)."""
        self.check(grid)
        if self.native_sigmas:
            return self.scheduler_class()(sigma_min=grid.sigma_min, sigma_max=grid.sigma_max, **self.settings)
        abar = grid.training_alphas_cumprod()
        betas = betas_from_alphas_cumprod(abar)
        options = dict(num_train_timesteps=len(abar), trained_betas=betas, prediction_type=self.output)
        if self.output == "edm":
            raise AssertionError(f"{self.name}: 'edm' output is for native_sigmas schedulers")
        scheduler = self.scheduler_class()(**options, **{**self._spacing(), **self.settings})
        if self.karras:
            # diffusers takes the Karras ends from config.sigma_min / sigma_max where a config has them; the
            # grid's float32 cumulative product would misplace the smallest by up to 1e-4.
            scheduler.register_to_config(sigma_min=grid.sigma_min, sigma_max=grid.sigma_max)
        return scheduler

    def _spacing(self) -> dict[str, Any]:
        return {"use_karras_sigmas": True} if self.karras else {"timestep_spacing": "trailing"}


# Every scheduler aediff drives. The settings keep each scheduler's own method and defaults, except where aediff
# clamps x0 itself (clip_sample / thresholding off) and where a default would not reach sigma 0.
_KARRAS = dict(karras=True, aligned_sigmas=True)
_MULTISTEP = dict(final_sigmas_type="zero")
# sigma_data 1 makes their input scaling 1 / sqrt(1 + sigma^2), the variance-preserving state every scheduler gives
_EDM = dict(output="edm", native_sigmas=True, aligned_sigmas=True, settings=dict(sigma_data=1.0, **_MULTISTEP))
ENTRIES: tuple[SchedulerEntry, ...] = (
    SchedulerEntry("DDIMScheduler", discrete_only=True, settings=dict(clip_sample=False, set_alpha_to_one=True)),
    SchedulerEntry(
        "DDIMParallelScheduler", discrete_only=True, settings=dict(clip_sample=False, set_alpha_to_one=True)
    ),  # fmt: skip
    SchedulerEntry("DDPMScheduler", discrete_only=True, stochastic=True, settings=dict(clip_sample=False)),
    SchedulerEntry("DDPMParallelScheduler", discrete_only=True, stochastic=True, settings=dict(clip_sample=False)),
    # PLMS steps back from each timestep by T / steps, which only "leading" spacing keeps on the grid
    SchedulerEntry(
        "PNDMScheduler",
        output="epsilon",
        discrete_only=True,
        network_evaluations=_one_more,
        settings=dict(skip_prk_steps=True, timestep_spacing="leading", steps_offset=1),
    ),  # fmt: skip
    SchedulerEntry("LCMScheduler", discrete_only=True, stochastic=True, settings=dict(clip_sample=False)),
    SchedulerEntry("TCDScheduler", discrete_only=True, stochastic=True, settings=dict(clip_sample=False)),
    SchedulerEntry("EulerDiscreteScheduler", **_KARRAS, settings=dict(final_sigmas_type="zero")),
    SchedulerEntry("EulerAncestralDiscreteScheduler", output="epsilon", stochastic=True),
    SchedulerEntry("HeunDiscreteScheduler", **_KARRAS, network_evaluations=_two_per_step_but_one),
    SchedulerEntry("KDPM2DiscreteScheduler", output="epsilon", karras=True, network_evaluations=_two_per_step_but_one),
    SchedulerEntry(
        "KDPM2AncestralDiscreteScheduler",
        output="epsilon",
        karras=True,
        stochastic=True,
        network_evaluations=_two_per_step_but_one,
    ),  # fmt: skip
    SchedulerEntry("LMSDiscreteScheduler", **_KARRAS),
    SchedulerEntry("DPMSolverMultistepScheduler", **_KARRAS, settings=dict(**_MULTISTEP, lower_order_final=False)),
    SchedulerEntry("DPMSolverSinglestepScheduler", **_KARRAS, settings=dict(**_MULTISTEP, lower_order_final=True)),
    SchedulerEntry("DEISMultistepScheduler", **_KARRAS, settings=dict(lower_order_final=True)),
    SchedulerEntry("UniPCMultistepScheduler", **_KARRAS, settings=dict(**_MULTISTEP, lower_order_final=True)),
    SchedulerEntry("SASolverScheduler", **_KARRAS, stochastic=True),
    SchedulerEntry("EDMEulerScheduler", **_EDM),
    SchedulerEntry("EDMDPMSolverMultistepScheduler", **_EDM),
)
SCHEDULERS: dict[str, SchedulerEntry] = {entry.sampler_name: entry for entry in ENTRIES}

# diffusers schedulers aediff does not drive, and why (listed by `aediff sample --help` and in docs/diffusion.md).
UNFIT: dict[str, str] = {
    "IPNDMScheduler": "walks its own score-SDE timesteps in [0, 1], not a model's noise schedule",
    "ScoreSdeVeScheduler": "a predictor-corrector for score models; its corrector is a second, separate step API",
    "KarrasVeScheduler": "deprecated by diffusers in favour of EulerDiscreteScheduler (offered)",
    "CMStochasticIterativeScheduler": "applies a consistency model's own c_skip / c_out to the network output",
    "SCMScheduler": "TrigFlow parameterization of continuous-time consistency models",
    "DPMSolverSDEScheduler": "needs torchsde, which aediff does not install",
    "CosineDPMSolverMultistepScheduler": "needs torchsde, which aediff does not install",
    "DDIMInverseScheduler": "inversion (image to noise), not sampling",
    "DPMSolverMultistepInverseScheduler": "inversion (image to noise), not sampling",
    "RePaintScheduler": "inpainting; aediff's own RePaint (aediff restore --method repaint) is tested equal to it",
    "UnCLIPScheduler": "UnCLIP's own variance schedule for its prior and decoder",
    "DDPMWuerstchenScheduler": "Wuerstchen's continuous cosine process, without a prediction type",
    "CogVideoXDDIMScheduler": "CogVideoX's video schedule (SNR shift, v-prediction)",
    "CogVideoXDPMScheduler": "CogVideoX's video schedule (SNR shift, v-prediction)",
    "FlowMatchEulerDiscreteScheduler": "flow matching: x_t = (1 - t) x0 + t noise and a velocity output",
    "FlowMatchHeunDiscreteScheduler": "flow matching",
    "FlowMatchLCMScheduler": "flow matching",
    "FlowMapEulerDiscreteScheduler": "flow maps",
    "LTXEulerAncestralRFScheduler": "rectified flow (LTX video)",
    "PiflowScheduler": "flow matching (pi-Flow)",
    "HeliosScheduler": "flow matching (Helios video)",
    "HeliosDMDScheduler": "flow matching (Helios video, distribution matching)",
    "MiniMaxH3Scheduler": "flow matching (MiniMax)",
    "RFD4ProteinaScheduler": "protein structure generation",
    "AmusedScheduler": "masked image tokens, not pixels or latents",
    "VQDiffusionScheduler": "discrete VQ tokens",
    "BlockRefinementScheduler": "discrete tokens",
    "EntropyBoundScheduler": "discrete tokens",
    "DiscreteDDIMScheduler": "discrete tokens (D3PM's uniform corruption)",
}


def _quiet_diffusers() -> None:
    """diffusers logs a warning when it adjusts a setting for a step count; aediff's plan already says what runs."""
    logging.getLogger("diffusers").setLevel(logging.ERROR)
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()


@dataclass
class _Walk:
    """A scheduler set for ``steps`` and the level of each of its network evaluations."""

    entry: SchedulerEntry
    grid: NoiseGrid
    steps: int

    def __post_init__(self) -> None:
        _quiet_diffusers()
        self.scheduler = self.entry.build(self.grid)
        self.scheduler.set_timesteps(self.steps)
        self.timesteps = list(self.scheduler.timesteps)
        self.log_sigmas = None if self.entry.aligned_sigmas else self.grid.log_sigmas()  # once, not per step

    def sigma(self, i: int) -> float:
        """The noise level of evaluation i (module docstring)."""
        if self.entry.aligned_sigmas:
            return float(self.scheduler.sigmas[i])
        return sigma_at(self.log_sigmas, self.timesteps[i])

    def levels(self) -> torch.Tensor:
        """The distinct levels visited, in order, then the final one: [k + 1] float64."""
        visited = [self.sigma(i) for i in range(len(self.timesteps))]
        distinct = [s for i, s in enumerate(visited) if i == 0 or s != visited[i - 1]]
        return torch.tensor([*distinct, self.final_sigma()], dtype=torch.float64)

    def final_sigma(self) -> float:
        """The level the last step lands on: the aligned schedulers' last sigma (0 as aediff configures them);
        the others step to the clean end of the chain (abar = 1, or the schedule's first level)."""
        return float(self.scheduler.sigmas[-1]) if self.entry.aligned_sigmas else 0.0

    def model_output(self, x: torch.Tensor, denoised: torch.Tensor, sigma: float) -> torch.Tensor:
        """What ``step`` takes for the x0 estimate ``denoised`` at x (variance-exploding) and sigma."""
        if self.entry.output == "sample":
            return denoised
        if self.entry.output == "epsilon":
            return (x - denoised) / sigma
        level = torch.tensor(sigma, dtype=torch.float64)
        skip = self.scheduler.precondition_outputs(x, torch.zeros_like(x), level)
        scale = self.scheduler.precondition_outputs(torch.zeros(()), torch.ones(()), level)
        return ((denoised - skip) / scale).to(x.dtype)


def scheduler_levels(entry: SchedulerEntry, grid: NoiseGrid, steps: int) -> torch.Tensor:
    """The noise levels ``entry`` walks for ``steps`` steps on ``grid``, decreasing, ending in its last level:
    [k + 1] float64 (k = steps for most; sigmas[0] scales the starting noise)."""
    return _Walk(entry, grid, steps).levels()


@torch.no_grad()
def sample_with_scheduler(
    entry: SchedulerEntry,
    grid: NoiseGrid,
    steps: int,
    denoiser: Denoise,
    x: torch.Tensor,
    callback: Callable[[dict[str, Any]], None] | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Walk ``entry``'s scheduler for ``steps`` steps from x = sigma_0 * noise [N, C, S, S] (sigma_0 =
    ``scheduler_levels(...)[0]``) and return the final state in aediff's variance-exploding view."""
    walk = _Walk(entry, grid, steps)
    scheduler = walk.scheduler
    first = walk.timesteps[0]
    unit = torch.ones((), dtype=torch.float64)
    # The state x_ve corresponds to: scale_model_input(state) * sqrt(1 + sigma^2) = x_ve.
    state = x / (float(scheduler.scale_model_input(unit, first)) * math.sqrt(1 + walk.sigma(0) ** 2))
    step_options = {"generator": generator} if entry.stochastic else {}
    for i, t in enumerate(walk.timesteps):
        sigma = walk.sigma(i)
        x_i = scheduler.scale_model_input(state, t) * math.sqrt(1 + sigma**2)
        denoised = denoiser(x_i, torch.tensor(sigma, dtype=x.dtype, device=x.device))
        if callback is not None:
            callback({"i": i, "sigma": sigma, "x": x_i, "denoised": denoised})
        output = walk.model_output(x_i, denoised, sigma).to(state.dtype)
        state = scheduler.step(output, t, state, return_dict=False, **step_options)[0]
    return state  # at the last level, where both views agree (sigma 0, or within 1e-4 of it)
