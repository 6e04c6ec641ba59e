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
from aediff.errors import DataError
from aediff.models.interface import Capability, Model
from aediff.models.registry import register_model


@dataclass
class ClassifierConfig:
    image_channels: int = 1  # set from the data by the trainer
    image_size: int = 28  # set from the data by the trainer
    num_classes: int = 10  # set from the data by the trainer
    channels: tuple[int, ...] = (32, 64, 128)  # width per stage of the encoder
    blocks_per_stage: int = 1
    feature_dim: int = 128  # size of the penultimate features used for FID / KID
    dropout: float = 0.1


@register_model
class Classifier(Model):
    """x: [N, C, S, S] in [-1, 1] -> logits [N, num_classes]; ``features(x)`` -> [N, feature_dim]."""

    family = "classifier"
    config_class = ClassifierConfig
    declared = frozenset({Capability.CLASSIFY})

    def __init__(self, config: ClassifierConfig):
        super().__init__()
        self.config = config
        c = config
        self.encoder = Encoder(c.image_channels, c.channels, c.blocks_per_stage, c.image_size, dropout=c.dropout)
        self.pool = nn.Sequential(group_norm(c.channels[-1]), nn.SiLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.to_features = nn.Linear(c.channels[-1], c.feature_dim)
        self.head = nn.Linear(c.feature_dim, c.num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features, [N, feature_dim] (after the non-linearity)."""
        h, _ = self.encoder(x)
        return F.silu(self.to_features(self.pool(h)))

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
