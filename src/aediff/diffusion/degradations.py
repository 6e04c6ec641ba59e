"""Known linear degradations y = A x, each with its pseudo-inverse A^+, for restoration.

Every operator acts on images [N, C, H, W] in [-1, 1] and gives:

- ``forward(x)``: the measurement ``y = A x`` (a masked image keeps its shape with zeros, mid-grey, in the
  holes; a downsampled one is smaller; a greyscale one has one channel);
- ``pseudo_inverse(y)``: ``A^+ y``, the least-norm image that explains ``y`` (holes at zero, nearest
  upsampling, grey copied to every channel), so that ``A A^+ y = y``;
- ``project(x_hat, y)``: ``x_hat + A^+ (y - A x_hat)``, the range-space part replaced by the measurement's
  and the null-space part kept (Wang et al. 2023, DDNM; for a mask this is ``m * y + (1 - m) * x_hat``, the
  composite that keeps every known pixel). Every restoration method ends with it, so methods differ only in
  what was missing.

Masks come from seeded generators (``box_mask``, ``random_mask``, ``half_mask``, ``line_mask``) so that
every method sees the same holes. ``aediff.requests`` parses a user's ``--mask`` / ``--upscale`` into one.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from aediff.errors import ConfigError


class Degradation(ABC):
    """A linear degradation ``A`` with its pseudo-inverse (see the module docstring)."""

    @abstractmethod
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [N, C, H, W] -> y = A x."""

    @abstractmethod
    def pseudo_inverse(self, y: torch.Tensor) -> torch.Tensor:
        """y (as ``forward`` gives it) -> A^+ y [N, C, H, W]."""

    @abstractmethod
    def check(self, shape: tuple[int, ...]) -> None:
        """ConfigError naming the problem and the fix when images of ``shape`` [N, C, H, W] cannot be degraded."""

    @abstractmethod
    def describe(self) -> str:
        """A short name for tables and figure labels, e.g. "box 10", "2x super-resolution"."""

    # what the operator is, for what dispatches on it (RePaint takes masks; the classical controls differ):
    # "mask" (keeps some pixels exactly, hides the rest), "downsample", "greyscale"
    kind: ClassVar[str]

    def project(self, x_hat: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """x_hat [N, C, H, W] with its range-space part replaced by the measurement's: A(result) = y."""
        return x_hat + self.pseudo_inverse(y - self.forward(x_hat))

    def missing(self, x: torch.Tensor) -> torch.Tensor:
        """[N, 1, H, W] bool: the pixels ``forward`` loses outright (every pixel for a downsampling, where each
        is only known through an average)."""
        return torch.ones((x.shape[0], 1, *x.shape[2:]), dtype=torch.bool, device=x.device)


@dataclass(frozen=True, eq=False)  # a tensor field: equality would compare elementwise
class Mask(Degradation):
    """Pixels known where ``keep`` is True: A x = keep * x. keep: [N or 1, 1, H, W] bool, the same pixels in
    every channel; ``name`` says how it was made (e.g. "box 10")."""

    keep: torch.Tensor
    name: str = "mask"
    kind: ClassVar[str] = "mask"

    def __post_init__(self) -> None:
        if self.keep.dtype != torch.bool or self.keep.dim() != 4 or self.keep.shape[1] != 1:
            raise ConfigError(f"a mask is [N or 1, 1, H, W] bool, got {tuple(self.keep.shape)} {self.keep.dtype}")
        known = self.keep.flatten(1).float().mean(1)
        if bool((known == 1).any()):
            raise ConfigError(f"the {self.name} hides no pixel of an image: nothing to restore; use a larger mask")
        if bool((known == 0).any()):
            raise ConfigError(f"the {self.name} hides every pixel of an image: nothing is known to restore from")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.keep.to(x.device, x.dtype)

    def pseudo_inverse(self, y: torch.Tensor) -> torch.Tensor:
        return y * self.keep.to(y.device, y.dtype)  # A is a diagonal 0/1 projection: A^+ = A

    def project(self, x_hat: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The composite ``m * y + (1 - m) * x_hat``, chosen pixel by pixel so the known ones are y's bit for bit
        (the general formula's x_hat + (y - x_hat) can round)."""
        return torch.where(self.keep.to(x_hat.device), y, x_hat)

    def check(self, shape: tuple[int, ...]) -> None:
        n, _, h, w = shape
        if tuple(self.keep.shape[2:]) != (h, w):
            mh, mw = self.keep.shape[2:]
            raise ConfigError(f"the mask is {mh}x{mw} but the images are {h}x{w}: give a mask of the images' size")
        if self.keep.shape[0] not in (1, n):
            raise ConfigError(f"{self.keep.shape[0]} masks for {n} images: give one mask, or one per image")

    def describe(self) -> str:
        return self.name

    def missing(self, x: torch.Tensor) -> torch.Tensor:
        return ~self.keep.to(x.device).expand(x.shape[0], -1, -1, -1)

    def missing_fraction(self) -> torch.Tensor:
        """[N or 1]: the share of each image's pixels the mask hides."""
        return (~self.keep).flatten(1).float().mean(1)


@dataclass(frozen=True)
class Downsample(Degradation):
    """Average pooling by ``factor`` (super-resolution): A x = the mean of each factor x factor block."""

    factor: int
    kind: ClassVar[str] = "downsample"

    def __post_init__(self) -> None:
        if isinstance(self.factor, bool) or not isinstance(self.factor, int) or self.factor < 2:
            raise ConfigError(f"the upscale factor is a whole number >= 2, got {self.factor!r}; e.g. 2 or 4")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, self.factor)

    def pseudo_inverse(self, y: torch.Tensor) -> torch.Tensor:
        # A A^T = I / factor^2, so A^+ = factor^2 A^T: each low-resolution pixel copied over its block
        return F.interpolate(y, scale_factor=self.factor, mode="nearest")

    def check(self, shape: tuple[int, ...]) -> None:
        h, w = shape[2:]
        if h % self.factor or w % self.factor:
            raise ConfigError(
                f"an upscale factor of {self.factor} does not divide the {h}x{w} images; use a factor that "
                f"divides both sides (e.g. {_divisors(math.gcd(h, w))})"
            )

    def describe(self) -> str:
        return f"{self.factor}x super-resolution"


@dataclass(frozen=True)
class Greyscale(Degradation):
    """Colour to grey: A x = the mean over channels [N, 1, H, W]."""

    channels: int = 3
    kind: ClassVar[str] = "greyscale"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(1, keepdim=True)

    def pseudo_inverse(self, y: torch.Tensor) -> torch.Tensor:
        return y.expand(-1, self.channels, -1, -1).clone()  # A A^T = I / C, so A^+ = C A^T

    def check(self, shape: tuple[int, ...]) -> None:
        if shape[1] != self.channels or self.channels < 2:
            raise ConfigError(f"colour-to-grey restores colour images; these have {shape[1]} channel(s)")

    def describe(self) -> str:
        return "colourisation"


def _divisors(n: int) -> str:
    found = [d for d in range(2, n + 1) if n % d == 0][:3]
    return " or ".join(map(str, found)) if found else "none: the sides share no factor"


# --- seeded masks -----------------------------------------------------------------------------------------


def box_mask(n: int, size: tuple[int, int], side: int, generator: torch.Generator | None = None) -> Mask:
    """A side x side square hole per image at a random place fully inside it."""
    h, w = size
    if not 1 <= side < min(h, w):
        raise ConfigError(
            f"a box of side {side} does not fit a {h}x{w} image with pixels left; use 1 to {min(h, w) - 1}"
        )
    keep = torch.ones((n, 1, h, w), dtype=torch.bool)
    top = torch.randint(0, h - side + 1, (n,), generator=generator)
    left = torch.randint(0, w - side + 1, (n,), generator=generator)
    for i in range(n):
        keep[i, :, top[i] : top[i] + side, left[i] : left[i] + side] = False
    return Mask(keep, f"box {side}")


def random_mask(n: int, size: tuple[int, int], rate: float, generator: torch.Generator | None = None) -> Mask:
    """Each pixel hidden independently with probability ``rate`` in (0, 1)."""
    if not 0 < rate < 1:
        raise ConfigError(f"a random mask hides a fraction in (0, 1) of the pixels, got {rate!r}; e.g. random:0.5")
    keep = torch.rand((n, 1, *size), generator=generator) >= rate
    return Mask(keep, f"random {rate:g}")


def half_mask(n: int, size: tuple[int, int], generator: torch.Generator | None = None) -> Mask:
    """One half of each image hidden: left, right, top or bottom, drawn per image."""
    h, w = size
    keep = torch.ones((n, 1, h, w), dtype=torch.bool)
    sides = torch.randint(0, 4, (n,), generator=generator)
    for i, side in enumerate(sides.tolist()):
        region = [(slice(None), slice(0, w // 2)), (slice(None), slice(w // 2, w)),
                  (slice(0, h // 2), slice(None)), (slice(h // 2, h), slice(None))][side]  # fmt: skip
        keep[i, 0][region] = False
    return Mask(keep, "half")


def line_mask(n: int, size: tuple[int, int], lines: int, generator: torch.Generator | None = None) -> Mask:
    """``lines`` thin scratches per image: straight one-pixel-wide lines between two random points."""
    if not 1 <= lines <= 64:
        raise ConfigError(f"lines:N draws 1 to 64 scratches per image, got {lines!r}; e.g. lines:3")
    h, w = size
    keep = torch.ones((n, 1, h, w), dtype=torch.bool)
    ends = torch.rand((n, lines, 4), generator=generator)
    steps = torch.linspace(0, 1, 2 * max(h, w))
    for i in range(n):
        for y0, x0, y1, x1 in ends[i].tolist():
            ys = ((y0 + (y1 - y0) * steps) * (h - 1)).round().long()
            xs = ((x0 + (x1 - x0) * steps) * (w - 1)).round().long()
            keep[i, 0, ys, xs] = False
    return Mask(keep, f"lines {lines}")


# --- from a spec ---------------------------------------------------------------------------------------------

SPEC_FORMS = "box:SIDE, random:RATE, half, lines:N or upscale:FACTOR"


def degradation_from_spec(spec: str, n: int, size: tuple[int, int], generator: torch.Generator | None = None):
    """``"box:10"``, ``"random:0.5"``, ``"half"``, ``"lines:3"``, ``"upscale:2"`` -> the degradation of n images of
    ``size`` (H, W), masks drawn from ``generator``: how configs and benchmarks name one (``aediff restore``'s
    ``--mask`` takes the mask forms, and a mask image; ``--upscale`` the factor)."""
    kind, _, arg = spec.strip().partition(":")
    if kind == "box":
        return box_mask(n, size, whole_number(arg, "box:SIDE", "box:10"), generator)
    if kind == "random":
        return random_mask(n, size, _fraction(arg), generator)
    if kind == "lines":
        return line_mask(n, size, whole_number(arg, "lines:N", "lines:3"), generator)
    if kind == "half":
        if arg:
            raise ConfigError(f"half takes no value (it hides half of each image), got {spec!r}; use half")
        return half_mask(n, size, generator)
    if kind == "upscale":
        return Downsample(whole_number(arg, "upscale:FACTOR", "upscale:2"))
    raise ConfigError(f"unknown degradation {spec!r}: use {SPEC_FORMS}")


SPEC_KINDS = {"box": "mask", "random": "mask", "lines": "mask", "half": "mask", "upscale": "downsample"}


def spec_kind(spec: str) -> str:
    """The kind ("mask", "downsample") of the degradation ``degradation_from_spec`` makes of ``spec``."""
    name = spec.strip().partition(":")[0]
    if name not in SPEC_KINDS:
        raise ConfigError(f"unknown degradation {spec!r}: use {SPEC_FORMS}")
    return SPEC_KINDS[name]


def whole_number(text: str, what: str, example: str) -> int:
    """``text`` as a whole number >= 0; ConfigError naming ``what`` and an ``example`` otherwise."""
    if not str(text).strip().isdigit():
        raise ConfigError(f"{what} takes a whole number, got {str(text).strip()!r}; e.g. {example}")
    return int(str(text).strip())


def _fraction(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"random:RATE takes the fraction of pixels to hide, got {text!r}; e.g. random:0.5") from None
