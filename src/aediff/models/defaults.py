"""Defaults that follow the data: the size rules, and the network each family declares for a rule.

A new run's model starts from its family's config defaults, which were chosen for 28x28 greyscale digits. The
data's shape picks one rule of ``SIZE_RULES`` (the first that matches its channels and its longer side), and the
family's entry for that rule (``Model.size_defaults``, declared in each family's module, inherited by its
subclasses) overrides some of those defaults; the user's own options override both. The training recipe's part
of a rule (batch size, learning rate, EMA) lives with the training recipe, in ``aediff.runs.defaults``.

| rule             | images                              | what changes                                     |
|------------------|-------------------------------------|--------------------------------------------------|
| ``grey-small``   | 1 channel, longer side <= 32 px     | nothing: the built-in defaults (digits, MNIST)   |
| ``colour-small`` | 2+ channels, longer side <= 32 px   | wider networks (CIFAR-10's 32x32 RGB)            |
| ``medium``       | longer side 33..64 px               | one more stage                                   |
| ``large``        | longer side > 64 px                 | two more stages, more blocks for diffusion       |

``grey-small`` is the defaults measured on the digits (see docs/). ``colour-small``'s autoencoder and U-Net
widths were chosen by ``benchmarks/colour_defaults.py`` (candidate sizes trained for equal CPU minutes on
CIFAR-10's training split, scored on a validation split carved from it; docs/scale.md has the tries); its other
numbers (latent diffusion's widths, the learning rates) are reasoned, not searched. ``medium`` and ``large``
extend it by stages without a measurement yet.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from aediff.blocks import stage_sizes


@dataclass(frozen=True)
class DataShape:
    """The shape of a dataset's images: channels (1 grey, 3 RGB), height and width in pixels."""

    channels: int
    height: int
    width: int

    @classmethod
    def of(cls, dataset: Any) -> DataShape:
        """The shape of an ``ImageDataset`` / ``ImageStream`` (anything with ``channels`` and ``resolution``)."""
        height, width = dataset.resolution
        return cls(int(dataset.channels), int(height), int(width))

    @property
    def longer_side(self) -> int:
        return max(self.height, self.width)

    def describe(self) -> str:
        """ "32x32 RGB", "28x28 grey", "64x48 4-channel" (height x width)."""
        kind = {1: "grey", 3: "RGB"}.get(self.channels, f"{self.channels}-channel")
        return f"{self.height}x{self.width} {kind}"


@dataclass(frozen=True)
class SizeRule:
    """Images a rule applies to: their channels (``grey`` = 1, ``colour`` = 2 or more, ``any``) and their longer
    side in pixels (at most ``max_side``; None = no bound)."""

    name: str
    channels: Literal["grey", "colour", "any"]
    max_side: int | None
    about: str  # one line for docs and messages

    def applies(self, shape: DataShape) -> bool:
        grey = shape.channels == 1
        fits = self.max_side is None or shape.longer_side <= self.max_side
        return fits and (self.channels == "any" or grey == (self.channels == "grey"))


# Tried in order; the last one matches every shape.
SIZE_RULES: tuple[SizeRule, ...] = (
    SizeRule("grey-small", "grey", 32, "greyscale up to 32 px: the built-in defaults, unchanged"),
    SizeRule("colour-small", "colour", 32, "colour up to 32 px: wider networks"),
    SizeRule("medium", "any", 64, "33 to 64 px: one more stage (provisional)"),
    SizeRule("large", "any", None, "over 64 px: more stages (provisional)"),
)
RULE_NAMES = tuple(rule.name for rule in SIZE_RULES)


def size_rule(shape: DataShape) -> SizeRule:
    """The first rule of ``SIZE_RULES`` that applies to ``shape``."""
    return next(rule for rule in SIZE_RULES if rule.applies(shape))


def most_stages(shape: DataShape) -> int:
    """How many resolution stages images of ``shape`` allow: every side halves (rounding up) from one stage to the
    next, and no stage may follow one that is 1x1 (``aediff.blocks.stage_shapes`` refuses that)."""
    stages = 1
    while max(stage_sizes(shape.height, stages)[-1], stage_sizes(shape.width, stages)[-1]) > 1:
        stages += 1
    return stages


@dataclass(frozen=True)
class NetworkDefaults:
    """A family's network for one size rule: config overrides, by field name (a bare name or a dotted path of the
    family's config, as ``--set`` takes them). None leaves the family's default."""

    channels: tuple[int, ...] | None = None  # width of each stage; cut to the stages the images allow
    # self-attention at this many of the lowest stages: their sizes follow the images (8 for 32 px, three stages);
    # None keeps the family's attention_resolutions
    attention_stages: int | None = None
    blocks_per_stage: int | None = None
    other: Mapping[str, Any] = field(default_factory=dict)  # e.g. {"bottleneck_dim": 128}

    def __post_init__(self) -> None:
        if self.attention_stages is not None and self.channels is None:
            raise ValueError("attention_stages counts the lowest of the stages `channels` gives: give both")

    def overrides(self, shape: DataShape) -> dict[str, Any]:
        """The overrides for images of ``shape``; lists, as config.json has them."""
        found: dict[str, Any] = {}
        channels = list(self.channels[: most_stages(shape)]) if self.channels is not None else None
        if channels is not None:
            found["channels"] = channels
        if channels is not None and self.attention_stages is not None:
            found["attention_resolutions"] = lowest_stage_sides(shape, len(channels), self.attention_stages)
        if self.blocks_per_stage is not None:
            found["blocks_per_stage"] = self.blocks_per_stage
        return {**found, **self.other}


def lowest_stage_sides(shape: DataShape, stages: int, count: int) -> list[int]:
    """The shorter sides (what ``attention_resolutions`` names) of the lowest ``count`` of ``stages`` stages on
    images of ``shape``, largest first; [] for ``count`` 0."""
    if not count:
        return []
    heights, widths = stage_sizes(shape.height, stages), stage_sizes(shape.width, stages)
    sides = [min(h, w) for h, w in zip(heights, widths, strict=True)]
    return sorted(set(sides[-count:]), reverse=True)


def network_defaults(size_defaults: Mapping[str, NetworkDefaults], shape: DataShape) -> tuple[SizeRule, dict]:
    """(the rule ``shape`` falls under, a family's overrides for it), from the family's ``size_defaults``."""
    rule = size_rule(shape)
    entry = size_defaults.get(rule.name)
    return rule, entry.overrides(shape) if entry is not None else {}
