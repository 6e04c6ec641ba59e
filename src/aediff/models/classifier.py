"""A small image classifier from the encoder blocks. Its penultimate features give a Frechet distance
and KID for datasets that Inception was never trained on (MNIST-like digits, small greyscale sets):
the same idea as FID (Heusel et al. 2017) with a domain-appropriate feature extractor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from aediff.blocks import Encoder, group_norm
from aediff.config import (
    MAX_BLOCKS,
    MAX_CLASSES,
    MAX_IMAGE_CHANNELS,
    MAX_IMAGE_SIZE,
    MAX_STAGES,
    MAX_WIDTH,
    ImageShape,
    bounded,
    bounded_items,
    check_ranges,
)
from aediff.errors import DataError
from aediff.models.defaults import NetworkDefaults
from aediff.models.interface import Capability, Model
from aediff.models.registry import register_model


@dataclass
class ClassifierConfig(ImageShape):
    """Ranges are declared with each field (``aediff.config.bounded``) and checked when the config is built."""

    image_channels: int = bounded(1, 1, MAX_IMAGE_CHANNELS)  # set from the data by the trainer
    image_size: int = bounded(28, 1, MAX_IMAGE_SIZE)  # height, pixels; set from the data by the trainer
    image_width: int | None = bounded(None, 1, MAX_IMAGE_SIZE)  # width, pixels; None = image_size (square)
    num_classes: int = bounded(10, 1, MAX_CLASSES)  # set from the data by the trainer
    # width per stage of the encoder
    channels: tuple[int, ...] = bounded_items((32, 64, 128), 1, MAX_WIDTH, max_items=MAX_STAGES)
    blocks_per_stage: int = bounded(1, 1, MAX_BLOCKS)
    feature_dim: int = bounded(128, 1, MAX_WIDTH)  # size of the penultimate features used for FID / KID
    dropout: float = bounded(0.1, 0, 1, high_open=True)

    def __post_init__(self) -> None:
        check_ranges(self)


# The judge's encoder per size rule (aediff.models.defaults): colour up to 32 px keeps the defaults above; larger
# images get a stage more per doubling, so that the features are pooled from about 8 px. PROVISIONAL: not searched.
CLASSIFIER_SIZES: dict[str, NetworkDefaults] = {
    "medium": NetworkDefaults(channels=(32, 64, 128, 128)),
    "large": NetworkDefaults(channels=(32, 64, 128, 256, 256)),
}


@register_model
class Classifier(Model):
    """x: [N, C, H, W] in [-1, 1] -> logits [N, num_classes]; ``features(x)`` -> [N, feature_dim];
    ``layer_features(x)`` -> [N, layer_feature_dim] (also sees blur, see ``aediff.evaluation.judges``)."""

    family = "classifier"
    config_class = ClassifierConfig
    size_defaults = CLASSIFIER_SIZES
    declared = frozenset({Capability.CLASSIFY})

    def __init__(self, config: ClassifierConfig):
        super().__init__()
        self.config = config
        c = config
        self.encoder = Encoder(c.image_channels, c.channels, c.blocks_per_stage, c.image_hw, dropout=c.dropout)
        self.pool = nn.Sequential(group_norm(c.channels[-1]), nn.SiLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.to_features = nn.Linear(c.channels[-1], c.feature_dim)
        self.head = nn.Linear(c.feature_dim, c.num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features, [N, feature_dim] (after the non-linearity)."""
        h, _ = self.encoder(x)
        return F.silu(self.to_features(self.pool(h)))

    def layer_features(self, x: torch.Tensor) -> torch.Tensor:
        """Features that also see blur: [N, layer_feature_dim] = [N, 2 * channels[0] + feature_dim].

        x: [N, C, H, W] in [-1, 1]. For the two full-resolution feature maps of the encoder (the stem conv and
        the first stage's last block), per channel the log of the RMS spatial gradient,
        ``log(sqrt(mean(dx^2) + mean(dy^2)) + 1e-3)`` over the H x W positions, then the penultimate
        ``features(x)``. The gradient energy of the early maps is the edge and stroke-contrast energy that
        blur removes (the penultimate features are trained to ignore it); the log makes it scale-free, so a
        uniform loss of sharpness moves every channel alike and its units are comparable with the
        penultimate features' instead of vanishing next to them. With the default widths D = 192, small
        enough for a Frechet distance from a few hundred samples.
        """
        h, skips = self.encoder(x)
        # skips[0]: stem output; skips[blocks_per_stage]: the first stage's last block, both at H x W
        early = [skips[0], skips[self.config.blocks_per_stage]]
        stats = [_log_gradient_energy(a) for a in early]
        penultimate = F.silu(self.to_features(self.pool(h)))
        return torch.cat([*stats, penultimate], dim=1)

    @property
    def feature_dim(self) -> int:
        """D of ``features``."""
        return self.config.feature_dim

    @property
    def layer_feature_dim(self) -> int:
        """D of ``layer_features``: two early maps of channels[0] channels each, plus feature_dim."""
        return 2 * self.config.channels[0] + self.config.feature_dim

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores [N, num_classes] (before the softmax)."""
        return self.head(self.features(x))

    def forward(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        """Cross-entropy on the labels."""
        if "labels" not in batch:
            raise DataError(
                "the classifier needs labelled data: use a dataset with labels "
                "(e.g. mnist5k, digits, or folder:PATH with one sub-folder per class)"
            )
        logits = self.logits(batch["images"])
        loss = F.cross_entropy(logits, batch["labels"])
        accuracy = (logits.argmax(1) == batch["labels"]).float().mean()
        return loss, {"accuracy": accuracy.item()}


def _log_gradient_energy(a: torch.Tensor) -> torch.Tensor:
    """[N, C, H, W] -> [N, C]: log of each channel's RMS finite-difference gradient over the positions.
    The 1e-3 floor keeps a flat map finite (zero padding makes even a blank image's maps non-flat)."""
    dx = a[..., :, 1:] - a[..., :, :-1]
    dy = a[..., 1:, :] - a[..., :-1, :]
    return (dx.pow(2).mean(dim=(2, 3)) + dy.pow(2).mean(dim=(2, 3))).sqrt().add(1e-3).log()
