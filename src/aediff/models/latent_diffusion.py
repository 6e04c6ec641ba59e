"""Latent diffusion (Rombach et al. 2022): the diffusion model of ``diffusion.py``, run in the spatial latent
space of a trained autoencoder instead of pixel space. The two halves of aediff, joined.

Training encodes each batch with the frozen autoencoder (its deterministic code: the AE's latent, the
VAE's posterior mean, the VQ-VAE's code vectors), multiplies by ``latent_scale`` so the latents have unit
variance (the scale the noise levels assume), and trains the denoiser there. Sampling runs any sampler on
latents, then decodes (a VQ-VAE quantises them to its codes first).

The model is given its autoencoder (``LatentDiffusionModel(config, autoencoder)``); a new run's comes from
the run folder named in ``config.autoencoder.path``, read once by ``prepare_config``. The run folder is
self-contained: its config copies the autoencoder's family and config, and its weights include the
autoencoder's, so ``aediff.load`` rebuilds the whole pipeline even if the autoencoder's folder has moved.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from aediff.config import bounded
from aediff.data.hfstream import ImageStream
from aediff.diffusion.degradations import Degradation
from aediff.diffusion.restoration import decoded_projected_denoiser
from aediff.errors import ConfigError
from aediff.models.defaults import NetworkDefaults
from aediff.models.diffusion import (
    V1_FIELDS,
    DiffusionConfig,
    DiffusionModel,
    NetworkConfig,
    SamplingConfig,
    keep_null_class_draws,
    nest_v1_fields,
)
from aediff.models.interface import Capability, Model
from aediff.models.registry import MODELS, build_model, register_model


@dataclass
class AutoencoderSource:
    """The autoencoder a latent diffusion model works in: enough to rebuild it without its run folder."""

    path: str = ""  # the run folder it was trained in (recorded; only read when a new run starts)
    family: str = ""  # filled in from that folder: a family that declares Capability.LATENT
    config: dict[str, Any] = field(default_factory=dict)  # ditto: its model config


@dataclass
class LatentDiffusionConfig(DiffusionConfig):
    # The denoiser works on the autoencoder's latent [latent_channels, h, w]; image_channels / image_size /
    # image_width are the images' (the autoencoder's). A 7x7 latent needs fewer stages than 28x28 pixels; widths
    # 64/64 keep it near the pixel U-Net's size (1.1M against 1.2M parameters), so the two compare at equal capacity.
    network: NetworkConfig = field(default_factory=lambda: NetworkConfig(channels=(64, 64), attention_resolutions=(4,)))
    sampling: SamplingConfig = field(default_factory=lambda: SamplingConfig(clip_denoised=False))  # not in [-1, 1]
    autoencoder: AutoencoderSource = field(default_factory=AutoencoderSource)
    latent_scale: float = bounded(0.0, 0)  # latents are multiplied by this (1 / their std); 0 = measure on the data


# The latent U-Net of a new run per size rule of the IMAGES (aediff.models.defaults; greyscale up to 32 px keeps
# the defaults above). The autoencoders' rules give a latent of 8x8 for 32 and 64 px images (5x5 to 8x8 above),
# as on the digits (7x7), so the stages stay and the widths grow with what the latent holds. PROVISIONAL: not yet
# searched (benchmarks/colour_defaults.py leaves latent diffusion out).
LATENT_DIFFUSION_SIZES: dict[str, NetworkDefaults] = {
    "colour-small": NetworkDefaults(channels=(128, 128)),
    "medium": NetworkDefaults(channels=(128, 128)),
    "large": NetworkDefaults(channels=(128, 256, 256)),
}


def upgrade_v1(flat: dict[str, Any]) -> dict[str, Any]:
    """Format 1 kept the latent's shape in image_channels / image_size and the autoencoder in three flat
    fields; format 2 keeps the images' shape there and the autoencoder in one record."""
    flat = dict(flat)
    ae_config = flat.pop("autoencoder_config", {})
    source = {"path": flat.pop("autoencoder", ""), "family": flat.pop("autoencoder_family", ""), "config": ae_config}
    flat["image_channels"], flat["image_size"] = ae_config.get("image_channels", 1), ae_config.get("image_size", 28)
    nested = nest_v1_fields(flat, {**V1_FIELDS, "latent_scale": "latent_scale"})
    return {**nested, "autoencoder": source}


def autoencoder_families() -> str:
    """The registered families a latent diffusion model can work in (those declaring LATENT), for messages."""
    return ", ".join(sorted(name for name, cls in MODELS.items() if Capability.LATENT in cls.declared))


@register_model
class LatentDiffusionModel(DiffusionModel):
    """Images x: [N, C, H, W] in [-1, 1]; the diffusion runs on z = latent_scale * encode(x),
    [N, latent_channels, h, w]. ``sample`` returns decoded images."""

    family = "latent-diffusion"
    config_class = LatentDiffusionConfig
    size_defaults = LATENT_DIFFUSION_SIZES
    # The diffusion bound is a statement about pixels under a Gaussian chain; here the chain is on latents.
    declared = DiffusionModel.declared - {Capability.DIFFUSION_BOUND}

    @property
    def restore_methods(self) -> tuple[str, ...]:
        # Restoration constrains pixels and this diffusion runs on latents: DDNM reaches them by decode-project-
        # encode at every step (``constrained_denoiser``). RePaint's noised known pixels would have to be encoded
        # at every jump too, and a one pass would read an encoded A^+ y at a latent noise level nobody chose:
        # neither is offered.
        return ("ddnm",)

    def constrained_denoiser(self, denoise, operator: Degradation, y: torch.Tensor):
        """DDNM through the autoencoder: decode each latent x0 estimate, project it onto A x = y, encode it."""
        return decoded_projected_denoiser(denoise, operator, y, self.output_images, self.diffusion_input)

    def __init__(self, config: LatentDiffusionConfig, autoencoder: Model | None = None):
        source = config.autoencoder
        if autoencoder is None:  # a saved run: its weights, the autoencoder's included, are loaded afterwards
            if not source.config:
                raise ConfigError(
                    "LatentDiffusionConfig.autoencoder is empty: build it with "
                    "LatentDiffusionModel.prepare_config, as `aediff train` does"
                )
            autoencoder = build_model(source.family, source.config)
        if not autoencoder.can(Capability.LATENT):
            raise ConfigError(
                f"latent diffusion needs an autoencoder ({autoencoder_families()}), got a {autoencoder.family!r}"
            )
        super().__init__(config, space_shape=tuple(autoencoder.latent_shape))
        self.autoencoder = autoencoder.requires_grad_(False)

    @classmethod
    def upgrade_config(cls, stored: dict[str, Any], version: int) -> dict[str, Any]:
        return keep_null_class_draws(upgrade_v1(stored) if version < 2 else stored)

    @classmethod
    def prepare_config(
        cls, config: LatentDiffusionConfig, dataset: Any, load_run: Callable[[str], Any]
    ) -> tuple[LatentDiffusionConfig, dict[str, Any]]:
        """Read the autoencoder run named by ``config.autoencoder.path`` (once), check that it can serve, fill
        in its family and config, and measure ``latent_scale`` on up to 1,024 training images when it is 0.
        ``config.image_*`` hold the dataset's shape. Returns (config, {"autoencoder": the trained model})."""
        path = config.autoencoder.path
        if not path:
            raise ConfigError(
                "latent diffusion needs a trained autoencoder: pass --autoencoder RUN (e.g. one trained "
                "with `aediff train vae --latent spatial --out runs/vae`)"
            )
        run = load_run(path)
        autoencoder = run.model
        if not autoencoder.can(Capability.LATENT):
            raise ConfigError(
                f"{path} holds a {autoencoder.family!r} run; latent diffusion needs an autoencoder "
                f"({autoencoder_families()})"
            )
        if autoencoder.config.latent != "spatial":
            raise ConfigError(
                f"{path} has a {autoencoder.config.latent!r} latent; latent diffusion needs a spatial "
                "one: retrain it with --latent spatial"
            )
        data_shape = (config.image_channels, *config.image_hw)
        if data_shape != autoencoder.image_shape:
            shown = "x".join(map(str, autoencoder.image_shape))
            raise ConfigError(
                f"the data's images are {'x'.join(map(str, data_shape))} but the autoencoder in {path} "
                f"was trained on {shown}: pass the same --resolution / --image-channels it used"
            )
        # Frozen here: what only its own training used (a KL-AE's discriminator) is neither kept nor saved.
        autoencoder = autoencoder.without_training_parts().cpu().eval()
        with torch.no_grad():
            if isinstance(dataset, ImageStream):  # read in order: its first images
                dataset = dataset.head(1024)
            z = autoencoder.encode(dataset.batch(torch.arange(min(len(dataset), 1024)))["images"])
        source = AutoencoderSource(
            path=str(path), family=autoencoder.family, config=dataclasses.asdict(autoencoder.config)
        )
        config = dataclasses.replace(config, autoencoder=source, latent_scale=config.latent_scale or float(1 / z.std()))
        return config, {"autoencoder": autoencoder}

    def train(self, mode: bool = True) -> LatentDiffusionModel:
        super().train(mode)
        self.autoencoder.eval()  # frozen: always in inference mode
        return self

    @torch.no_grad()
    def diffusion_input(self, images: torch.Tensor) -> torch.Tensor:
        """[N, C, H, W] in [-1, 1] -> the scaled latents the diffusion works on, [N, latent_channels, h, w]."""
        return self.autoencoder.encode(images) * self.config.latent_scale

    def output_images(self, x: torch.Tensor) -> torch.Tensor:
        """Scaled latents [N, latent_channels, h, w] -> decoded images [N, C, H, W] in [-1, 1]."""
        return self.autoencoder.decode(x / self.config.latent_scale).clamp(-1, 1)

    @torch.no_grad()
    def latent_noise_level(self, x: torch.Tensor, sigma: float, generator: torch.Generator | None = None) -> float:
        """The noise level in the scaled latent that pixel noise of level ``sigma`` amounts to, measured on x
        itself: the RMS displacement of its latent when noise of that level is added once more (the encoder
        is locally near-linear, so the displacement is what the noise already in x did to its latent)."""
        z = self.diffusion_input(x)
        noise = torch.randn(x.shape, device=x.device, generator=generator)
        moved = self.diffusion_input(x + sigma * noise)
        return float((moved - z).pow(2).mean().sqrt().clamp_min(1e-3))

    @torch.no_grad()
    def denoise(self, x: torch.Tensor, sigma: float | None = None, steps: int = 1) -> torch.Tensor:
        """Remove Gaussian pixel noise of level ``sigma`` from images x [N, C, H, W]: encode, treat the latent
        as noisy at the level ``latent_noise_level`` measures, denoise it there (one step, or ``steps`` steps
        of the default sampler down to 0, as the pixel model does) and decode. [N, C, H, W] in [-1, 1]."""
        if sigma is None:
            raise ConfigError("a diffusion model must be told the noise level: denoise(x, sigma=...)")
        if steps < 1:
            raise ConfigError(f"steps must be at least 1, got {steps}")
        level = self.latent_noise_level(x, sigma, torch.Generator(x.device).manual_seed(0))
        null = functools.partial(self.predict_x0, **self.condition_inputs(len(x)))
        z = self.diffusion_input(x)
        z0 = null(z, level) if steps == 1 else self.integrate_down(z, level, steps, null)
        return self.output_images(z0)
