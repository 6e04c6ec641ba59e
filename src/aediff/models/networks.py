"""The denoiser's network, by ``NetworkConfig.architecture``: aediff's U-Net, diffusers' ``UNet2DModel`` of the
same shape, or denoising-diffusion-pytorch's (lucidrains') ``Unet``, so a peer's network can be trained inside
aediff's recipe (objective, schedule, EMA, sampler) and what comes from the network is told apart from what
comes from the recipe.

Both take (x_in [N, C, H, W], c_noise [N], class_labels [N] or None) and return F [N, C, H, W]; the
parameterization (``aediff.diffusion.parameterization.Denoiser``) wraps either. diffusers' network is built
from the same ``UNetConfig``: ``channels`` are its ``block_out_channels``, ``blocks_per_stage`` its
``layers_per_block``, a stage whose shorter side is in ``attention_resolutions`` gets its attention blocks
(``AttnDownBlock2D`` / ``AttnUpBlock2D``), class labels its ``num_class_embeds`` (num_classes + 1: the last
is the null class). c_noise = 250 ln(sigma) goes in as its timestep: its sinusoidal embedding takes any real
value. Text conditioning and ``skip_connections=False`` have no counterpart there and are refused.

lucidrains' ``Unet`` keeps its own layout (two ResBlocks per stage, linear attention at every stage and full
attention at the deepest, a 7x7 stem); from the ``UNetConfig`` it takes the widths only: ``dim`` is
``channels[0]`` and ``dim_mults`` the widths over it. It has no class or text conditioning.
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
        factor, (height, width) = 2 ** (len(config.channels) - 1), config.image_hw
        if height % factor or width % factor:  # its decoder doubles each side: the skips would not line up
            raise ConfigError(
                f"--network diffusers-unet2d with {len(config.channels)} stages needs images whose height and width "
                f"are each a multiple of {factor}; got {height}x{width}: use fewer --widths"
            )
        self.config = config
        sizes = [min(config.image_hw) // 2**i for i in range(len(config.channels))]  # each stage's shorter side
        attention = [size in config.attention_resolutions for size in sizes]
        self.unet = UNet2DModel(
            sample_size=config.image_hw,
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

    def feature_modules(self) -> dict[str, nn.Module]:
        """As ``UNet.feature_modules``: the last down block's output and the mid block's."""
        return {"unet-encoder": self.unet.down_blocks[-1], "unet-mid": self.unet.mid_block}

    def forward(
        self, x: torch.Tensor, noise_level: torch.Tensor, class_labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        """x [N, C, H, W], noise_level [N] -> F [N, C, H, W]; no label: the null class."""
        if self.config.num_classes and class_labels is None:
            class_labels = torch.full((len(x),), self.config.num_classes, dtype=torch.long, device=x.device)
        return self.unet(x, noise_level, class_labels=class_labels).sample


class DDPMPytorchUnet(nn.Module):
    """denoising-diffusion-pytorch's Unet with the widths of a UNetConfig, aediff's network signature (module
    docstring)."""

    def __init__(self, config: UNetConfig):
        super().__init__()
        flag = "--network ddpm-pytorch-unet"
        try:
            from denoising_diffusion_pytorch.denoising_diffusion_pytorch import Unet
        except ImportError:
            raise ConfigError(
                f"{flag} needs denoising-diffusion-pytorch; install it with `pip install denoising-diffusion-pytorch`"
            ) from None
        if config.context_dim or config.num_classes:
            raise ConfigError(f"{flag} has no class or text conditioning; use --network aediff for it")
        if not config.skip_connections:
            raise ConfigError(f"{flag} always has its skip connections; drop skip_connections")
        dim = config.channels[0]
        if any(width % dim for width in config.channels):
            raise ConfigError(f"{flag} needs every width a multiple of the first (its dim_mults); got "
                              f"{','.join(map(str, config.channels))}: try --widths 32,64,128")  # fmt: skip
        factor = 2 ** (len(config.channels) - 1)
        height, width = config.image_hw
        if height % factor or width % factor:
            got = height if height == width else f"{height}x{width}"
            raise ConfigError(f"{flag} with {len(config.channels)} stages needs images whose height and width are "
                              f"each a multiple of {factor}; got {got}: use fewer --widths")  # fmt: skip
        self.config = config
        self.unet = Unet(dim=dim, dim_mults=tuple(w // dim for w in config.channels), channels=config.image_channels,
                         dropout=config.dropout)  # fmt: skip

    def feature_modules(self) -> dict[str, nn.Module]:
        """None read yet: its layout is its own (not tested here, where the package is not installed)."""
        return {}

    def forward(
        self, x: torch.Tensor, noise_level: torch.Tensor, class_labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        """x [N, C, H, W], noise_level [N] -> F [N, C, H, W]; class_labels are always None (refused above)."""
        return self.unet(x, noise_level)


NETWORKS: dict[str, type[nn.Module]] = {
    "aediff": UNet,
    "diffusers-unet2d": DiffusersUNet2D,
    "ddpm-pytorch-unet": DDPMPytorchUnet,
}  # one per modes.NetworkKind


def build_network(kind: str, config: UNetConfig) -> nn.Module:
    """The network of ``kind`` (``NetworkConfig.architecture``, a modes.NetworkKind) shaped by ``config``."""
    return NETWORKS[kind](config)
