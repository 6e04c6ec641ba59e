"""Denoising across noise levels: one table of ``denoising_metrics`` rows that every family can fill in."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aediff.evaluation.protocols import denoising_metrics
from aediff.evaluation.results import DenoisingRow, from_protocol
from aediff.models import Capability, Model


def denoising_sweep(
    model: Model,
    dataset: Any,
    sigmas: Sequence[float] = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0),
    mask_probabilities: Sequence[float] = (0.1, 0.3, 0.5, 0.7),
    steps: Sequence[int] = (1,),
    seed: int = 0,
    limit: int | None = None,
    batch_size: int = 256,
    keep_per_image: bool = False,
) -> list[DenoisingRow]:
    """``denoising_metrics`` at every Gaussian sigma and masking probability, one ``DenoisingRow`` per
    (corruption, steps): corruption (spec, e.g. "gaussian:0.1", "mask:0.3"), kind ("gaussian" / "mask"), level
    (sigma in [-1, 1] pixel units, or the share of pixels masked), steps, PSNR (dB) / SSIM of the output and
    of the noisy input, MSE, with standard errors over images (with keep_per_image, also ``per_image``: numpy
    arrays [N], not JSON). Every level is corrupted with the same ``seed``, so every model sees the same noisy
    images at a level.

    What applies, by capability (``model.require(Capability.DENOISE)``):
    - a model that is not told the noise level (AE / VAE / DAE: ``denoise`` is the reconstruction, one pass):
      one row per corruption, Gaussian and masking, steps = 1, whatever ``steps`` says.
    - a model told the noise level (Capability.NOISE_LEVEL: diffusion, pixel or latent): Gaussian rows for
      every value in ``steps``; no masking rows, since it removes Gaussian noise of a known level, not masks.
    """
    model.require(Capability.DENOISE, "a denoising sweep")
    told_sigma = model.can(Capability.NOISE_LEVEL)
    step_counts = list(dict.fromkeys(int(s) for s in steps)) if told_sigma else [1]
    corruptions = [("gaussian", float(sigma)) for sigma in sigmas]
    if not told_sigma:
        corruptions += [("mask", float(p)) for p in mask_probabilities]
    rows = []
    for kind, level in corruptions:
        spec = f"{kind}:{level:g}"
        for count in step_counts if kind == "gaussian" else [1]:
            result = denoising_metrics(
                model, dataset, spec, seed=seed, batch_size=batch_size, limit=limit, steps=count, keep_per_image=True
            )
            row = from_protocol(DenoisingRow, {**result, "kind": kind, "level": level}, keep_per_image)
            rows.append(row)
    return rows
