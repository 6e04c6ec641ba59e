"""Latent diffusion (Rombach et al. 2022): the diffusion model of ``diffusion.py``, run in the spatial latent
space of a trained autoencoder instead of pixel space. The two halves of aediff, joined.

Training encodes each batch with the frozen autoencoder (its deterministic code: the AE's latent, the
VAE's posterior mean), multiplies by ``latent_scale`` so the latents have unit variance (the scale the
noise levels assume), and trains the denoiser there. Sampling runs any sampler on latents, then decodes.

The run folder is self-contained: its config names the autoencoder's run folder (``autoencoder``) and
copies its family and config, and its weights include the autoencoder's, so ``aediff.load`` rebuilds the
whole pipeline even if the autoencoder's folder has moved.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from aediff import runs
from aediff.errors import ConfigError
from aediff.models.diffusion import DiffusionConfig, DiffusionModel
from aediff.models.registry import build_model, register_model

AUTOENCODER_FAMILIES = ("ae", "vae", "dae")


@dataclass
class LatentDiffusionConfig(DiffusionConfig):
    autoencoder: str = ""  # run folder of a trained AE / VAE / DAE with latent="spatial"
    autoencoder_family: str = ""  # filled in from that folder
    autoencoder_config: dict[str, Any] = field(default_factory=dict)  # ditto: rebuilds it from this run alone
    latent_scale: float = 0.0  # latents are multiplied by this (1 / their std); 0 = measure on the data
    # The denoiser works on [latent_channels, s, s] (image_channels / image_size are filled in): a 7x7
    # latent needs fewer stages than 28x28 pixels; widths 64/64 keep it near the pixel U-Net's size (1.1M
    # against 1.2M parameters), so the two compare at equal capacity.
    channels: tuple[int, ...] = (64, 64)
    attention_resolutions: tuple[int, ...] = (4,)
    clip_denoised: bool = False  # latents are not confined to [-1, 1]


def read_autoencoder(path: str | Path) -> tuple[str, dict[str, Any]]:
    """(family, config dict) of the autoencoder run at ``path``; a clear error when it can't serve."""
    if not path:
        raise ConfigError("latent diffusion needs a trained autoencoder: pass --autoencoder RUN (e.g. one trained "
                          "with `aediff train vae --latent spatial --out runs/vae`)")
    stored = runs.read_run_config(path)
    family, config = stored["family"], stored["model"]
    if family not in AUTOENCODER_FAMILIES:
        raise ConfigError(f"{path} holds a {family!r} run; latent diffusion needs one of {AUTOENCODER_FAMILIES}")
    if config.get("latent") != "spatial":
        raise ConfigError(f"{path} has a {config.get('latent')!r} latent; latent diffusion needs a spatial one: "
                          "retrain it with --latent spatial")
    return family, config


@register_model
class LatentDiffusionModel(DiffusionModel):
    """Images x: [N, C, S, S] in [-1, 1]; the diffusion runs on z = latent_scale * encode(x),
    [N, latent_channels, s, s]. ``sample`` returns decoded images."""

    family = "latent-diffusion"
    config_class = LatentDiffusionConfig

    def __init__(self, config: LatentDiffusionConfig):
        if not config.autoencoder_config:
            raise ConfigError("LatentDiffusionConfig.autoencoder_config is empty: build it with "
                              "LatentDiffusionModel.prepare_config(config, dataset), as `aediff train` does")
        super().__init__(config)
        self.autoencoder = build_model(config.autoencoder_family, config.autoencoder_config)
        self.autoencoder.requires_grad_(False)
        weights = Path(config.autoencoder) / runs.EMA_FILE
        if weights.exists():  # a new run starts from the trained autoencoder; a saved one carries its copy
            self.autoencoder.load_state_dict(runs.read_tensors(weights))

    @classmethod
    def prepare_config(cls, config: LatentDiffusionConfig, dataset: Any) -> LatentDiffusionConfig:
        """Fill in the autoencoder's family and config and the latent shape, and measure ``latent_scale``
        on up to 1,024 training images when it is 0. ``config.image_*`` hold the dataset's shape on entry."""
        family, ae_config = read_autoencoder(config.autoencoder)
        data_shape = (config.image_channels, config.image_size)
        ae_shape = (ae_config["image_channels"], ae_config["image_size"])
        if data_shape != ae_shape:
            raise ConfigError(f"the data's images are {data_shape[0]}x{data_shape[1]}x{data_shape[1]} but the "
                              f"autoencoder in {config.autoencoder} was trained on {ae_shape[0]}x{ae_shape[1]}x"
                              f"{ae_shape[1]}: pass the same --resolution / --image-channels it used")
        autoencoder = runs.load(config.autoencoder, device="cpu")
        z = autoencoder.encode(dataset.batch(torch.arange(min(len(dataset), 1024)))["images"]).detach()
        scale = config.latent_scale or float(1 / z.std())
        return dataclasses.replace(config, autoencoder=str(Path(config.autoencoder).resolve()),
                                   autoencoder_family=family, autoencoder_config=ae_config,
                                   image_channels=z.shape[1], image_size=z.shape[-1], latent_scale=scale)

    def train(self, mode: bool = True) -> LatentDiffusionModel:
        super().train(mode)
        self.autoencoder.eval()  # frozen: always in inference mode
        return self

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """[N, C, S, S] in [-1, 1] -> the scaled latents the diffusion works on, [N, latent_channels, s, s]."""
        return self.autoencoder.encode(images) * self.config.latent_scale

    def forward(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        return super().forward({**batch, "images": self.encode_images(batch["images"])})

    def output_images(self, x: torch.Tensor) -> torch.Tensor:
        """Scaled latents [N, latent_channels, s, s] -> decoded images [N, C, S, S] in [-1, 1]."""
        return self.autoencoder.decode(x / self.config.latent_scale).clamp(-1, 1)

    def denoise(self, x: torch.Tensor, sigma: float | None = None, steps: int = 1) -> torch.Tensor:
        raise ConfigError("a latent diffusion model removes noise from latents, not from pixels; use a pixel "
                          "`diffusion` run to denoise images")
