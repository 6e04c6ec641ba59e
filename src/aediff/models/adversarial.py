"""The adversarial half of an autoencoder's loss: a PatchGAN discriminator and the pieces of Latent Diffusion's
``LPIPSWithDiscriminator`` (Rombach et al. 2022), itself taming-transformers' VQGAN loss (Esser et al. 2021).

Notation (theirs -> here): ``NLayerDiscriminator`` -> ``PatchDiscriminator``; ``hinge_d_loss`` -> ``hinge_d_loss``;
``calculate_adaptive_weight`` -> ``adaptive_weight``; ``nll_loss`` -> ``rec`` (the reconstruction loss);
``g_loss = -mean(D(x_hat))`` -> ``g_loss``; ``disc_start`` / ``disc_weight`` are the model config's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from aediff.errors import ConfigError

KERNEL = 4  # every convolution of the PatchGAN is 4x4 (padding 1)
MAX_WIDTH_FACTOR = 8  # widths double per layer up to 8x the first, as in pix2pix
ADAPTIVE_EPS = 1e-4  # added to the adversarial gradient's norm (LDM's)
ADAPTIVE_MAX = 1e4  # the adaptive weight is clamped to [0, ADAPTIVE_MAX] (LDM's)


def patch_grid(image_hw: tuple[int, int], layers: int) -> tuple[int, int]:
    """(h, w) of the logit map ``PatchDiscriminator`` gives for images of ``image_hw``: each stride-2 layer maps
    a side s to s // 2 (4x4 kernel, padding 1), each of the two stride-1 layers after them to s - 1."""
    return tuple((side >> layers) - 2 for side in image_hw)  # type: ignore[return-value]


def most_layers(image_hw: tuple[int, int]) -> int:
    """The most stride-2 layers whose logit map is still at least 1x1 on images of ``image_hw`` (0: none)."""
    layers = 0
    while min(patch_grid(image_hw, layers + 1)) >= 1:
        layers += 1
    return layers


def check_fits(image_hw: tuple[int, int], layers: int) -> None:
    """ConfigError, saying what to set, when ``layers`` stride-2 layers leave no logit on images of ``image_hw``."""
    if min(patch_grid(image_hw, layers)) >= 1:
        return
    h, w = image_hw
    most = most_layers(image_hw)
    fix = f"set disc_layers={most} (at most)" if most else "train without it: set disc_weight=0"
    raise ConfigError(
        f"a discriminator of disc_layers={layers} stride-2 layers is too deep for {h}x{w} images (each halves them "
        f"and two 4x4 convolutions follow, leaving no patch to judge); {fix}"
    )


class PatchDiscriminator(nn.Module):
    """PatchGAN (Isola et al. 2017) as taming-transformers' ``NLayerDiscriminator``, which LDM trains against its
    autoencoder: images [N, C, H, W] in [-1, 1] -> logits [N, 1, h, w], one per overlapping patch, h and w from
    ``patch_grid`` (positive: looks real). ``layers`` 4x4 stride-2 convolutions of widths channels * 2^i (at
    most 8x), a 4x4 stride-1 one, then a 4x4 stride-1 convolution to one channel; LeakyReLU(0.2) after each but
    the last, BatchNorm after each but the first and the last (those have no bias: BatchNorm has its own)."""

    def __init__(self, image_channels: int, channels: int, layers: int, image_hw: tuple[int, int]):
        super().__init__()
        check_fits(image_hw, layers)
        widths = [channels * min(2**i, MAX_WIDTH_FACTOR) for i in range(layers + 1)]
        parts: list[nn.Module] = [nn.Conv2d(image_channels, widths[0], KERNEL, 2, 1), nn.LeakyReLU(0.2)]
        for i in range(1, layers + 1):
            stride = 2 if i < layers else 1  # the last widening convolution keeps the size
            parts += [
                nn.Conv2d(widths[i - 1], widths[i], KERNEL, stride, 1, bias=False),
                nn.BatchNorm2d(widths[i]),
                nn.LeakyReLU(0.2),
            ]
        parts.append(nn.Conv2d(widths[-1], 1, KERNEL, 1, 1))
        self.main = nn.Sequential(*parts)
        self.apply(_init_weights)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.main(images)


def _init_weights(module: nn.Module) -> None:
    """taming-transformers' ``weights_init``: convolution weights N(0, 0.02); BatchNorm scale N(1, 0.02), shift 0."""
    if isinstance(module, nn.Conv2d):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """The discriminator's hinge loss, 0-d: (mean relu(1 - D(x)) + mean relu(1 + D(x_hat))) / 2; 0 once every
    real logit is >= 1 and every fake one <= -1."""
    return 0.5 * (F.relu(1 - logits_real).mean() + F.relu(1 + logits_fake).mean())


def generator_logits(discriminator: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The discriminator's logits of ``images`` with its parameters detached: gradients reach the images (the
    generator) and never the discriminator, so the generator's term of a loss summed with the discriminator's
    does not train the discriminator. Its buffers (BatchNorm's running statistics) are its own, as in LDM's
    generator pass."""
    detached = {name: p.detach() for name, p in discriminator.named_parameters()}
    return functional_call(discriminator, detached, (images,))


def adaptive_weight(
    rec: torch.Tensor, g_loss: torch.Tensor, last_layer: torch.Tensor, disc_weight: float
) -> torch.Tensor:
    """LDM's lambda, 0-d and detached: ||grad_w rec|| / (||grad_w g_loss|| + 1e-4), clamped to [0, 1e4], times
    ``disc_weight``, with w the decoder's last layer's weight: the adversarial term pulls on the decoder's output
    as hard as the reconstruction loss does, whatever their scales (Esser et al. 2021, eq. 7)."""
    rec_grad = torch.autograd.grad(rec, last_layer, retain_graph=True)[0]
    g_grad = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
    weight = rec_grad.norm() / (g_grad.norm() + ADAPTIVE_EPS)
    return weight.clamp(0.0, ADAPTIVE_MAX).detach() * disc_weight
