"""Corruptions for denoising autoencoders and the denoising evaluation.

A corruption is written as ``KIND:LEVEL`` with an optional range and options:
``gaussian:0.5`` (additive noise, sigma in [-1, 1] pixel units), ``gaussian:0.1-0.8`` (sigma drawn
uniformly per image), ``mask:0.3`` (30% of pixels replaced by 0, mid-grey), ``mask:0.5:patch4``
(4x4 patches), ``saltpepper:0.1`` (10% of pixels set to -1 or +1), ``none``.
Vincent et al. 2008 (masking), 2010 (stacked DAEs; Gaussian and salt-and-pepper noise).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from aediff.errors import ConfigError

CorruptionKind = Literal["gaussian", "mask", "saltpepper", "none"]
KINDS: tuple[str, ...] = ("gaussian", "mask", "saltpepper", "none")


@dataclass(frozen=True)
class Corruption:
    kind: CorruptionKind
    low: float = 0.0  # level (sigma or fraction); drawn uniformly in [low, high] per image
    high: float = 0.0
    patch: int = 1  # side of the square patches that masking removes, in pixels

    @classmethod
    def parse(cls, spec: str) -> Corruption:
        """``"gaussian:0.5"``, ``"mask:0.1-0.5:patch4"``, ``"saltpepper:0.1"``, ``"none"`` -> Corruption."""
        parts = spec.strip().lower().split(":")
        kind = parts[0]
        if kind not in KINDS:
            raise ConfigError(f"unknown corruption {kind!r} in {spec!r}; use one of {', '.join(KINDS)}")
        if kind == "none":
            return cls("none")
        if len(parts) < 2:
            raise ConfigError(f"corruption {spec!r} needs a level, e.g. {kind}:0.3")
        try:
            bounds = [float(v) for v in parts[1].split("-")]
        except ValueError:
            raise ConfigError(f"bad level {parts[1]!r} in {spec!r}: use a number or a range like 0.1-0.5") from None
        low, high = bounds[0], bounds[-1]
        # `not (0 <= low <= high < inf)`, so that NaN and inf fail too
        if len(bounds) > 2 or not 0 <= low <= high < float("inf"):
            raise ConfigError(f"bad level {parts[1]!r} in {spec!r}: use LEVEL or LOW-HIGH with 0 <= LOW <= HIGH")
        if kind in ("mask", "saltpepper") and high > 1:
            raise ConfigError(f"{kind} takes a fraction in [0, 1], got {parts[1]!r}")
        patch = 1
        for option in parts[2:]:
            if option.startswith("patch") and option[5:].isascii() and option[5:].isdigit() and kind == "mask":
                patch = int(option[5:])
                if not 1 <= patch <= 1024:  # 0 divides by zero; a huge patch upsamples to a huge mask
                    raise ConfigError(f"mask patch size must be in [1, 1024] pixels, got {option!r} in {spec!r}")
            else:
                raise ConfigError(f"unknown option {option!r} in {spec!r} (masking takes patchN)")
        return cls(kind, low, high, patch)  # type: ignore[arg-type]

    @property
    def spec(self) -> str:
        if self.kind == "none":
            return "none"
        level = f"{self.low:g}" if self.low == self.high else f"{self.low:g}-{self.high:g}"
        return f"{self.kind}:{level}" + (f":patch{self.patch}" if self.patch > 1 else "")

    @property
    def fixed_sigma(self) -> float | None:
        """The noise level of Gaussian noise of one fixed sigma (what a diffusion model can be told); else None."""
        return self.low if self.kind == "gaussian" and self.low == self.high else None

    def levels(self, n: int, device: torch.device, generator: torch.Generator | None = None) -> torch.Tensor:
        """Per-image levels [n], uniform in [low, high]."""
        u = torch.rand(n, device=device, generator=generator)
        return self.low + (self.high - self.low) * u

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """x: [N, C, H, W] in [-1, 1] -> corrupted copy, same shape (Gaussian noise is not clipped)."""
        if self.kind == "none":
            return x.clone()
        n, c, h, w = x.shape
        level = self.levels(n, x.device, generator)[:, None, None, None]
        if self.kind == "gaussian":
            return x + level * torch.randn(x.shape, device=x.device, generator=generator)
        if self.kind == "mask":
            gh, gw = -(-h // self.patch), -(-w // self.patch)
            keep = torch.rand((n, 1, gh, gw), device=x.device, generator=generator) >= level
            if self.patch > 1:
                keep = F.interpolate(keep.float(), scale_factor=self.patch, mode="nearest")[..., :h, :w] > 0.5
            return torch.where(keep, x, torch.zeros_like(x))
        # Salt and pepper: the same pixels in every channel, half black, half white.
        hit = torch.rand((n, 1, h, w), device=x.device, generator=generator) < level
        salt = torch.rand((n, 1, h, w), device=x.device, generator=generator) < 0.5
        return torch.where(hit, torch.where(salt, 1.0, -1.0).to(x.dtype), x)
