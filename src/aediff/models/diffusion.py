"""Pixel-space diffusion: a denoising autoencoder conditioned on the noise level (Ho et al. 2020;
Karras et al. 2022). One set of parameters handles every noise level.

The pieces stay separate and swappable, as in NVlabs/edm: the network (``UNet``), the parameterization
wrapper that makes it a denoiser D(x, sigma) (``aediff.diffusion.parameterization``), the noise schedule
that says which sigmas training visits (``aediff.diffusion.schedules``), the loss (``diffusion_loss``
below) and the samplers (``aediff.diffusion.samplers``).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from aediff.diffusion.parameterization import Denoiser, x0_loss_weight
from aediff.diffusion.samplers import SAMPLERS
from aediff.diffusion.schedules import NoiseSchedule, discrete_timesteps, karras_sigmas
from aediff.errors import ConfigError
from aediff.models.registry import register_model
from aediff.models.text_encoder import build_text_encoder
from aediff.models.unet import UNet, UNetConfig


@dataclass
class DiffusionConfig(UNetConfig):
    schedule: Literal["linear", "cosine", "sigmoid", "edm"] = "cosine"  # training noise levels (see schedules.py)
    num_train_steps: int = 1000  # T of the discrete schedules
    parameterization: Literal["eps", "x0", "v", "edm"] = "v"  # what the network predicts
    sigma_data: float = 0.5  # edm: standard deviation of the data, in [-1, 1] pixel units
    loss_weighting: Literal["uniform", "min_snr"] = "uniform"  # uniform in the network's own target, or min-SNR
    min_snr_gamma: float = 5.0  # min_snr: weight on ||D - x0||^2 is min(1 / sigma^2, gamma) (Hang et al. 2023)
    p_mean: float = -1.2  # edm: mean of ln(sigma) in training
    p_std: float = 1.2  # edm: std of ln(sigma) in training
    sigma_min: float = 0.002  # edm: smallest sampling sigma
    sigma_max: float = 80.0  # largest sigma euler / heun / dpm++ start from (edm: also of training)
    sampler: Literal["ddpm", "ddim", "euler", "heun", "dpm++"] = "dpm++"  # default sampler
    sampling_steps: int = 20  # default steps
    clip_denoised: bool = True  # clamp each x0 estimate to [-1, 1] while sampling
    condition: Literal["none", "class", "text"] = "none"  # what the model can be told to generate
    condition_dropout: float = 0.1  # training: P(null condition), which lets one model guide itself (CFG)
    guidance: float = 1.0  # default classifier-free guidance scale w: D = D_null + w (D_cond - D_null)
    text_encoder: Literal["learned", "minilm", "clip"] = "learned"  # condition="text": the caption encoder
    text_encoder_path: str = ""  # clip: a local folder or hub id of a transformers CLIP text model
    text_width: int = 128  # learned: width of the text transformer
    text_layers: int = 2  # learned: transformer layers
    text_max_length: int = 64  # learned: bytes per caption kept (longer captions are truncated)


def diffusion_loss(denoiser: nn.Module, x0: torch.Tensor, schedule: NoiseSchedule, weighting: str = "uniform",
                   min_snr_gamma: float = 5.0, condition: dict[str, Any] | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted denoising loss E_sigma,eps [ w(sigma) ||D(x0 + sigma eps, sigma, condition) - x0||^2 ].

    x0: [N, C, S, S] in [-1, 1]; condition: the network's condition inputs for the N images.
    Returns (scalar loss, the sigmas drawn [N]).
    """
    sigma = schedule.sample_training_sigmas(len(x0), x0.device)
    noisy = x0 + sigma[:, None, None, None] * torch.randn_like(x0)
    error = (denoiser(noisy, sigma, **(condition or {})) - x0).pow(2).flatten(1).mean(1)
    if weighting == "uniform":
        weight = x0_loss_weight(denoiser.parameterization, sigma, denoiser.sigma_data)
    else:
        weight = (1 / sigma**2).clamp(max=min_snr_gamma)
    return (weight * error).mean(), sigma


def concat_conditions(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Stack two batches of condition inputs (for one network call on [conditional; null]); caption
    tokens are padded to the longer sequence, the padding masked out."""
    out = {}
    for key in a:
        x, y = a[key], b[key]
        if key in ("context", "context_mask") and x.shape[1] != y.shape[1]:
            length = max(x.shape[1], y.shape[1])
            pad = (0, 0) if key == "context" else ()
            x = nn.functional.pad(x, (*pad, 0, length - x.shape[1]))
            y = nn.functional.pad(y, (*pad, 0, length - y.shape[1]))
        out[key] = torch.cat([x, y])
    return out


@register_model
class DiffusionModel(nn.Module):
    """x: [N, C, S, S] in [-1, 1]. ``sample(n)`` generates; ``denoise(x, sigma)`` removes noise of level sigma."""

    family = "diffusion"
    config_class = DiffusionConfig

    def __init__(self, config: DiffusionConfig):
        super().__init__()
        if not 0 <= config.condition_dropout < 1:
            raise ConfigError(f"condition_dropout must be in [0, 1), got {config.condition_dropout}")
        self.config = config
        network_config = dataclasses.replace(config, num_classes=0, context_dim=0)
        if config.condition == "class":
            if config.num_classes < 1:
                raise ConfigError("condition='class' needs num_classes >= 1: train on a labelled dataset, or use "
                                  "--condition text / none")
            network_config = dataclasses.replace(network_config, num_classes=config.num_classes)
        if config.condition == "text":
            self.text_encoder = build_text_encoder(config.text_encoder, path=config.text_encoder_path,
                                                   width=config.text_width, layers=config.text_layers,
                                                   max_length=config.text_max_length,
                                                   cache_to_disk=config.text_encoder != "learned")
            network_config = dataclasses.replace(network_config, context_dim=self.text_encoder.width)
        self.denoiser = Denoiser(UNet(network_config), config.parameterization, config.sigma_data)
        self.schedule = NoiseSchedule(config.schedule, config.num_train_steps, config.sigma_min, config.sigma_max,
                                      config.p_mean, config.p_std)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def forward(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        images, kind = batch["images"], self.config.condition
        labels = batch.get("labels") if kind == "class" else None
        captions = batch.get("captions") if kind == "text" else None
        if (kind == "class" and labels is None) or (kind == "text" and captions is None):
            what = "labels" if kind == "class" else "captions"
            raise ConfigError(f"condition={kind!r} needs {what} in every batch; this dataset has none")
        if self.config.condition_dropout and kind != "none":
            # the null condition stands in for a random share of the batch (classifier-free guidance)
            dropped = torch.rand(len(images)) < self.config.condition_dropout
            if labels is not None:
                labels = torch.where(dropped.to(labels.device), torch.full_like(labels, self.config.num_classes),
                                     labels)
            if captions is not None:
                captions = ["" if d else c for c, d in zip(captions, dropped.tolist(), strict=True)]
        condition = self.condition_inputs(len(images), labels, captions, where="the training batch")
        loss, _ = diffusion_loss(self.denoiser, images, self.schedule, self.config.loss_weighting,
                                 self.config.min_snr_gamma, condition)
        return loss, {}

    def condition_inputs(self, n: int, class_labels: Any = None, prompts: Any = None,
                         where: str = "sample()") -> dict[str, torch.Tensor]:
        """The network's condition inputs for n images. class_labels: an int, n ints or None (none: the
        null class); prompts: a string, n strings or None (none: the empty caption, the null prompt)."""
        kind = self.config.condition
        if class_labels is not None and kind != "class":
            raise ConfigError(f"{where}: this model is not class-conditioned (condition={kind!r}); train one "
                              "with --condition class")
        if prompts is not None and kind != "text":
            raise ConfigError(f"{where}: this model is not text-conditioned (condition={kind!r}); train one "
                              "with --condition text")
        if kind == "class":
            if class_labels is None:
                return {"class_labels": torch.full((n,), self.config.num_classes, dtype=torch.long,
                                                   device=self.device)}
            labels = torch.as_tensor(class_labels, dtype=torch.long, device=self.device).flatten()
            labels = labels.expand(n) if labels.numel() == 1 else labels
            if labels.numel() != n or labels.min() < 0 or labels.max() > self.config.num_classes:
                raise ConfigError(f"{where}: need 1 or {n} class labels in [0, {self.config.num_classes - 1}], "
                                  f"got {labels.tolist()[:10]}")
            return {"class_labels": labels}
        if kind == "text":
            if prompts is None:
                prompts = [""] * n
            prompts = [prompts] * n if isinstance(prompts, str) else list(prompts)
            if len(prompts) == 1:
                prompts = prompts * n
            if len(prompts) != n:
                raise ConfigError(f"{where}: need 1 or {n} prompts, got {len(prompts)}")
            text = self.text_encoder(prompts)
            return {"context": text.tokens, "context_mask": text.mask, "pooled": text.pooled}
        return {}

    def predict_x0(self, x: torch.Tensor, sigma: torch.Tensor | float, **condition: Any) -> torch.Tensor:
        """D(x, sigma, condition): the model's estimate of the clean image, optionally clamped to [-1, 1]."""
        denoised = self.denoiser(x, torch.as_tensor(sigma, device=x.device, dtype=x.dtype), **condition)
        return denoised.clamp(-1, 1) if self.config.clip_denoised else denoised

    def guided_denoiser(self, n: int, class_labels: Any = None, prompts: Any = None, guidance: float | None = None,
                        negative_class: Any = None, negative_prompt: Any = None) -> Callable:
        """The denoiser D(x, sigma) the samplers walk, for n images: conditional, and with classifier-free
        guidance (Ho & Salimans 2022) D = D_neg + w (D_cond - D_neg) when w != 1, where D_neg is the null
        condition unless a negative class / prompt is given. Guidance evaluates both in one batched call."""
        if self.config.condition == "none" and guidance not in (None, 1):
            raise ConfigError(f"guidance {guidance} needs a conditioned model (this one has condition='none'); "
                              "train one with --condition class or --condition text")
        w = self.config.guidance if guidance is None else guidance
        condition = self.condition_inputs(n, class_labels, prompts)
        if not condition or (w == 1 and negative_class is None and negative_prompt is None):
            return functools.partial(self.predict_x0, **condition)
        negative = self.condition_inputs(n, negative_class, negative_prompt)
        both = concat_conditions(condition, negative)

        def denoise(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
            sigma = torch.as_tensor(sigma, device=x.device, dtype=x.dtype)
            d_cond, d_neg = self.denoiser(torch.cat([x, x]), sigma, **both).chunk(2)
            denoised = d_neg + w * (d_cond - d_neg)
            return denoised.clamp(-1, 1) if self.config.clip_denoised else denoised

        return denoise

    def sampling_sigmas(self, steps: int, sampler: str) -> torch.Tensor:
        """The noise levels a sampler walks: for DDPM / DDIM the schedule's own discrete levels at evenly
        spaced timesteps ("trailing"); otherwise Karras et al.'s rho = 7 spacing from min(the schedule's
        largest sigma, sigma_max) down to its smallest. [steps + 1], ending in 0."""
        if steps < 1:
            raise ConfigError(f"steps must be at least 1, got {steps}")
        if sampler in ("ddpm", "ddim") and self.schedule.discrete:
            t = discrete_timesteps(self.schedule.num_steps, steps)
            sigmas = torch.cat([self.schedule.sigmas[t], torch.zeros(1, dtype=torch.float64)])
        else:
            # A discrete schedule's largest sigma can be huge (cosine: ~2e4); sigma_max (80, far beyond the
            # data's scale of 0.5) is already pure noise, and starting there spares the steps that Karras'
            # spacing would spend above it (measured: heun at 5 steps, FID 145 -> 3.8).
            low, high = self.schedule.sigma_range
            sigmas = karras_sigmas(steps, low, min(high, self.config.sigma_max))
        return sigmas.float().to(self.device)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, sampler: str | None = None,
               steps: int | None = None, callback: Any = None, class_labels: Any = None, prompts: Any = None,
               guidance: float | None = None, negative_class: Any = None, negative_prompt: Any = None,
               **options: Any) -> torch.Tensor:
        """n images [n, C, S, S] in [-1, 1]. ``callback`` receives every step's x and x0 estimate.

        class_labels / prompts: what to draw (one for all, or one per image; conditioned models only,
        none: unconditional); guidance: the classifier-free guidance scale (default: the config's);
        negative_class / negative_prompt: what to guide away from instead of the null condition.
        """
        sampler = sampler or self.config.sampler
        if sampler not in SAMPLERS:
            raise ConfigError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
        denoise = self.guided_denoiser(n, class_labels, prompts, guidance, negative_class, negative_prompt)
        sigmas = self.sampling_sigmas(steps or self.config.sampling_steps, sampler)
        c, s = self.config.image_channels, self.config.image_size
        x = sigmas[0] * torch.randn((n, c, s, s), device=self.device, generator=generator)
        out = SAMPLERS[sampler](denoise, x, sigmas, callback=callback, generator=generator, **options)
        return self.output_images(out)

    def output_images(self, x: torch.Tensor) -> torch.Tensor:
        """What the sampler's space means as images: here the pixels themselves, clamped to [-1, 1]."""
        return x.clamp(-1, 1)

    @torch.no_grad()
    def denoise(self, x: torch.Tensor, sigma: float | None = None, steps: int = 1) -> torch.Tensor:
        """Remove Gaussian noise of level ``sigma`` (in [-1, 1] pixel units) from x = x0 + sigma * eps.

        steps = 1: the single-step estimate D(x, sigma). steps > 1: run the default sampler from sigma
        down to 0 over ``steps`` noise levels (deterministic for euler / heun / dpm++).
        """
        if sigma is None:
            raise ConfigError("a diffusion model must be told the noise level: denoise(x, sigma=...)")
        if steps <= 1:
            return self.predict_x0(x, sigma)
        low, _ = self.schedule.sigma_range
        sigmas = karras_sigmas(steps, min(low, sigma), sigma).float().to(x.device)
        sampler = self.config.sampler if self.config.sampler in ("euler", "heun", "dpm++") else "dpm++"
        return SAMPLERS[sampler](self.predict_x0, x, sigmas).clamp(-1, 1)

    @torch.no_grad()
    def preview(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Samples for TensorBoard (fixed seed, so they can be compared across steps)."""
        labels = torch.arange(16) % self.config.num_classes if self.config.condition == "class" else None
        return {"samples": self.sample(16, torch.Generator(self.device).manual_seed(0), class_labels=labels)}
