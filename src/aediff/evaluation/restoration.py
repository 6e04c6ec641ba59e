"""Restoring test images under a known degradation, and how well it went: the PSNR on the missing pixels
(every pixel for super-resolution, where each is only known through its block's mean) of each restoration,
against the trivial fill ``A^+ y`` (holes at mid-grey, a low-resolution image upsampled by copying).

The classical controls every learned method must beat (``CLASSICAL``, ``classical_restore``): for a mask,
mean fill (each hole at the mean of the image's known pixels) and biharmonic inpainting (scikit-image's
``inpaint_biharmonic``); for super-resolution, nearest (``A^+ y``) and bicubic upsampling. Each ends with the
degradation's projection, as the learned methods do."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from aediff.diffusion.degradations import Degradation
from aediff.diffusion.restoration import RestoreOptions
from aediff.errors import ConfigError
from aediff.metrics import region_psnr
from aediff.models import Condition, Model


@dataclass
class Restorations:
    """originals, degraded (``A^+ y``, to show) [N, C, H, W]; restored [samples, N, C, H, W]; psnr [samples, N]
    on the missing pixels, psnr_degraded [N] of the trivial fill there; all in [-1, 1] / dB."""

    method: str
    degradation: str
    originals: torch.Tensor
    degraded: torch.Tensor
    restored: torch.Tensor
    psnr: np.ndarray
    psnr_degraded: np.ndarray
    seconds_per_image: float

    def grid(self) -> torch.Tensor:
        """Rows of the figure: originals, degraded, then one row per sample of restorations."""
        return torch.cat([self.originals, self.degraded, *self.restored]).cpu()

    def summary(self) -> dict[str, Any]:
        """What `aediff restore` prints: the PSNRs (mean over images, and each image's mean over samples)."""
        finite = np.where(np.isfinite(self.psnr), self.psnr, 100.0)  # a perfect fill: cap, as docs/metrics says
        out = {
            "method": self.method,
            "degradation": self.degradation,
            "images": int(self.psnr.shape[1]),
            "samples_per_image": int(self.psnr.shape[0]),
            "psnr_missing_db": float(finite.mean()),
            "psnr_missing_per_image_db": [round(float(v), 3) for v in finite.mean(0)],
            "psnr_trivial_fill_db": float(np.minimum(self.psnr_degraded, 100.0).mean()),
            "seconds_per_image": self.seconds_per_image,
        }
        if self.psnr.shape[0] > 1:  # the spread of a stochastic method over its samples
            out["psnr_missing_spread_db"] = float(finite.std(0, ddof=1).mean())
        return out


@torch.no_grad()
def restore_images(
    model: Model,
    dataset: Any,
    operator: Degradation,
    options: RestoreOptions | None,
    condition: Condition | None,
    n: int,
    samples: int = 1,
    seed: int = 0,
) -> Restorations:
    """Degrade the first n images of ``dataset`` with ``operator``, restore each ``samples`` times (seeds
    seed, seed + 1, ...), and score every restoration on the pixels the degradation lost."""
    x = dataset.batch(torch.arange(n))["images"].to(model.device)
    y = operator.forward(x)
    missing = operator.missing(x)
    started = time.perf_counter()
    restored = torch.stack(
        [
            model.restore(
                y, operator, options, condition, generator=torch.Generator(model.device).manual_seed(seed + i)
            )
            for i in range(samples)
        ]
    )
    seconds = (time.perf_counter() - started) / (n * samples)
    psnr = torch.stack([region_psnr(r, x, missing) for r in restored]).cpu().numpy()
    filled = operator.pseudo_inverse(y)
    method = (options or RestoreOptions()).resolve(model.restore_methods, operator).method
    return Restorations(
        method, operator.describe(), x.cpu(), filled.clamp(-1, 1).cpu(), restored.cpu(), psnr,
        region_psnr(filled, x, missing).cpu().numpy(), seconds,
    )  # fmt: skip


def _mean_fill(y: torch.Tensor, operator: Degradation) -> torch.Tensor:
    known = ~operator.missing(y)
    counts = known.flatten(1).sum(1).clamp_min(1)[:, None, None, None]
    means = (y * known).sum((2, 3), keepdim=True) / counts
    return torch.where(known, y, means.expand_as(y))


def _biharmonic(y: torch.Tensor, operator: Degradation) -> torch.Tensor:
    from skimage.restoration import inpaint_biharmonic

    holes = operator.missing(y)[:, 0].cpu().numpy()
    images = y.permute(0, 2, 3, 1).cpu().double().numpy()
    filled = [inpaint_biharmonic(image, hole, channel_axis=-1) for image, hole in zip(images, holes, strict=True)]
    return torch.from_numpy(np.stack(filled)).permute(0, 3, 1, 2).to(y.device, y.dtype)


def _nearest(y: torch.Tensor, operator: Degradation) -> torch.Tensor:
    return operator.pseudo_inverse(y)


def _bicubic(y: torch.Tensor, operator: Degradation) -> torch.Tensor:
    return F.interpolate(y, scale_factor=operator.factor, mode="bicubic", align_corners=False)  # type: ignore[attr-defined]


# name -> (the kind of degradation it restores, y -> the restoration before projection)
CLASSICAL = {
    "mean fill": ("mask", _mean_fill),
    "biharmonic": ("mask", _biharmonic),
    "nearest": ("downsample", _nearest),
    "bicubic": ("downsample", _bicubic),
}


def classical_controls(operator: Degradation) -> list[str]:
    """The classical controls that apply to ``operator``: mean fill and biharmonic for a mask, nearest and
    bicubic for super-resolution; none for colourisation."""
    return [name for name, (kind, _) in CLASSICAL.items() if kind == operator.kind]


@torch.no_grad()
def classical_restore(name: str, y: torch.Tensor, operator: Degradation) -> torch.Tensor:
    """The control ``name`` (one of ``classical_controls(operator)``) on the measurement y: [N, C, H, W]."""
    if name not in classical_controls(operator):
        raise ConfigError(
            f"{name!r} is not a control for {operator.describe()}; use {', '.join(classical_controls(operator))}"
        )
    return operator.project(CLASSICAL[name][1](y, operator), y).clamp(-1, 1)
