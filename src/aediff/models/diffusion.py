"""Pixel-space diffusion: a denoising autoencoder conditioned on the noise level (Ho et al. 2020;
Karras et al. 2022). One set of parameters handles every noise level.

The pieces stay separate and swappable, as in NVlabs/edm: the network (``UNet``), the parameterization
wrapper that makes it a denoiser D(x, sigma) (``aediff.diffusion.parameterization``), the noise schedule
that says which sigmas training visits (``aediff.diffusion.schedules``), the loss (``diffusion_loss``
below) and the samplers (``aediff.diffusion.samplers``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from aediff.diffusion.parameterization import Denoiser, x0_loss_weight
from aediff.diffusion.samplers import SAMPLERS
from aediff.diffusion.schedules import NoiseSchedule, discrete_timesteps, karras_sigmas
from aediff.errors import ConfigError
from aediff.models.registry import register_model
from aediff.models.unet import UNet, UNetConfig


@dataclass
class DiffusionConfig(UNetConfig):
    schedule: Literal["linear", "cosine", "sigmoid", "edm"] = "edm"  # training noise levels (see schedules.py)
    num_train_steps: int = 1000  # T of the discrete schedules
    parameterization: Literal["eps", "x0", "v", "edm"] = "edm"  # what the network predicts
    sigma_data: float = 0.5  # edm: standard deviation of the data, in [-1, 1] pixel units
    loss_weighting: Literal["uniform", "min_snr"] = "uniform"  # uniform in the network's own target, or min-SNR
    min_snr_gamma: float = 5.0  # min_snr: weight on ||D - x0||^2 is min(1 / sigma^2, gamma) (Hang et al. 2023)
    p_mean: float = -1.2  # edm: mean of ln(sigma) in training
    p_std: float = 1.2  # edm: std of ln(sigma) in training
    sigma_min: float = 0.002  # edm: smallest sampling sigma
    sigma_max: float = 80.0  # edm: largest sampling sigma
    sampler: Literal["ddpm", "ddim", "euler", "heun", "dpm++"] = "dpm++"  # default sampler
    sampling_steps: int = 20  # default steps
    clip_denoised: bool = True  # clamp each x0 estimate to [-1, 1] while sampling


def diffusion_loss(denoiser: nn.Module, x0: torch.Tensor, schedule: NoiseSchedule, weighting: str = "uniform",
                   min_snr_gamma: float = 5.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted denoising loss E_sigma,eps [ w(sigma) ||D(x0 + sigma eps, sigma) - x0||^2 ].

    x0: [N, C, S, S] in [-1, 1]. Returns (scalar loss, the sigmas drawn [N]).
    """
    sigma = schedule.sample_training_sigmas(len(x0), x0.device)
    noisy = x0 + sigma[:, None, None, None] * torch.randn_like(x0)
    error = (denoiser(noisy, sigma) - x0).pow(2).flatten(1).mean(1)
    if weighting == "uniform":
        weight = x0_loss_weight(denoiser.parameterization, sigma, denoiser.sigma_data)
    else:
        weight = (1 / sigma**2).clamp(max=min_snr_gamma)
    return (weight * error).mean(), sigma


@register_model
class DiffusionModel(nn.Module):
    """x: [N, C, S, S] in [-1, 1]. ``sample(n)`` generates; ``denoise(x, sigma)`` removes noise of level sigma."""

    family = "diffusion"
    config_class = DiffusionConfig

    def __init__(self, config: DiffusionConfig):
        super().__init__()
        self.config = config
        self.denoiser = Denoiser(UNet(config), config.parameterization, config.sigma_data)
        self.schedule = NoiseSchedule(config.schedule, config.num_train_steps, config.sigma_min, config.sigma_max,
                                      config.p_mean, config.p_std)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def forward(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        loss, _ = diffusion_loss(self.denoiser, batch["images"], self.schedule, self.config.loss_weighting,
                                 self.config.min_snr_gamma)
        return loss, {}

    def predict_x0(self, x: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        """D(x, sigma): the model's estimate of the clean image, optionally clamped to [-1, 1]."""
        denoised = self.denoiser(x, torch.as_tensor(sigma, device=x.device, dtype=x.dtype))
        return denoised.clamp(-1, 1) if self.config.clip_denoised else denoised

    def sampling_sigmas(self, steps: int, sampler: str) -> torch.Tensor:
        """The noise levels a sampler walks: for DDPM / DDIM the schedule's own discrete levels at evenly
        spaced timesteps ("trailing"); otherwise Karras et al.'s rho = 7 spacing. [steps + 1], ending in 0."""
        if steps < 1:
            raise ConfigError(f"steps must be at least 1, got {steps}")
        if sampler in ("ddpm", "ddim") and self.schedule.discrete:
            t = discrete_timesteps(self.schedule.num_steps, steps)
            sigmas = torch.cat([self.schedule.sigmas[t], torch.zeros(1, dtype=torch.float64)])
        else:
            low, high = self.schedule.sigma_range
            sigmas = karras_sigmas(steps, low, high)
        return sigmas.float().to(self.device)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, sampler: str | None = None,
               steps: int | None = None, callback: Any = None, **options: Any) -> torch.Tensor:
        """n images [n, C, S, S] in [-1, 1]. ``callback`` receives every step's x and x0 estimate."""
        sampler = sampler or self.config.sampler
        if sampler not in SAMPLERS:
            raise ConfigError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
        sigmas = self.sampling_sigmas(steps or self.config.sampling_steps, sampler)
        c, s = self.config.image_channels, self.config.image_size
        x = sigmas[0] * torch.randn((n, c, s, s), device=self.device, generator=generator)
        out = SAMPLERS[sampler](self.predict_x0, x, sigmas, callback=callback, generator=generator, **options)
        return out.clamp(-1, 1)

    @torch.no_grad()
    def denoise(self, x: torch.Tensor, sigma: float | None = None, steps: int = 1) -> torch.Tensor:
        """Remove Gaussian noise of level ``sigma`` (in [-1, 1] pixel units) from x = x0 + sigma * eps.

        steps = 1: the single-step estimate D(x, sigma). steps > 1: run the default sampler from sigma
        down to 0 over ``steps`` noise levels (deterministic for euler / heun / dpm++).
        """
        if sigma is None:
            raise ConfigError("a diffusion model must be told the noise level: denoise(x, sigma=...)")
        if steps <= 1:
            return self.predict_x0(x, sigma)
        low, _ = self.schedule.sigma_range
        sigmas = karras_sigmas(steps, min(low, sigma), sigma).float().to(x.device)
        sampler = self.config.sampler if self.config.sampler in ("euler", "heun", "dpm++") else "dpm++"
        return SAMPLERS[sampler](self.predict_x0, x, sigmas).clamp(-1, 1)

    @torch.no_grad()
    def preview(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Samples for TensorBoard (fixed seed, so they can be compared across steps)."""
        return {"samples": self.sample(16, torch.Generator(self.device).manual_seed(0))}
