"""The denoising loss and its weightings: the "loss" of the four swappable parts NVlabs/edm separates (network,
preconditioning, loss, sampler). The training step calls only the loss; the loss takes the denoiser as an
argument (improved-diffusion's ``training_losses(model, x_start, t)``), so schedule, parameterization and
network change independently.

    L = E_{sigma ~ schedule, eps ~ N(0, I)} [ w(sigma) ||D(x0 + sigma eps, sigma, condition) - x0||^2 ]

(Karras et al. 2022, eq. 2 with the loss weight lambda(sigma) = w). The weighting is a ``LossWeighting``:
- uniform: w = 1 / c_out(sigma)^2, which makes L the plain MSE of the network against its own target (eps, x0,
  v or edm's), i.e. "uniform" in whatever the network predicts (``parameterization.x0_loss_weight``);
- min_snr: w = min(1 / sigma^2, gamma) = min(SNR, gamma) on ||D - x0||^2 (Hang et al. 2023, min-SNR-gamma).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from aediff.diffusion.parameterization import Denoiser, x0_loss_weight
from aediff.diffusion.schedules import NoiseSchedule
from aediff.modes import LossWeighting


def loss_weight(
    weighting: LossWeighting, sigma: torch.Tensor, denoiser: Denoiser, min_snr_gamma: float = 5.0
) -> torch.Tensor:
    """w(sigma) [N] on ||D - x0||^2 for noise levels sigma [N] (module docstring); min_snr_gamma > 0."""
    if weighting is LossWeighting.UNIFORM:
        return x0_loss_weight(denoiser.parameterization, sigma, denoiser.sigma_data)
    if weighting is LossWeighting.MIN_SNR:
        return (1 / sigma**2).clamp(max=min_snr_gamma)
    raise ValueError(f"unknown loss weighting {weighting!r}")


@dataclass(frozen=True)
class DiffusionLoss:
    """loss(denoiser, x0, condition) -> (scalar loss, the sigmas drawn [N]), EDMLoss's contract.

    schedule: which noise levels training visits; weighting: w(sigma); min_snr_gamma: the cap of min-SNR
    weighting (> 0; unused by uniform).
    """

    schedule: NoiseSchedule
    weighting: LossWeighting = LossWeighting.UNIFORM
    min_snr_gamma: float = 5.0

    def __call__(
        self, denoiser: Denoiser, x0: torch.Tensor, condition: dict[str, Any] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x0: [N, C, H, W] in [-1, 1] (or a latent); condition: the network's condition inputs for the N."""
        sigma = self.schedule.sample_training_sigmas(len(x0), x0.device)
        noisy = x0 + sigma[:, None, None, None] * torch.randn_like(x0)
        error = (denoiser(noisy, sigma, **(condition or {})) - x0).pow(2).flatten(1).mean(1)
        weight = loss_weight(self.weighting, sigma, denoiser, self.min_snr_gamma)
        return (weight * error).mean(), sigma
