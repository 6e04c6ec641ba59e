"""The diffusion network: the autoencoder's Encoder and Decoder, plus skip connections, plus a noise-level
embedding fed to every residual block (Ho et al. 2020; Dhariwal & Nichol 2021).

It is a plain function of its inputs, ``UNet(x, noise_level) -> output``, and knows nothing of noise
schedules or of what its output means (noise, clean image or velocity): that is the parameterization
wrapper's business (``aediff.diffusion.parameterization``). With ``skip_connections=False`` it is the
same network without skips: an autoencoder-shaped denoiser, for comparison.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from aediff.blocks import Decoder, Encoder, ResBlock, SelfAttention2d, TimestepEmbedding


@dataclass
class UNetConfig:
    image_channels: int = 1  # channels of x (and of the output)
    image_size: int = 28  # side of the square input, pixels
    channels: tuple[int, ...] = (32, 64, 64)  # width of each resolution stage
    blocks_per_stage: int = 1  # encoder ResBlocks per stage (the decoder has one more with skips)
    attention_resolutions: tuple[int, ...] = (7,)  # stage sizes (pixels) with self-attention
    dropout: float = 0.0
    embedding_dim: int = 128  # width of the noise-level embedding given to every ResBlock
    skip_connections: bool = True  # False: an autoencoder-shaped denoiser (no encoder -> decoder skips)


class UNet(nn.Module):
    """x: [N, C, S, S]; noise_level: [N] (any real scalar per image, e.g. log(sigma) / 4) -> [N, C, S, S]."""

    def __init__(self, config: UNetConfig):
        super().__init__()
        self.config = config
        c = config
        self.embed_noise = TimestepEmbedding(c.channels[0], c.embedding_dim)
        self.encoder = Encoder(c.image_channels, c.channels, c.blocks_per_stage, c.image_size,
                               c.attention_resolutions, emb_dim=c.embedding_dim, dropout=c.dropout)
        width = c.channels[-1]
        # The bottleneck ("middle"): as in ADM, two ResBlocks around self-attention at the lowest resolution.
        self.middle = nn.ModuleList([ResBlock(width, width, c.embedding_dim, c.dropout), SelfAttention2d(width),
                                     ResBlock(width, width, c.embedding_dim, c.dropout)])
        self.decoder = Decoder(c.image_channels, c.channels, c.blocks_per_stage, c.image_size,
                               c.attention_resolutions, emb_dim=c.embedding_dim, dropout=c.dropout,
                               skip_channels=self.encoder.skip_channels if c.skip_connections else None)

    def forward(self, x: torch.Tensor, noise_level: torch.Tensor) -> torch.Tensor:
        emb = self.embed_noise(noise_level)
        h, skips = self.encoder(x, emb)
        h = self.middle[2](self.middle[1](self.middle[0](h, emb)), emb)
        return self.decoder(h, emb, skips if self.config.skip_connections else None)
