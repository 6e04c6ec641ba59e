"""Deterministic autoencoder: Encoder -> bottleneck -> Decoder (Hinton & Salakhutdinov 2006).

The bottleneck is either a vector of ``bottleneck_dim`` numbers or a spatial latent of
``latent_channels`` x h x w at the encoder's lowest resolution (the shape latent diffusion uses).
An AE has no prior, so ``sample`` draws from a Gaussian fitted to the training set's latents
(``fit_latent_prior``, run by the trainer when training ends).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from aediff.blocks import Decoder, Encoder, group_norm, stage_shapes
from aediff.config import (
    MAX_BLOCKS,
    MAX_IMAGE_CHANNELS,
    MAX_IMAGE_SIZE,
    MAX_LATENT_CHANNELS,
    MAX_STAGES,
    MAX_WIDTH,
    ImageShape,
    bounded,
    bounded_items,
    check_ranges,
    resolve_field,
)
from aediff.diffusion.degradations import Degradation
from aediff.diffusion.restoration import RestoreOptions
from aediff.diffusion.samplers import SamplerOptions
from aediff.errors import ConfigError, RunError
from aediff.models.defaults import NetworkDefaults
from aediff.models.interface import Capability, ClassSampler, Condition, Model, check_no_sampling_choices
from aediff.models.registry import register_model
from aediff.modes import LatentKind


@dataclass
class AEConfig(ImageShape):
    """Ranges are declared with each field (``aediff.config.bounded``) and checked when the config is built."""

    image_channels: int = bounded(1, 1, MAX_IMAGE_CHANNELS)  # 1 = greyscale, 3 = RGB; set from the data
    image_size: int = bounded(28, 1, MAX_IMAGE_SIZE)  # height of the images, pixels; set from the data
    image_width: int | None = bounded(None, 1, MAX_IMAGE_SIZE)  # width, pixels; None = image_size (square)
    # width of each resolution stage; len-1 halvings
    channels: tuple[int, ...] = bounded_items((16, 32, 64), 1, MAX_WIDTH, max_items=MAX_STAGES)
    blocks_per_stage: int = bounded(1, 1, MAX_BLOCKS)  # residual blocks per stage, in the encoder and decoder
    # stage sizes (pixels; a stage's shorter side) that get self-attention; sizes no stage has are ignored
    # (defaults serve any data)
    attention_resolutions: tuple[int, ...] = bounded_items((), 1, MAX_IMAGE_SIZE, min_items=0)
    dropout: float = bounded(0.0, 0, 1, high_open=True)  # inside residual blocks
    latent: LatentKind = "vector"  # bottleneck shape
    bottleneck_dim: int = bounded(32, 1, MAX_WIDTH)  # numbers in the vector latent (latent="vector")
    latent_channels: int = bounded(4, 1, MAX_LATENT_CHANNELS)  # channels of the spatial latent (latent="spatial")

    def __post_init__(self) -> None:
        check_ranges(self)


# The network of a new run per size rule (aediff.models.defaults; greyscale up to 32 px keeps AEConfig's defaults).
# Inherited by the VAE, DAE, KL and VQ autoencoders. colour-small keeps the digits' widths: of 16,32,64 / 32,64,128 /
# 64,128,256 trained for 3 CPU-minutes each on CIFAR-10 (benchmarks/results/colour_defaults.md, validation split),
# the narrowest reconstructed best (more steps in the budget). medium and large are provisional (not searched).
# The vector bottleneck keeps the digits' 24 pixel values per latent number (784 / 32; 3072 / 128 at 32x32 RGB).
# The spatial latent is 8x8 with 4 channels on 32 and 64 px images (LDM's f4 and f8), a sixteenth of the side with
# LDM's f16 width of 16 channels above.
AE_SIZES: dict[str, NetworkDefaults] = {
    "colour-small": NetworkDefaults(other={"bottleneck_dim": 128}),
    "medium": NetworkDefaults(channels=(32, 64, 128, 128), other={"bottleneck_dim": 256}),
    "large": NetworkDefaults(channels=(32, 64, 128, 256, 256), other={"bottleneck_dim": 512, "latent_channels": 16}),
}


def fit_gaussian(latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean [d], Cholesky factor [d, d] of the covariance), float32, of latents [N, d] (float64)."""
    mean = latents.mean(0)
    # One latent has no spread to estimate (correction 1 would divide by zero): its covariance is 0 + jitter.
    cov = torch.cov(latents.T, correction=int(len(latents) > 1)).reshape(mean.numel(), mean.numel())
    # A little jitter keeps the Cholesky factor defined when the latents span fewer dimensions.
    jitter = 1e-5 * cov.diagonal().mean().clamp_min(1e-8)
    cov = cov + jitter * torch.eye(len(mean), dtype=cov.dtype, device=cov.device)
    return mean.float(), torch.linalg.cholesky(cov).float()


@dataclass(frozen=True)
class ClassGaussians:
    """A Gaussian fitted to each class's latents (``fit_gaussian`` per class): means [K, d], Cholesky factors
    [K, d, d] (K: the largest label + 1; a class without latents keeps N(0, I), never drawn from data labels)."""

    means: torch.Tensor
    scale_trils: torch.Tensor

    @classmethod
    def fit(cls, latents: torch.Tensor, labels: torch.Tensor) -> ClassGaussians:
        """latents [N, d] (float64), labels [N] int64 class indices."""
        labels = labels.to(latents.device)
        k, d = int(labels.max()) + 1, latents.shape[1]
        means, trils = torch.zeros(k, d), torch.eye(d).repeat(k, 1, 1)
        for c in labels.unique().tolist():
            means[c], trils[c] = fit_gaussian(latents[labels == c])
        return cls(means, trils)

    def sample(self, labels: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """One latent [len(labels), d] from each label's Gaussian; the noise is drawn on the generator's device."""
        device = generator.device if generator is not None else self.means.device
        eps = torch.randn(len(labels), self.means.shape[1], device=device, generator=generator).cpu()
        labels = labels.cpu()
        return self.means[labels] + torch.einsum("nij,nj->ni", self.scale_trils[labels], eps)


# The per-class Gaussians of ``class_sampler`` see at most this many training images: a thousand a class on CIFAR-10
# is several times its colour-small latent sizes (128 numbers; 256 spatial), and encoding all 50,000 images took
# about a minute per autoencoder on 2 cores, once per evaluation. mnist5k's 5,000 are all seen, as before.
CLASS_FIT_IMAGES = 10_000


def class_fit_indices(labels: torch.Tensor, limit: int) -> torch.Tensor:
    """Sorted indices of about ``limit`` of the images with ``labels`` [N] (all of them when N <= limit): each
    class keeps its share, at least one image, spread evenly over its own images."""
    if len(labels) <= limit:
        return torch.arange(len(labels))
    picked = []
    for c in labels.unique():
        where = (labels == c).nonzero().flatten()
        count = max(1, round(limit * len(where) / len(labels)))
        picked.append(where[torch.linspace(0, len(where) - 1, count).round().long()])
    return torch.cat(picked).sort().values


@register_model
class Autoencoder(Model):
    """x: [N, C, H, W] in [-1, 1]; z: [N, bottleneck_dim] or [N, latent_channels, h, w] (h, w: the encoder's
    lowest stage)."""

    family = "ae"
    config_class = AEConfig
    declared = frozenset(
        {Capability.LATENT, Capability.GENERATE, Capability.DENOISE, Capability.SAMPLE_CLASSES, Capability.RESTORE}
    )
    size_defaults = AE_SIZES
    latent_outputs = 1  # numbers per latent unit the encoder head emits (the VAE emits mean and log-var)

    @classmethod
    def unread_settings(cls, model: Mapping[str, Any]) -> frozenset[str]:
        """A spatial latent never reads ``bottleneck_dim``; a vector one never reads ``latent_channels``."""
        chosen = [value for key, value in model.items() if resolve_field(cls.config_class, key) == "latent"]
        latent = chosen[-1] if chosen else cls.config_class.latent
        return frozenset({"bottleneck_dim"} if latent == "spatial" else {"latent_channels"})

    def __init__(self, config: AEConfig):
        super().__init__()
        self.config = config
        c = config
        self.encoder = Encoder(
            c.image_channels, c.channels, c.blocks_per_stage, c.image_hw, c.attention_resolutions, dropout=c.dropout
        )
        self.decoder = Decoder(
            self.decoder_out_channels,
            c.channels,
            c.blocks_per_stage,
            c.image_hw,
            c.attention_resolutions,
            dropout=c.dropout,
        )
        width, (low_h, low_w) = c.channels[-1], stage_shapes(c.image_hw, len(c.channels))[-1]
        if c.latent == "vector":
            self.to_latent = nn.Sequential(
                group_norm(width),
                nn.SiLU(),
                nn.Flatten(),
                nn.Linear(width * low_h * low_w, self.latent_outputs * c.bottleneck_dim),
            )
            self.from_latent = nn.Sequential(
                nn.Linear(c.bottleneck_dim, width * low_h * low_w), nn.Unflatten(1, (width, low_h, low_w))
            )
            latent_shape: tuple[int, ...] = (c.bottleneck_dim,)
        else:
            self.to_latent = nn.Sequential(
                group_norm(width), nn.SiLU(), nn.Conv2d(width, self.latent_outputs * c.latent_channels, 1)
            )
            self.from_latent = nn.Conv2d(c.latent_channels, width, 3, padding=1)
            latent_shape = (c.latent_channels, low_h, low_w)
        self.latent_shape = latent_shape
        # Gaussian fitted to the training latents (mean and Cholesky factor of the covariance of the
        # flattened latent); buffers, so they travel inside the safetensors files.
        d = math.prod(latent_shape)  # not a tensor: the model must also build on the meta device (models/sizes.py)
        self.register_buffer("prior_mean", torch.zeros(d))
        # torch.eye on the meta device goes through a decomposition that imports torch._dynamo (1 s per command)
        self.register_buffer("prior_scale_tril", torch.zeros(d, d).fill_diagonal_(1))
        self.register_buffer("prior_fitted", torch.zeros((), dtype=torch.bool))

    @property
    def decoder_out_channels(self) -> int:
        return self.config.image_channels

    # --- the autoencoder -------------------------------------------------------------------
    def encoder_head(self, x: torch.Tensor) -> torch.Tensor:
        """x -> raw encoder output [N, latent_outputs * latent units...]."""
        h, _ = self.encoder(x)
        return self.to_latent(h)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """x: [N, C, H, W] in [-1, 1] -> z: [N, *latent_shape]."""
        return self.encoder_head(x)

    def decoder_output(self, z: torch.Tensor) -> torch.Tensor:
        """z -> the decoder's raw output [N, decoder_out_channels, H, W] (the likelihood's parameters)."""
        return self.decoder(self.from_latent(z))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z: [N, *latent_shape] -> image [N, C, H, W], clamped to [-1, 1]."""
        return self.decoder_output(z).clamp(-1, 1)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """x -> decode(encode(x)), [N, C, H, W] in [-1, 1]."""
        return self.decode(self.encode(x))

    def denoise(self, x: torch.Tensor, sigma: float | None = None, steps: int = 1) -> torch.Tensor:
        """The clean estimate of a corrupted x: the reconstruction, one network pass. An autoencoder has no
        noise-level input (it lacks Capability.NOISE_LEVEL), so ``sigma`` is not used; more than one step
        is refused rather than ignored."""
        if steps != 1:
            raise ConfigError(
                f"a {self.family!r} model denoises in one pass (its reconstruction); steps={steps} "
                "needs a diffusion model"
            )
        return self.reconstruct(x)

    # --- restoration -------------------------------------------------------------------------
    @property
    def restore_methods(self) -> tuple[str, ...]:
        return ("one-pass",)

    @torch.no_grad()
    def restore(
        self,
        y: torch.Tensor,
        operator: Degradation,
        options: RestoreOptions | None = None,
        condition: Condition | None = None,
        generator: torch.Generator | None = None,
        callback: Any = None,
    ) -> torch.Tensor:
        """One pass: the reconstruction of ``A^+ y`` (holes at zero, mid-grey: what a masking DAE was trained
        on; a low-resolution image upsampled by copying), then its range-space part replaced by y's."""
        check_no_sampling_choices(self, condition, None)
        if (options or RestoreOptions()).resolve(self.restore_methods, operator).sigma is not None:
            raise ConfigError(f"a {self.family!r} model's one pass has no noise level; drop --sigma")
        operator.check((len(y), *self.image_shape))
        y = y.to(self.device)
        return operator.project(self.reconstruct(operator.pseudo_inverse(y)), y).clamp(-1, 1)

    def forward(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        """Training loss: mean squared error of the reconstruction. Returns (loss, logs)."""
        x = batch["images"]
        mse = F.mse_loss(self.decoder_output(self.encode(x)), x)
        return mse, {"mse": mse.item()}

    # --- sampling ----------------------------------------------------------------------------
    @torch.no_grad()
    def training_latents(self, batches: Iterable[torch.Tensor]) -> torch.Tensor:
        """The flattened latents [N, prod(latent_shape)] (float64) of ``batches`` (images [B, C, H, W]), encoded
        in inference mode; ConfigError when they are not all finite (no Gaussian can be fitted to them)."""
        was_training = self.training
        self.eval()
        latents = torch.cat([self.encode(x.to(self.device)).flatten(1).double() for x in batches])
        self.train(was_training)
        if not torch.isfinite(latents).all():
            raise ConfigError(
                "the autoencoder's latents of the training images are not all finite, so no Gaussian can be fitted "
                "to sample from: the weights diverged; retrain with a lower --lr"
            )
        return latents

    @torch.no_grad()
    def fit_latent_prior(self, batches: Iterable[torch.Tensor]) -> None:
        """Fit N(mean, cov) to the latents of ``batches`` (images [B, C, H, W]) for ``sample``."""
        mean, scale_tril = fit_gaussian(self.training_latents(batches))
        self.prior_mean.copy_(mean)
        self.prior_scale_tril.copy_(scale_tril)
        self.prior_fitted.fill_(True)

    def after_training(self, batches: Iterable[torch.Tensor]) -> None:
        """Called by the trainer at the end of training with the training images."""
        self.fit_latent_prior(batches)

    def sample_latents(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n latents from the fitted Gaussian, [n, *latent_shape]."""
        if not bool(self.prior_fitted):
            raise RunError(
                "this autoencoder's latent Gaussian was never fitted (training did not finish); "
                "finish training, or call model.fit_latent_prior(batches) with training images"
            )
        eps = torch.randn(n, self.prior_mean.numel(), device=self.prior_mean.device, generator=generator)
        z = self.prior_mean + eps @ self.prior_scale_tril.T
        return z.reshape(n, *self.latent_shape)

    @torch.no_grad()
    def sample(
        self,
        n: int,
        condition: Condition | None = None,
        options: SamplerOptions | None = None,
        generator: torch.Generator | None = None,
        callback: Any = None,
    ) -> torch.Tensor:
        """n images [n, C, H, W] in [-1, 1] decoded from latents drawn by ``sample_latents``. An autoencoder
        takes no condition and no sampler options (refused, not ignored)."""
        check_no_sampling_choices(self, condition, options)
        return self.decode(self.sample_latents(n, generator))

    @torch.no_grad()
    def class_sampler(self, train: Any) -> ClassSampler:
        """Decoded draws from a Gaussian fitted to each class's latents of ``train``'s images (mean and
        covariance per class, as ``fit_latent_prior`` fits all of them; the VAE's latents are its posterior
        means): the autoencoder family's class-conditional samples. At most CLASS_FIT_IMAGES images, spread
        evenly over the split, are encoded. ConfigError on unlabelled data."""
        if train.labels is None:
            raise ConfigError("sampling by class needs labelled training data; these images have no labels")
        labels = torch.as_tensor(train.labels)
        chosen = class_fit_indices(labels, CLASS_FIT_IMAGES)
        latents = self.training_latents(train.batch(chunk)["images"] for chunk in chosen.split(512))
        fits = ClassGaussians.fit(latents, labels[chosen])

        def draw(labels: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
            z = fits.sample(labels, generator).to(self.device, torch.float32)
            return self.decode(z.reshape(len(labels), *self.latent_shape))

        return draw

    def sampling_network(self) -> nn.Module:
        return self.decoder

    @torch.no_grad()
    def preview(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Image grids for TensorBoard: inputs above their reconstructions."""
        x = batch["images"][:16]
        return {"reconstruction": torch.cat([x, self.reconstruct(x)])}
