"""Shared building blocks: the vocabulary of the autoencoders and of the diffusion U-Net.

An autoencoder here is ``Encoder -> bottleneck -> Decoder``. The U-Net of the diffusion models is the
same ``Encoder`` and ``Decoder`` with two additions: the encoder's activations are handed to the decoder
as skip connections, and every residual block receives an embedding (of the noise level, plus a class
or a pooled caption). A conditioned U-Net's attention blocks also attend to a caption's tokens. These
additions are arguments of these blocks, not separate classes, so the code shows the kinship directly.

Residual blocks follow the pre-activation layout of Ho et al. 2020 / Dhariwal & Nichol 2021 (ADM):
GroupNorm -> SiLU -> 3x3 conv, twice, with the embedding applied as a scale and shift (FiLM) between.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from aediff.errors import ConfigError


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with up to 32 groups of at least 4 channels each (small widths keep working)."""
    groups = min(32, max(1, channels // 4))
    while channels % groups:
        groups -= 1
    return nn.GroupNorm(groups, channels)


def stage_sizes(image_size: int, num_stages: int) -> list[int]:
    """Spatial size at each stage: a stride-2, padding-1, 3x3 conv maps H to ceil(H / 2).

    28 -> [28, 14, 7]; 8 -> [8, 4, 2]; 32 -> [32, 16, 8].
    """
    sizes = [image_size]
    for _ in range(num_stages - 1):
        sizes.append((sizes[-1] + 1) // 2)
    return sizes


def stage_shapes(image_shape: int | tuple[int, int], num_stages: int) -> list[tuple[int, int]]:
    """(height, width) at each stage; each side halves on its own, as in ``stage_sizes``. An int is a square.

    (12, 20) -> [(12, 20), (6, 10), (3, 5)]; 28 -> [(28, 28), (14, 14), (7, 7)].
    """
    height, width = (image_shape, image_shape) if isinstance(image_shape, int) else image_shape
    shapes = list(zip(stage_sizes(height, num_stages), stage_sizes(width, num_stages), strict=True))
    if (1, 1) in shapes[:-1]:  # a stage after 1x1 halves nothing; its norms see single pixels and, in bf16, blew up
        most = shapes.index((1, 1)) + 1
        raise ConfigError(
            f"{height}x{width} images reach 1x1 after {most - 1} halving{'s' * (most != 2)}, so a network on them "
            f"has at most {most} stages; --widths gives {num_stages}: give at most {most} widths "
            f"(e.g. --widths {','.join(str(16 * 2**i) for i in range(most))})"
        )
    return shapes


def has_attention(shape: tuple[int, int], attention_resolutions: Sequence[int]) -> bool:
    """Whether a stage of ``shape`` (h, w) gets attention: its SHORTER side is one of ``attention_resolutions``
    (for a square, its side). One number per stage serves images of any aspect ratio."""
    return min(shape) in attention_resolutions


class ResBlock(nn.Module):
    """Residual block; optionally modulated by an embedding (timestep / condition).

    x: [N, in_channels, H, W]; emb: [N, emb_dim] or None -> [N, out_channels, H, W].
    """

    def __init__(self, in_channels: int, out_channels: int, emb_dim: int = 0, dropout: float = 0.0):
        super().__init__()
        self.norm1 = group_norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        # The embedding gives a per-channel scale and shift (FiLM), as in ADM's "use_scale_shift_norm".
        self.emb_proj = nn.Linear(emb_dim, 2 * out_channels) if emb_dim > 0 else None
        self.norm2 = group_norm(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.norm2(h)
        if self.emb_proj is not None:
            if emb is None:
                raise ValueError("this block was built with an embedding input (emb_dim > 0) but got emb=None")
            scale, shift = self.emb_proj(F.silu(emb))[:, :, None, None].chunk(2, dim=1)
            h = h * (1 + scale) + shift
        h = self.conv2(self.dropout(F.silu(h)))
        return self.shortcut(x) + h


class Attention2d(nn.Module):
    """Multi-head self-attention over the H*W positions, then, with ``context_dim``, cross-attention from
    the positions to a sequence of context tokens (a caption's token embeddings, as in Rombach et al.
    2022). Both residual. x: [N, C, H, W] -> same shape.

    forward(x, context [N, L, context_dim] | None, context_mask [N, L] bool (True = real token) | None).
    """

    def __init__(self, channels: int, num_heads: int = 4, context_dim: int = 0):
        super().__init__()
        self.num_heads = num_heads if channels % num_heads == 0 else 1
        self.norm = group_norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)
        self.context_dim = context_dim
        if context_dim:
            self.cross_norm = group_norm(channels)
            self.cross_q = nn.Conv2d(channels, channels, 1)
            self.cross_kv = nn.Linear(context_dim, 2 * channels)
            self.cross_proj = nn.Conv2d(channels, channels, 1)

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        """[N, C, P] -> [N, heads, P, C / heads]."""
        n, c, p = t.shape
        return t.reshape(n, self.num_heads, c // self.num_heads, p).transpose(-1, -2)

    def forward(
        self, x: torch.Tensor, context: torch.Tensor | None = None, context_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        n, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(n, 3, c, h * w).unbind(1)
        out = F.scaled_dot_product_attention(self._heads(q), self._heads(k), self._heads(v))
        x = x + self.proj(out.transpose(-1, -2).reshape(n, c, h, w))
        if not self.context_dim:
            return x
        if context is None:
            raise ValueError("this block was built with cross-attention; pass the context tokens")
        q = self._heads(self.cross_q(self.cross_norm(x)).reshape(n, c, h * w))
        k, v = self.cross_kv(context).transpose(1, 2).chunk(2, dim=1)  # each [N, C, L]
        mask = None if context_mask is None else context_mask[:, None, None, :]  # broadcast over heads, queries
        out = F.scaled_dot_product_attention(q, self._heads(k), self._heads(v), attn_mask=mask)
        return x + self.cross_proj(out.transpose(-1, -2).reshape(n, c, h, w))


def attend(
    block: nn.Module, h: torch.Tensor, context: torch.Tensor | None, context_mask: torch.Tensor | None
) -> torch.Tensor:
    """Apply ``block`` if it is an Attention2d (stages without attention hold an nn.Identity)."""
    return block(h, context, context_mask) if isinstance(block, Attention2d) else h


class Downsample(nn.Module):
    """Stride-2 3x3 conv: [N, C, H, W] -> [N, C, ceil(H/2), ceil(W/2)]."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest-neighbour upsampling to an exact (h, w), then a 3x3 conv (exact sizes keep 7 -> 14 -> 28)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return self.conv(F.interpolate(x, size=size, mode="nearest"))


class Encoder(nn.Module):
    """Image -> feature map at the lowest resolution, through residual blocks and downsampling.

    Stage i works at ``stage_shapes(image_shape, len(channels))[i]`` (h, w; an int image_shape is a square)
    with ``channels[i]`` channels: ``blocks_per_stage`` ResBlocks (plus attention where the stage's shorter
    side is in ``attention_resolutions``: self-attention, and cross-attention to context tokens when
    ``context_dim`` > 0), then a Downsample except after the last stage.

    forward(x [N, in_channels, H, W], emb [N, emb_dim] | None, context [N, L, context_dim] | None,
    context_mask [N, L] | None) -> (h [N, channels[-1], h, w], skips),
    where ``skips`` is the list of every intermediate activation (stem, each block, each downsample):
    the U-Net's decoder consumes them, an autoencoder ignores them.
    """

    def __init__(
        self,
        in_channels: int,
        channels: Sequence[int],
        blocks_per_stage: int,
        image_shape: int | tuple[int, int],
        attention_resolutions: Sequence[int] = (),
        emb_dim: int = 0,
        dropout: float = 0.0,
        context_dim: int = 0,
    ):
        super().__init__()
        self.shapes = stage_shapes(image_shape, len(channels))
        self.stem = nn.Conv2d(in_channels, channels[0], 3, padding=1)
        self.blocks = nn.ModuleList()
        self.attentions = nn.ModuleList()
        self.downsamples = nn.ModuleList()
        self.skip_channels = [channels[0]]
        width = channels[0]
        for stage, out_width in enumerate(channels):
            for _ in range(blocks_per_stage):
                self.blocks.append(ResBlock(width, out_width, emb_dim, dropout))
                use_attention = has_attention(self.shapes[stage], attention_resolutions)
                attention = Attention2d(out_width, context_dim=context_dim) if use_attention else nn.Identity()
                self.attentions.append(attention)
                width = out_width
                self.skip_channels.append(width)
            if stage < len(channels) - 1:
                self.downsamples.append(Downsample(width))
                self.skip_channels.append(width)
        self.blocks_per_stage = blocks_per_stage
        self.out_channels = width

    def forward(
        self,
        x: torch.Tensor,
        emb: torch.Tensor | None = None,
        context: torch.Tensor | None = None,
        context_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        h = self.stem(x)
        skips = [h]
        for stage in range(len(self.shapes)):
            for j in range(self.blocks_per_stage):
                i = stage * self.blocks_per_stage + j
                h = attend(self.attentions[i], self.blocks[i](h, emb), context, context_mask)
                skips.append(h)
            if stage < len(self.downsamples):
                h = self.downsamples[stage](h)
                skips.append(h)
        return h, skips


class Decoder(nn.Module):
    """Feature map at the lowest resolution -> image, mirroring ``Encoder``.

    Without skips (an autoencoder's decoder) each stage has ``blocks_per_stage`` ResBlocks. With
    ``skip_channels`` (the U-Net) each stage has one block more, and every block concatenates the
    matching encoder activation first (the skip connection), as in Ronneberger et al. 2015 / ADM.

    forward(h [N, channels[-1], h, w], emb [N, emb_dim] | None, skips | None, context | None,
    context_mask | None) -> [N, out_channels, H, W].
    """

    def __init__(
        self,
        out_channels: int,
        channels: Sequence[int],
        blocks_per_stage: int,
        image_shape: int | tuple[int, int],
        attention_resolutions: Sequence[int] = (),
        emb_dim: int = 0,
        dropout: float = 0.0,
        skip_channels: Sequence[int] | None = None,
        context_dim: int = 0,
    ):
        super().__init__()
        self.shapes = stage_shapes(image_shape, len(channels))
        self.use_skips = skip_channels is not None
        pending_skips = list(skip_channels) if skip_channels is not None else []
        self.blocks_per_stage = blocks_per_stage + (1 if self.use_skips else 0)
        self.blocks = nn.ModuleList()
        self.attentions = nn.ModuleList()
        self.upsamples = nn.ModuleList()
        width = channels[-1]
        for stage in reversed(range(len(channels))):
            out_width = channels[stage]
            for _ in range(self.blocks_per_stage):
                extra = pending_skips.pop() if self.use_skips else 0
                self.blocks.append(ResBlock(width + extra, out_width, emb_dim, dropout))
                use_attention = has_attention(self.shapes[stage], attention_resolutions)
                attention = Attention2d(out_width, context_dim=context_dim) if use_attention else nn.Identity()
                self.attentions.append(attention)
                width = out_width
            if stage > 0:
                self.upsamples.append(Upsample(width))
        self.out_norm = group_norm(width)
        self.out_conv = nn.Conv2d(width, out_channels, 3, padding=1)

    def forward(
        self,
        h: torch.Tensor,
        emb: torch.Tensor | None = None,
        skips: list[torch.Tensor] | None = None,
        context: torch.Tensor | None = None,
        context_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if self.use_skips and skips is None:
            raise ValueError("this decoder was built with skip connections; pass the encoder's skips")
        skips = list(skips) if skips is not None else []
        num_stages = len(self.shapes)
        for k, stage in enumerate(reversed(range(num_stages))):
            for j in range(self.blocks_per_stage):
                i = k * self.blocks_per_stage + j
                if self.use_skips:
                    h = torch.cat([h, skips.pop()], dim=1)
                h = attend(self.attentions[i], self.blocks[i](h, emb), context, context_mask)
            if stage > 0:
                h = self.upsamples[k](h, self.shapes[stage - 1])
        return self.out_conv(F.silu(self.out_norm(h)))


def sinusoidal_embedding(values: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Transformer-style sinusoidal features of scalars (Vaswani et al. 2017; DDPM's timestep input).

    values: [N] (timesteps or log noise levels, any real range) -> [N, dim].
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=values.device) / half)
    angles = values.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)
    return F.pad(emb, (0, dim % 2))


class TimestepEmbedding(nn.Module):
    """Sinusoidal features -> 2-layer MLP: the embedding every ResBlock of the U-Net receives.

    values: [N] -> [N, emb_dim].
    """

    def __init__(self, base_dim: int, emb_dim: int):
        super().__init__()
        self.base_dim = base_dim
        self.mlp = nn.Sequential(nn.Linear(base_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        return self.mlp(sinusoidal_embedding(values, self.base_dim))
