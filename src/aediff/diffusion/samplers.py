"""Samplers: plain functions of a denoiser and a list of noise levels (k-diffusion's convention).

Every sampler has the signature ``sampler(denoiser, x, sigmas, callback=None, generator=None, **options)``:
- denoiser(x, sigma) -> the x0 estimate (``aediff.diffusion.parameterization.Denoiser``);
- x: the starting point x = sigmas[0] * noise, [N, C, S, S] (variance-exploding view);
- sigmas: decreasing noise levels [n + 1], usually ending in 0;
- callback({"i", "sigma", "x", "denoised"}) after each network evaluation (trajectories come free).
It returns the final sample. The DDPM and DDIM steps are also given in DDPM's own variables
(``ddpm_step``, ``ddim_step``) so they can be checked against reference implementations.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

Denoise = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Callback = Callable[[dict[str, Any]], None] | None


# --- single steps in DDPM's variance-preserving variables --------------------------------------------
def ddim_step(x_t: torch.Tensor, eps: torch.Tensor, alpha_bar_t: torch.Tensor | float,
              alpha_bar_prev: torch.Tensor | float, eta: float = 0.0, noise: torch.Tensor | None = None
              ) -> torch.Tensor:
    """One DDIM step x_t -> x_prev (Song et al. 2021, eq. 12), given the predicted noise.

    x_prev = sqrt(abar_prev) x0 + sqrt(1 - abar_prev - s^2) eps + s z, with
    s = eta * sqrt((1 - abar_prev) / (1 - abar_t)) * sqrt(1 - abar_t / abar_prev); eta = 1 is DDPM.
    """
    alpha_bar_t, alpha_bar_prev = torch.as_tensor(alpha_bar_t), torch.as_tensor(alpha_bar_prev)
    x0 = (x_t - (1 - alpha_bar_t).sqrt() * eps) / alpha_bar_t.sqrt()
    std = eta * ((1 - alpha_bar_prev) / (1 - alpha_bar_t) * (1 - alpha_bar_t / alpha_bar_prev)).sqrt()
    x_prev = alpha_bar_prev.sqrt() * x0 + (1 - alpha_bar_prev - std**2).clamp_min(0).sqrt() * eps
    if eta > 0:
        x_prev = x_prev + std * (noise if noise is not None else torch.randn_like(x_t))
    return x_prev


def ddpm_step(x_t: torch.Tensor, eps: torch.Tensor, alpha_bar_t: torch.Tensor | float,
              alpha_bar_prev: torch.Tensor | float, noise: torch.Tensor | None = None) -> torch.Tensor:
    """One ancestral DDPM step x_t -> x_prev (Ho et al. 2020, eqs. 6-7), variance beta-tilde ("fixed small").

    With beta = 1 - abar_t / abar_prev (a strided step's effective beta):
    mean = sqrt(abar_prev) beta / (1 - abar_t) x0 + sqrt(1 - beta) (1 - abar_prev) / (1 - abar_t) x_t,
    variance = (1 - abar_prev) / (1 - abar_t) beta. No noise is added on the last step (abar_prev = 1).
    """
    alpha_bar_t, alpha_bar_prev = torch.as_tensor(alpha_bar_t), torch.as_tensor(alpha_bar_prev)
    beta = 1 - alpha_bar_t / alpha_bar_prev
    x0 = (x_t - (1 - alpha_bar_t).sqrt() * eps) / alpha_bar_t.sqrt()
    mean = (alpha_bar_prev.sqrt() * beta * x0 + (1 - beta).sqrt() * (1 - alpha_bar_prev) * x_t) / (1 - alpha_bar_t)
    variance = ((1 - alpha_bar_prev) / (1 - alpha_bar_t) * beta).clamp_min(1e-20)
    if float(alpha_bar_prev) < 1.0:
        mean = mean + variance.sqrt() * (noise if noise is not None else torch.randn_like(x_t))
    return mean


def _vp_step(step: Callable[..., torch.Tensor], denoiser: Denoise, x: torch.Tensor, sigma: torch.Tensor,
             sigma_next: torch.Tensor, generator: torch.Generator | None, **kw: Any
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Run a DDPM-variable step from the variance-exploding x: x_t = x * sqrt(abar), abar = 1/(1+sigma^2)."""
    denoised = denoiser(x, sigma)
    alpha_bar, alpha_bar_next = 1 / (1 + sigma.double() ** 2), 1 / (1 + sigma_next.double() ** 2)
    eps = (x - denoised) / sigma
    noise = torch.randn(x.shape, device=x.device, dtype=x.dtype, generator=generator)
    x_prev = step(x * alpha_bar.sqrt().float(), eps, alpha_bar.float(), alpha_bar_next.float(), noise=noise, **kw)
    return x_prev / alpha_bar_next.sqrt().float(), denoised


def _report(callback: Callback, i: int, sigma: torch.Tensor, x: torch.Tensor, denoised: torch.Tensor) -> None:
    if callback is not None:
        callback({"i": i, "sigma": float(sigma), "x": x, "denoised": denoised})


# --- samplers ------------------------------------------------------------------------------------------
def _walk_vp(step: Callable[..., torch.Tensor], denoiser: Denoise, x: torch.Tensor, sigmas: torch.Tensor,
             callback: Callback, generator: torch.Generator | None, **kw: Any) -> torch.Tensor:
    for i in range(len(sigmas) - 1):
        x, denoised = _vp_step(step, denoiser, x, sigmas[i], sigmas[i + 1], generator, **kw)
        _report(callback, i, sigmas[i], x, denoised)
    return x


@torch.no_grad()
def sample_ddpm(denoiser: Denoise, x: torch.Tensor, sigmas: torch.Tensor, callback: Callback = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Ancestral DDPM sampling (Ho et al. 2020) along ``sigmas``; one network evaluation per step."""
    return _walk_vp(ddpm_step, denoiser, x, sigmas, callback, generator)


@torch.no_grad()
def sample_ddim(denoiser: Denoise, x: torch.Tensor, sigmas: torch.Tensor, callback: Callback = None,
                generator: torch.Generator | None = None, eta: float = 0.0) -> torch.Tensor:
    """DDIM (Song et al. 2021): deterministic for eta = 0 (then it equals Euler on the probability-flow
    ODE in sigma), DDPM-like for eta = 1."""
    return _walk_vp(ddim_step, denoiser, x, sigmas, callback, generator, eta=eta)


@torch.no_grad()
def sample_euler(denoiser: Denoise, x: torch.Tensor, sigmas: torch.Tensor, callback: Callback = None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """Euler steps of the probability-flow ODE dx/dsigma = (x - D(x, sigma)) / sigma (Karras et al. 2022)."""
    for i in range(len(sigmas) - 1):
        denoised = denoiser(x, sigmas[i])
        _report(callback, i, sigmas[i], x, denoised)
        x = x + (sigmas[i + 1] - sigmas[i]) * (x - denoised) / sigmas[i]
    return x


@torch.no_grad()
def sample_heun(denoiser: Denoise, x: torch.Tensor, sigmas: torch.Tensor, callback: Callback = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Heun's second-order method (Karras et al. 2022, Algorithm 1 without churn): 2n - 1 evaluations."""
    for i in range(len(sigmas) - 1):
        denoised = denoiser(x, sigmas[i])
        _report(callback, i, sigmas[i], x, denoised)
        slope = (x - denoised) / sigmas[i]
        x_next = x + (sigmas[i + 1] - sigmas[i]) * slope
        if sigmas[i + 1] > 0:
            slope_next = (x_next - denoiser(x_next, sigmas[i + 1])) / sigmas[i + 1]
            x_next = x + (sigmas[i + 1] - sigmas[i]) * (slope + slope_next) / 2
        x = x_next
    return x


@torch.no_grad()
def sample_dpmpp_2m(denoiser: Denoise, x: torch.Tensor, sigmas: torch.Tensor, callback: Callback = None,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022), multistep second order in lambda = -ln(sigma); one evaluation
    per step. Follows k-diffusion's ``sample_dpmpp_2m``."""
    old_denoised = None
    for i in range(len(sigmas) - 1):
        denoised = denoiser(x, sigmas[i])
        _report(callback, i, sigmas[i], x, denoised)
        if sigmas[i + 1] == 0:
            x = denoised
            break
        t, t_next = -sigmas[i].log(), -sigmas[i + 1].log()
        h = t_next - t
        if old_denoised is not None:
            r = (t - (-sigmas[i - 1].log())) / h
            denoised_d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
        else:
            denoised_d = denoised
        x = (sigmas[i + 1] / sigmas[i]) * x - torch.expm1(-h) * denoised_d
        old_denoised = denoised
    return x


SAMPLERS: dict[str, Callable[..., torch.Tensor]] = {
    "ddpm": sample_ddpm,
    "ddim": sample_ddim,
    "euler": sample_euler,
    "heun": sample_heun,
    "dpm++": sample_dpmpp_2m,
}


def evaluations_per_sample(sampler: str, steps: int) -> int:
    """Network evaluations a sampler spends for ``steps`` steps (Heun evaluates twice per step but the last)."""
    return 2 * steps - 1 if sampler == "heun" else steps
