"""Parameterizations: thin wrappers that turn a network F(x_in, c_noise) into a denoiser D(x, sigma).

D(x, sigma) estimates the clean image x0 from x = x0 + sigma * eps. Every parameterization is written
as Karras et al. 2022's preconditioning, D = c_skip * x + c_out * F(c_in * x, c_noise), which makes the
differences plain (alpha = 1 / sqrt(1 + sigma^2) is the VP scale, so c_in * x is DDPM's x_t):

| target of F | c_in                      | c_skip                 | c_out                       |
|-------------|---------------------------|------------------------|-----------------------------|
| eps         | 1 / sqrt(1 + s^2)         | 1                      | -s                          |
| x0          | 1 / sqrt(1 + s^2)         | 0                      | 1                           |
| v           | 1 / sqrt(1 + s^2)         | 1 / (1 + s^2)          | -s / sqrt(1 + s^2)          |
| edm         | 1 / sqrt(s^2 + sd^2)      | sd^2 / (s^2 + sd^2)    | s * sd / sqrt(s^2 + sd^2)   |

(eps: Ho et al. 2020; v: Salimans & Ho 2022, whose v = alpha eps - sigma alpha x0; edm: Karras et al.
2022 with sigma_data sd.) The network always receives c_noise = ln(sigma) / 4 scaled into the range its
sinusoidal embedding was designed for, so one network serves any sigma, discrete schedule or not.
"""

from __future__ import annotations

from typing import Any, get_args

import torch
from torch import nn

from aediff.modes import Parameterization

PARAMETERIZATIONS: tuple[str, ...] = get_args(Parameterization)
NOISE_EMBED_SCALE = 250.0  # c_noise = 250 * ln(sigma): sigma in [0.002, 160] -> about [-1550, 1270]


def preconditioning(
    kind: str, sigma: torch.Tensor, sigma_data: float = 0.5
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(c_skip, c_out, c_in) for noise levels ``sigma`` [N] -> each [N, 1, 1, 1]."""
    s = sigma.reshape(-1, 1, 1, 1)
    vp_scale = 1 / (1 + s**2).sqrt()
    if kind == "eps":
        return torch.ones_like(s), -s, vp_scale
    if kind == "x0":
        return torch.zeros_like(s), torch.ones_like(s), vp_scale
    if kind == "v":
        return vp_scale**2, -s * vp_scale, vp_scale
    if kind == "edm":
        norm = (s**2 + sigma_data**2).sqrt()
        return sigma_data**2 / norm**2, s * sigma_data / norm, 1 / norm
    raise ValueError(f"unknown parameterization {kind!r}; choose one of {', '.join(PARAMETERIZATIONS)}")


def x0_loss_weight(kind: str, sigma: torch.Tensor, sigma_data: float = 0.5) -> torch.Tensor:
    """The weight on ||D - x0||^2 that makes the loss the plain MSE of F against its own target
    (||F - target||^2 = ||D - x0||^2 / c_out^2), i.e. "uniform" weighting in that parameterization."""
    _, c_out, _ = preconditioning(kind, sigma, sigma_data)
    return 1 / c_out.reshape(-1) ** 2


class Denoiser(nn.Module):
    """D(x, sigma): the network behind a parameterization. x: [N, C, S, S] = x0 + sigma * eps;
    sigma: [N] or a scalar; returns the x0 estimate, same shape as x."""

    def __init__(self, network: nn.Module, parameterization: str = "edm", sigma_data: float = 0.5):
        super().__init__()
        if parameterization not in PARAMETERIZATIONS:  # a name check, not tensor math: it also builds on meta
            choices = ", ".join(PARAMETERIZATIONS)
            raise ValueError(f"unknown parameterization {parameterization!r}; choose one of {choices}")
        self.network = network
        self.parameterization = parameterization
        self.sigma_data = sigma_data

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, **condition: Any) -> torch.Tensor:
        """condition: passed to the network as they are (class_labels, context, context_mask, pooled)."""
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).expand(x.shape[0])
        c_skip, c_out, c_in = preconditioning(self.parameterization, sigma, self.sigma_data)
        output = self.network(c_in * x, NOISE_EMBED_SCALE * sigma.log(), **condition)
        return c_skip * x + c_out * output.to(x.dtype)
