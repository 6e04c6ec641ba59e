"""The diffusion network: the autoencoder's Encoder and Decoder, plus skip connections, plus a noise-level
embedding fed to every residual block (Ho et al. 2020; Dhariwal & Nichol 2021).

It is a plain function of its inputs, ``UNet(x, noise_level, condition...) -> output``, and knows nothing
of noise schedules or of what its output means (noise, clean image or velocity): that is the
parameterization wrapper's business (``aediff.diffusion.parameterization``). With
``skip_connections=False`` it is the same network without skips: an autoencoder-shaped denoiser.

Conditions enter the way the noise level does, plus cross-attention for text: a class label's embedding
and a caption's pooled embedding are added to the noise-level embedding that every ResBlock receives;
a caption's token embeddings are attended to at the attention resolutions (Rombach et al. 2022).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from aediff.blocks import Attention2d, Decoder, Encoder, ResBlock, TimestepEmbedding
from aediff.config import (
    MAX_BLOCKS,
    MAX_CLASSES,
    MAX_IMAGE_SIZE,
    MAX_LATENT_CHANNELS,
    MAX_STAGES,
    MAX_WIDTH,
    ImageShape,
    bounded,
    bounded_items,
    check_ranges,
)


@dataclass
class UNetConfig(ImageShape):
    """Ranges as in ``aediff.models.diffusion.NetworkConfig``; image_channels may be a latent's channels."""

    image_channels: int = bounded(1, 1, MAX_LATENT_CHANNELS)  # channels of x (and of the output)
    image_size: int = bounded(28, 1, MAX_IMAGE_SIZE)  # height of the input, pixels
    image_width: int | None = bounded(None, 1, MAX_IMAGE_SIZE)  # width, pixels; None = image_size (square)
    # width of each resolution stage
    channels: tuple[int, ...] = bounded_items((32, 64, 64), 1, MAX_WIDTH, max_items=MAX_STAGES)
    blocks_per_stage: int = bounded(1, 1, MAX_BLOCKS)  # encoder ResBlocks per stage (the decoder has one more)
    # stage sizes (pixels; a stage's shorter side) with self-attention
    attention_resolutions: tuple[int, ...] = bounded_items((7,), 1, MAX_IMAGE_SIZE, min_items=0)
    dropout: float = bounded(0.0, 0, 1, high_open=True)
    embedding_dim: int = bounded(128, 1, MAX_WIDTH)  # width of the noise-level embedding given to every ResBlock
    skip_connections: bool = True  # False: an autoencoder-shaped denoiser (no encoder -> decoder skips)
    # > 0: class-conditional; label num_classes means "no class" (for guidance)
    num_classes: int = bounded(0, 0, MAX_CLASSES)
    # > 0: width of the text tokens attended to (and of the pooled text embedding)
    context_dim: int = bounded(0, 0, MAX_WIDTH)

    def __post_init__(self) -> None:
        check_ranges(self)


class UNet(nn.Module):
    """x: [N, C, H, W]; noise_level: [N] (any real scalar per image, e.g. log(sigma) / 4) -> [N, C, H, W].

    Conditions (only those the config enables): class_labels [N] int64 in [0, num_classes] (num_classes =
    none); context [N, L, context_dim] caption tokens with context_mask [N, L] bool (True = real token)
    and pooled [N, context_dim].
    """

    def __init__(self, config: UNetConfig):
        super().__init__()
        self.config = config
        c = config
        self.embed_noise = TimestepEmbedding(c.channels[0], c.embedding_dim)
        if c.num_classes:
            self.embed_class = nn.Embedding(c.num_classes + 1, c.embedding_dim)  # N(0, 1) init, as in ADM
        if c.context_dim:
            self.embed_pooled = nn.Sequential(
                nn.Linear(c.context_dim, c.embedding_dim), nn.SiLU(), nn.Linear(c.embedding_dim, c.embedding_dim)
            )
        # What the encoder and decoder stacks share (Encoder / Decoder take the same arguments).
        stack = {
            "channels": c.channels,
            "blocks_per_stage": c.blocks_per_stage,
            "image_shape": c.image_hw,
            "attention_resolutions": c.attention_resolutions,
            "emb_dim": c.embedding_dim,
            "dropout": c.dropout,
            "context_dim": c.context_dim,
        }
        self.encoder = Encoder(c.image_channels, **stack)
        width = c.channels[-1]
        # The bottleneck ("middle"): as in ADM, two ResBlocks around attention at the lowest resolution.
        self.middle = nn.ModuleList(
            [
                ResBlock(width, width, c.embedding_dim, c.dropout),
                Attention2d(width, context_dim=c.context_dim),
                ResBlock(width, width, c.embedding_dim, c.dropout),
            ]
        )
        skips = self.encoder.skip_channels if c.skip_connections else None
        self.decoder = Decoder(c.image_channels, skip_channels=skips, **stack)

    def feature_modules(self) -> dict[str, nn.Module]:
        """The levels whose activations ``DiffusionModel.features`` reads: the encoder's output at its lowest
        resolution ("unet-encoder") and the bottleneck after the middle blocks ("unet-mid")."""
        return {"unet-encoder": self.encoder, "unet-mid": self.middle[2]}

    def forward(
        self,
        x: torch.Tensor,
        noise_level: torch.Tensor,
        class_labels: torch.Tensor | None = None,
        context: torch.Tensor | None = None,
        context_mask: torch.Tensor | None = None,
        pooled: torch.Tensor | None = None,
    ) -> torch.Tensor:
        c = self.config
        emb = self.embed_noise(noise_level)
        if c.num_classes:
            if class_labels is None:  # no label given: the "no class" entry
                class_labels = torch.full((len(x),), c.num_classes, dtype=torch.long, device=x.device)
            emb = emb + self.embed_class(class_labels)
        if c.context_dim:
            if context is None or pooled is None:
                raise ValueError("this U-Net is text-conditioned; pass context, context_mask and pooled")
            emb = emb + self.embed_pooled(pooled.to(emb.dtype))
            context = context.to(x.dtype)
        h, skips = self.encoder(x, emb, context, context_mask)
        h = self.middle[0](h, emb)
        h = self.middle[1](h, context, context_mask)
        h = self.middle[2](h, emb)
        return self.decoder(h, emb, skips if c.skip_connections else None, context, context_mask)
