"""The denoiser's network, by ``NetworkConfig.architecture``: aediff's U-Net, or diffusers' ``UNet2DModel`` of the same
shape, so a peer's network can be trained inside aediff's recipe (objective, schedule, EMA, sampler) and
what comes from the network is told apart from what comes from the recipe.

Both take (x_in [N, C, S, S], c_noise [N], class_labels [N] or None) and return F [N, C, S, S]; the
parameterization (``aediff.diffusion.parameterization.Denoiser``) wraps either. diffusers' network is built
from the same ``UNetConfig``: ``channels`` are its ``block_out_channels``, ``blocks_per_stage`` its
``layers_per_block``, a stage whose size is in ``attention_resolutions`` gets its attention blocks
(``AttnDownBlock2D`` / ``AttnUpBlock2D``), class labels its ``num_class_embeds`` (num_classes + 1: the last
is the null class). c_noise = 250 ln(sigma) goes in as its timestep: its sinusoidal embedding takes any real
value. Text conditioning and ``skip_connections=False`` have no counterpart there and are refused.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from aediff.errors import ConfigError
from aediff.models.unet import UNet, UNetConfig


class DiffusersUNet2D(nn.Module):
    """diffusers' UNet2DModel shaped by a UNetConfig, with aediff's network signature (module docstring)."""

    def __init__(self, config: UNetConfig):
        super().__init__()
        try:
            from diffusers import UNet2DModel
        except ImportError:
            raise ConfigError(
                "--network diffusers-unet2d needs diffusers; install it with `pip install diffusers`"
            ) from None
        if config.context_dim:
            raise ConfigError("--network diffusers-unet2d has no text conditioning; use --network aediff for it")
        if not config.skip_connections:
            raise ConfigError("--network diffusers-unet2d always has its skip connections; drop skip_connections")
        self.config = config
        sizes = [config.image_size // 2**i for i in range(len(config.channels))]
        attention = [size in config.attention_resolutions for size in sizes]
        self.unet = UNet2DModel(
            sample_size=config.image_size,
            in_channels=config.image_channels,
            out_channels=config.image_channels,
            block_out_channels=tuple(config.channels),
            layers_per_block=config.blocks_per_stage,
            down_block_types=tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attention),
            up_block_types=tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention)),
            norm_num_groups=math.gcd(32, *config.channels),  # diffusers' 32 where every width allows it
            dropout=config.dropout,
            num_class_embeds=config.num_classes + 1 if config.num_classes else None,
        )

    def forward(
        self, x: torch.Tensor, noise_level: torch.Tensor, class_labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        """x [N, C, S, S], noise_level [N] -> F [N, C, S, S]; no label: the null class."""
        if self.config.num_classes and class_labels is None:
            class_labels = torch.full((len(x),), self.config.num_classes, dtype=torch.long, device=x.device)
        return self.unet(x, noise_level, class_labels=class_labels).sample


def build_network(kind: str, config: UNetConfig) -> nn.Module:
    """The network of ``kind`` (``NetworkConfig.architecture``: "aediff" or "diffusers-unet2d") shaped by ``config``."""
    return UNet(config) if kind == "aediff" else DiffusersUNet2D(config)
