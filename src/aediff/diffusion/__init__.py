"""Diffusion's process pieces, separate from any network: noise schedules, parameterizations, samplers."""

from aediff.diffusion.parameterization import PARAMETERIZATIONS, Denoiser, preconditioning, x0_loss_weight
from aediff.diffusion.samplers import (
    SAMPLER_NAMES,
    SAMPLERS,
    SamplerOptions,
    SamplerSpec,
    ddim_step,
    ddpm_step,
    evaluations_per_sample,
    run_sampler,
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
    "NoiseSchedule",
    "SamplerName",
    "SamplerOptions",
    "SamplerSpec",
    "ddim_step",
    "ddpm_step",
    "discrete_timesteps",
    "evaluations_per_sample",
    "karras_sigmas",
    "preconditioning",
    "run_sampler",
    "sample_ddim",
    "sample_ddpm",
    "sample_dpmpp_2m",
    "sample_euler",
    "sample_heun",
    "x0_loss_weight",
]
