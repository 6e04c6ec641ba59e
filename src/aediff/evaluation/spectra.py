"""Frequency content of images, and of what a diffusion model predicts at each noise level.

A denoiser that faces heavy noise can only guess the coarse shape of x0 (the posterior mean is blurry);
fine detail comes back as sigma falls. The share of spectral power at high frequencies makes this one
number per image (Rissanen et al. 2023 and Dieleman 2024 discuss diffusion as spectral autoregression).
``gaussian_blur`` makes the blurred controls that a sharpness measure must tell from the data.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from aediff.errors import ConfigError
from aediff.evaluation.protocols import model_device
from aediff.evaluation.results import X0Sweep
from aediff.models import Capability, Model


def radial_frequency(height: int, width: int) -> torch.Tensor:
    """|f| of each 2-D FFT bin in units of the Nyquist frequency (0.5 cycles per pixel), [H, W] float64.
    0 at the DC bin, 1 at the edge of the inscribed circle, up to sqrt(2) in the corners."""
    fy = torch.fft.fftfreq(height, dtype=torch.float64)[:, None]
    fx = torch.fft.fftfreq(width, dtype=torch.float64)[None, :]
    return (fy**2 + fx**2).sqrt() / 0.5


def high_frequency_share(images: torch.Tensor, cutoff: float = 0.5) -> torch.Tensor:
    """Share of each image's spectral power above ``cutoff`` x Nyquist, [N] float32 in [0, 1].

    images: [N, C, H, W] (any range). Per channel: remove the mean (the DC bin would otherwise dominate),
    take |FFT2|^2 and sum the bins whose radial frequency (``radial_frequency``) exceeds ``cutoff``; the
    share is that over the total (0 for a constant channel). Averaged over channels. White noise gives
    the share of bins above the cutoff (about 0.80 at 0.5); smooth images give little.
    """
    if images.dim() != 4:
        raise ConfigError(f"high_frequency_share takes images [N, C, H, W], got shape {tuple(images.shape)}")
    x = images.detach().double().cpu()
    x = x - x.mean(dim=(-2, -1), keepdim=True)
    power = torch.fft.fft2(x).abs().pow(2)
    high = radial_frequency(*x.shape[-2:]) > cutoff
    total = power.sum(dim=(-2, -1))
    share = (power * high).sum(dim=(-2, -1)) / total.clamp_min(1e-300)
    share = torch.where(total > 0, share, torch.zeros_like(share))
    return share.mean(dim=1).float()


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Blur each channel with a Gaussian of standard deviation ``sigma`` pixels, [N, C, H, W] -> same shape.

    A separable kernel truncated at ceil(3 sigma) pixels and normalised to sum 1 (a constant image stays
    constant); borders are padded by replicating the edge pixels, so a dark background stays dark instead
    of being pulled towards 0. Works in the images' dtype and device; any range.
    """
    if images.dim() != 4:
        raise ConfigError(f"gaussian_blur takes images [N, C, H, W], got shape {tuple(images.shape)}")
    if not sigma > 0:
        raise ConfigError(f"gaussian_blur: sigma must be > 0 pixels, got {sigma}; use e.g. 1.0")
    radius = math.ceil(3 * sigma)
    t = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    kernel = torch.exp(-(t**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    c = images.shape[1]
    x = F.pad(images, (radius, radius, radius, radius), mode="replicate")
    x = F.conv2d(x, kernel.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, kernel.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


@torch.no_grad()
def predicted_x0_sweep(
    model: Model, images: torch.Tensor, sigmas: Sequence[float], seed: int = 0, batch_size: int = 256
) -> X0Sweep:
    """A diffusion model's one-step estimate of x0 from x_t = x0 + sigma * eps (``denoise(x_t, sigma)``), at
    each sigma.

    images: [N, C, S, S] in [-1, 1]. One noise draw eps (from ``seed``) is scaled to every sigma, so the
    rows differ only by the noise level. A conditioned model is given the null condition (no class, empty
    caption): what it predicts unconditionally.

    Returns an ``X0Sweep``: sigmas (list), predictions [len(sigmas), N, C, S, S] (clamped to [-1, 1] when the
    model clips its x0 estimates), noisy [len(sigmas), N, C, S, S] (x_t as it is, not clipped),
    high_frequency_share (list: mean over images of each sigma's predictions), data_high_frequency_share
    (of the clean images). Tensors on the CPU.
    """
    model.require(Capability.NOISE_LEVEL, "predicted_x0_sweep")
    model.eval()
    device = model_device(model)
    x0 = images.to(device, torch.float32)
    eps = torch.randn(x0.shape, device=device, generator=torch.Generator(device).manual_seed(seed))
    predictions, noisy = [], []
    for sigma in sigmas:
        x_t = x0 + float(sigma) * eps
        chunks = []
        for start in range(0, len(x0), batch_size):
            part = x_t[start : start + batch_size]
            chunks.append(model.denoise(part, float(sigma)).cpu())
        predictions.append(torch.cat(chunks))
        noisy.append(x_t.cpu())
    predictions_t = torch.stack(predictions)
    return X0Sweep(
        sigmas=[float(s) for s in sigmas],
        predictions=predictions_t,
        noisy=torch.stack(noisy),
        high_frequency_share=[float(high_frequency_share(p).mean()) for p in predictions_t],
        data_high_frequency_share=float(high_frequency_share(x0).mean()),
    )
