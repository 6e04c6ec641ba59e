"""Diffusion's process pieces, separate from any network: noise schedules, parameterizations, the loss, samplers."""

from aediff.diffusion.losses import DiffusionLoss, loss_weight
from aediff.diffusion.parameterization import PARAMETERIZATIONS, Denoiser, preconditioning, x0_loss_weight
from aediff.diffusion.samplers import (
    SAMPLER_NAMES,
    SAMPLERS,
    SamplerOptions,
    SamplerPlan,
    SamplerSpec,
    ddim_step,
    ddpm_step,
    run_sampler,
    sample_consistency,
    sample_ddim,
    sample_ddpm,
    sample_dpmpp_2m,
    sample_euler,
    sample_heun,
)
from aediff.diffusion.schedules import NoiseSchedule, discrete_timesteps, karras_sigmas
from aediff.modes import SamplerName

__all__ = [
    "PARAMETERIZATIONS",
    "SAMPLERS",
    "SAMPLER_NAMES",
    "Denoiser",
    "DiffusionLoss",
    "NoiseSchedule",
    "SamplerName",
    "SamplerOptions",
    "SamplerPlan",
    "SamplerSpec",
    "ddim_step",
    "ddpm_step",
    "discrete_timesteps",
    "karras_sigmas",
    "loss_weight",
    "preconditioning",
    "run_sampler",
    "sample_consistency",
    "sample_ddim",
    "sample_ddpm",
    "sample_dpmpp_2m",
    "sample_euler",
    "sample_heun",
    "x0_loss_weight",
]
