"""Restoration with a diffusion model and no retraining: two published methods on a known degradation.

- **DDNM** (Wang et al. 2023, "Zero-shot image restoration using denoising diffusion null-space model"):
  at every step the denoiser's x0 estimate has its range-space part replaced by the measurement's,
  ``x0 <- x0 + A^+ (y - A x0)`` (``Degradation.project``), and the sampler goes on from it. It wraps the
  denoiser, so it runs with every sampler and any degradation with a pseudo-inverse (masks,
  super-resolution, colourisation), and costs the sampler's own network evaluations.
- **RePaint** (Lugmayr et al. 2022): ancestral steps whose known pixels are replaced, at every level, by the
  measurement noised to that level, with resampling: after each ``jump_length`` steps down the chain goes
  back up ``jump_length`` levels (fresh noise) and down again, ``jump_n_sample - 1`` times, so the unknown
  region harmonises with the known. It needs known pixels, so it takes masks only, and it defines its own
  walk (``repaint_schedule``, as diffusers' RePaintScheduler.set_timesteps) and step (the ancestral, DDPM,
  step in the variance-exploding view), so it does not take another sampler.

Both are plain functions of a denoiser ``D(x, sigma)`` (``aediff.diffusion.samplers``' convention): the
model chooses the noise levels, the condition and guidance live inside the denoiser.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from aediff.diffusion.degradations import Degradation
from aediff.diffusion.samplers import Callback, Denoise, SamplerOptions
from aediff.errors import ConfigError

REPAINT_JUMP_LENGTH = 10  # "j" in RePaint's paper and diffusers' RePaintScheduler default
REPAINT_JUMP_N_SAMPLE = 10  # "r": resamplings per jump (paper and diffusers default)


def projected_denoiser(denoise: Denoise, operator: Degradation, y: torch.Tensor) -> Denoise:
    """DDNM: ``denoise`` whose every x0 estimate satisfies ``A x0 = y`` (its null-space part kept)."""

    def projected(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return operator.project(denoise(x, sigma), y)

    return projected


def decoded_projected_denoiser(
    denoise: Denoise,
    operator: Degradation,
    y: torch.Tensor,
    decode: Callable[[torch.Tensor], torch.Tensor],
    encode: Callable[[torch.Tensor], torch.Tensor],
) -> Denoise:
    """DDNM through an autoencoder, for diffusion in its latent space: every latent x0 estimate is decoded,
    projected onto ``A x = y`` in pixel space and encoded again (decode-project-encode). The constraint
    reaches the latent only as far as ``encode`` and ``decode`` invert each other: ``A decode(z) = y`` holds up
    to the autoencoder's reconstruction error, not to float precision (the last projection, in pixels, makes
    the known pixels exact). Costs one decode and one encode per network evaluation."""

    def projected(z: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return encode(operator.project(decode(denoise(z, sigma)), y))

    return projected


def repaint_schedule(steps: int, jump_length: int = REPAINT_JUMP_LENGTH, jump_n_sample: int = REPAINT_JUMP_N_SAMPLE):
    """RePaint's walk over noise levels 0..steps, as diffusers' ``RePaintScheduler.set_timesteps`` lists it
    (before its scaling to training timesteps): a list of levels, where an entry below the previous one is a
    denoising step down to it and an entry above is a step back up to it. Starts below ``steps`` (pure
    noise) and ends at 0."""
    if steps < 1 or jump_length < 1 or jump_n_sample < 1:
        raise ConfigError(
            f"RePaint needs steps, jump length and resamplings >= 1, got {steps}, {jump_length}, {jump_n_sample}"
        )
    jumps = {j: jump_n_sample - 1 for j in range(0, steps - jump_length, jump_length)}
    levels, t = [], steps
    while t >= 1:
        t -= 1
        levels.append(t)
        if jumps.get(t, 0) > 0:
            jumps[t] -= 1
            for _ in range(jump_length):
                t += 1
                levels.append(t)
    return levels


def repaint_evaluations(steps: int, jump_length: int = REPAINT_JUMP_LENGTH, jump_n_sample: int = REPAINT_JUMP_N_SAMPLE):
    """Network evaluations of one RePaint restoration: one per step down."""
    levels = repaint_schedule(steps, jump_length, jump_n_sample)
    return sum(1 for before, after in zip([steps, *levels[:-1]], levels, strict=True) if after < before)


@torch.no_grad()
def sample_repaint(
    denoise: Denoise,
    mask: Degradation,
    y: torch.Tensor,
    sigmas: torch.Tensor,
    jump_length: int = REPAINT_JUMP_LENGTH,
    jump_n_sample: int = REPAINT_JUMP_N_SAMPLE,
    generator: torch.Generator | None = None,
    callback: Callback = None,
) -> torch.Tensor:
    """RePaint from pure noise to a restoration [N, C, H, W] whose known pixels are ``y``'s.

    sigmas: the levels [steps + 1], decreasing, ending in 0 (what the model's sampler would walk);
    mask: a degradation of kind "mask"; y: the masked images
    (``mask.forward(x)``). callback: as the samplers', before each step down.
    """
    if mask.kind != "mask":
        raise ConfigError(f"RePaint fills masked pixels; {mask.describe()} hides none outright: use DDNM")
    levels = sigmas.flip(0)  # levels[k]: the noise of level k, levels[0] = 0
    steps = len(sigmas) - 1
    noise = lambda: torch.randn(y.shape, device=y.device, dtype=y.dtype, generator=generator)  # noqa: E731
    x, here = levels[-1] * noise(), steps
    for i, level in enumerate(repaint_schedule(steps, jump_length, jump_n_sample)):
        s_here, s_next = levels[here], levels[level]
        if level < here:
            x0 = denoise(x, s_here.expand(len(x)))
            if callback is not None:
                callback({"i": i, "sigma": float(s_here), "x": x, "denoised": x0})
            x = _ancestral_step(x, x0, s_here, s_next, noise)
            x = mask.project(x, y + s_next * mask.forward(noise()))  # known pixels: y noised to this level
        else:
            x = x + (s_next**2 - s_here**2).sqrt() * noise()
        here = level
    return mask.project(x, y)


def _ancestral_step(x: torch.Tensor, x0: torch.Tensor, s_from: torch.Tensor, s_to: torch.Tensor, noise) -> torch.Tensor:
    """One DDPM step in the variance-exploding view, x = x0 + sigma eps: sample x at ``s_to`` given x at
    ``s_from`` and the x0 estimate (the posterior of the forward process: mean x0 + (s_to / s_from)^2 (x - x0),
    variance s_to^2 (s_from^2 - s_to^2) / s_from^2)."""
    if float(s_to) == 0:
        return x0
    ratio = (s_to / s_from) ** 2
    std = s_to * (1 - ratio).clamp_min(0).sqrt()
    return x0 + ratio * (x - x0) + std * noise()


# --- what a user chooses ----------------------------------------------------------------------------------

RESTORE_METHODS: tuple[str, ...] = ("ddnm", "repaint", "one-pass")


@dataclass(frozen=True)
class RestorePlan:
    """A checked restoration request: the method and its settings, defaults filled in."""

    method: str
    sampler: SamplerOptions | None  # ddnm: the sampler it walks; repaint: its steps; one-pass: None
    jump_length: int = REPAINT_JUMP_LENGTH
    jump_n_sample: int = REPAINT_JUMP_N_SAMPLE
    sigma: float | None = None  # one-pass on a diffusion model: the noise level the filled image is read at


@dataclass(frozen=True)
class RestoreOptions:
    """What a user chooses about restoring; None = the model's default.

    method: one of RESTORE_METHODS that the model offers (``model.restore_methods``, the first is its
    default); sampler: for ddnm the sampler, steps and its options, for repaint its steps only (RePaint walks
    its own ancestral steps); jump_length, jump_n_sample: RePaint's j and r (defaults 10 and 10, the paper's
    and diffusers'); sigma: a diffusion model's one pass, the noise level at which it reads the trivial fill
    ``A^+ y`` noised to that level (one network evaluation; autoencoders take none). ``resolve`` refuses an
    option of another method rather than ignore it.
    """

    method: str | None = None
    sampler: SamplerOptions | None = None
    jump_length: int | None = None
    jump_n_sample: int | None = None
    sigma: float | None = None

    def resolve(self, offered: tuple[str, ...], operator: Degradation) -> RestorePlan:
        method = self.method if self.method is not None else offered[0]
        if method not in RESTORE_METHODS:
            raise ConfigError(f"unknown restoration method {method!r}; choose one of {', '.join(RESTORE_METHODS)}")
        if method not in offered:
            raise ConfigError(
                f"this model restores with {' or '.join(offered)}, not {method}; {method} needs {_WHO_RUNS[method]}"
            )
        jumps = {"jump_length": self.jump_length, "jump_n_sample": self.jump_n_sample}
        given = [name for name, value in jumps.items() if value is not None]
        if given and method != "repaint":
            raise ConfigError(f"--{given[0].replace('_', '-')} is RePaint's option; method {method} does not take it")
        if method == "one-pass" and self.sampler is not None:
            raise ConfigError("a one-pass restoration runs no sampler; drop the sampler options or use --method ddnm")
        if self.sigma is not None and method != "one-pass":
            raise ConfigError(f"--sigma is the one-pass method's noise level; method {method} does not take it")
        if self.sigma is not None and not (isinstance(self.sigma, int | float) and 0 < self.sigma < math.inf):
            raise ConfigError(f"--sigma must be a noise level > 0, got {self.sigma!r}; e.g. 0.5")
        if method == "repaint":
            return self._repaint_plan(operator)
        return RestorePlan(method, self.sampler if method == "ddnm" else None, sigma=self.sigma)

    def _repaint_plan(self, operator: Degradation) -> RestorePlan:
        if operator.kind != "mask":
            raise ConfigError(
                f"RePaint fills masked pixels; {operator.describe()} hides none outright: use --method ddnm"
            )
        other = self.sampler is not None and (
            self.sampler.sampler is not None or self.sampler.eta is not None or self.sampler.s_churn is not None
        )
        if other:
            raise ConfigError("RePaint walks its own ancestral steps: of the sampler's options only --steps applies")
        for name, value in (("jump length", self.jump_length), ("resamplings", self.jump_n_sample)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigError(f"RePaint's {name} must be a whole number >= 1, got {value!r}")
        return RestorePlan(
            "repaint",
            SamplerOptions(steps=self.sampler.steps) if self.sampler is not None else None,
            self.jump_length if self.jump_length is not None else REPAINT_JUMP_LENGTH,
            self.jump_n_sample if self.jump_n_sample is not None else REPAINT_JUMP_N_SAMPLE,
        )


_WHO_RUNS = {
    "ddnm": "a diffusion model (in pixels, or in a latent space through decode-project-encode)",
    "repaint": "a pixel diffusion model",
    "one-pass": "an autoencoder (AE, VAE, KL-AE, VQ-VAE or DAE) or a pixel diffusion model",
}
