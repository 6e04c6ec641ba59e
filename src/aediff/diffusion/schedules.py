"""Noise schedules: which noise levels a diffusion model is trained on, and the grids samplers walk.

One currency throughout: the noise level sigma of the variance-exploding view, x_sigma = x0 + sigma * eps
(Song et al. 2021; Karras et al. 2022). A variance-preserving (DDPM) sample x_t = sqrt(abar_t) x0 +
sqrt(1 - abar_t) eps is the same point rescaled: x_t = x_sigma / sqrt(1 + sigma^2) with
sigma_t = sqrt((1 - abar_t) / abar_t). So every schedule here is a set of sigmas, and every sampler
works with any schedule.

- ``linear``: DDPM's betas, linear from 1e-4 to 0.02 over T = 1000 steps (Ho et al. 2020).
- ``cosine``: abar_t = cos^2(((t/T + s) / (1 + s)) * pi / 2), s = 0.008, betas clipped at 0.999
  (Nichol & Dhariwal 2021), as diffusers' ``squaredcos_cap_v2``.
- ``sigmoid``: abar_t from a sigmoid of t (Jabri et al. 2023: start -3, end 3, tau 1).
- ``edm``: continuous time; training draws ln(sigma) ~ N(p_mean, p_std^2) (Karras et al. 2022).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from aediff.modes import ScheduleKind


def betas_for(kind: str, num_steps: int = 1000) -> torch.Tensor:
    """beta_1..beta_T (float64, [T]) of a discrete variance-preserving schedule."""
    if kind == "linear":
        return torch.linspace(1e-4, 0.02, num_steps, dtype=torch.float64)
    if kind == "cosine":

        def abar(t: float) -> float:
            return math.cos((t / num_steps + 0.008) / 1.008 * math.pi / 2) ** 2

        return torch.tensor([min(1 - abar(i + 1) / abar(i), 0.999) for i in range(num_steps)], dtype=torch.float64)
    if kind == "sigmoid":
        start, end, tau = -3.0, 3.0, 1.0
        t = torch.linspace(0, 1, num_steps + 1, dtype=torch.float64)
        v_start, v_end = torch.sigmoid(torch.tensor(start / tau)), torch.sigmoid(torch.tensor(end / tau))
        abar = (-torch.sigmoid((t * (end - start) + start) / tau) + v_end) / (v_end - v_start)
        abar = abar.clamp(1e-9, 1.0)
        return (1 - abar[1:] / abar[:-1]).clamp(0, 0.999)
    raise ValueError(f"{kind!r} is not a discrete schedule")


def alpha_bar_to_sigma(alpha_bar: torch.Tensor) -> torch.Tensor:
    """sigma = sqrt((1 - abar) / abar)."""
    return ((1 - alpha_bar) / alpha_bar).sqrt()


@dataclass(frozen=True)
class NoiseSchedule:
    """The noise levels of one schedule. Discrete ones hold sigma_t for t = 0..T-1 (t = 0 least noisy)."""

    kind: ScheduleKind = "edm"
    num_steps: int = 1000  # T of the discrete schedules
    sigma_min: float = 0.002  # edm: smallest sampling sigma
    sigma_max: float = 80.0  # edm: largest sampling sigma
    p_mean: float = -1.2  # edm: mean of ln(sigma) during training
    p_std: float = 1.2  # edm: std of ln(sigma) during training

    @property
    def discrete(self) -> bool:
        return self.kind != "edm"

    @property
    def alphas_cumprod(self) -> torch.Tensor:
        """abar_t, [T] float64 (discrete schedules only)."""
        return torch.cumprod(1 - betas_for(self.kind, self.num_steps), dim=0)

    @property
    def sigmas(self) -> torch.Tensor:
        """sigma_t, [T] float64, increasing with t (discrete schedules only)."""
        return alpha_bar_to_sigma(self.alphas_cumprod)

    @property
    def sigma_range(self) -> tuple[float, float]:
        """(smallest, largest) sigma that sampling starts from / ends at."""
        if self.discrete:
            s = self.sigmas
            return float(s[0]), float(s[-1])
        return self.sigma_min, self.sigma_max

    def sample_training_sigmas(
        self, n: int, device: torch.device | str = "cpu", generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """n training noise levels [n] (float32): t ~ U{0..T-1} for discrete, log-normal for edm."""
        if self.discrete:
            t = torch.randint(0, self.num_steps, (n,), generator=generator, device=device)
            return self.sigmas.to(device)[t].float()
        z = torch.randn(n, generator=generator, device=device)
        return (self.p_mean + self.p_std * z).exp()

    def timestep_of(self, sigma: torch.Tensor) -> torch.Tensor:
        """The discrete t whose sigma_t is nearest in log space (for mapping a noise level to a step)."""
        log_sigmas = self.sigmas.to(sigma.device).log()
        return (sigma.double().log()[..., None] - log_sigmas).abs().argmin(-1)


def karras_sigmas(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> torch.Tensor:
    """n decreasing noise levels from sigma_max to sigma_min, then a final 0 ([n + 1], float64).

    Karras et al. 2022, eq. 5: sigma_i = (smax^(1/rho) + i/(n-1) (smin^(1/rho) - smax^(1/rho)))^rho.
    """
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    inv_rho_min, inv_rho_max = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    sigmas = (inv_rho_max + ramp * (inv_rho_min - inv_rho_max)) ** rho
    return torch.cat([sigmas, sigmas.new_zeros(1)])


def discrete_timesteps(num_train_steps: int, n: int) -> torch.Tensor:
    """n of T discrete timesteps, evenly spaced and ending at the last ("trailing" spacing; Lin et al.
    2024 show it reaches the final, pure-noise step that "leading" spacing misses). Decreasing, [n]."""
    return torch.round(torch.arange(num_train_steps, 0, -num_train_steps / n)).long() - 1
