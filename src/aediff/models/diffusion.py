"""Pixel-space diffusion: a denoising autoencoder conditioned on the noise level (Ho et al. 2020;
Karras et al. 2022). One set of parameters handles every noise level.

The pieces stay separate and swappable, as in NVlabs/edm: the network (``UNet``), the parameterization
wrapper that makes it a denoiser D(x, sigma) (``aediff.diffusion.parameterization``), the noise schedule
that says which sigmas training visits (``aediff.diffusion.schedules``), the loss (``aediff.diffusion.losses``)
and the samplers (``aediff.diffusion.samplers``).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from aediff.config import (
    MAX_BLOCKS,
    MAX_CLASSES,
    MAX_IMAGE_CHANNELS,
    MAX_IMAGE_SIZE,
    MAX_SAMPLING_STEPS,
    MAX_STAGES,
    MAX_WIDTH,
    FieldRangeError,
    ImageShape,
    bounded,
    bounded_items,
    check_ranges,
)
from aediff.data import caption_templates, fill_template
from aediff.diffusion.degradations import Degradation
from aediff.diffusion.diffusers_schedulers import NoiseGrid, scheduler_levels
from aediff.diffusion.losses import DiffusionLoss
from aediff.diffusion.parameterization import Denoiser
from aediff.diffusion.restoration import RestoreOptions, projected_denoiser, sample_repaint
from aediff.diffusion.samplers import SAMPLERS, SamplerOptions, SamplerPlan, run_sampler
from aediff.diffusion.schedules import NoiseSchedule, discrete_timesteps, karras_sigmas
from aediff.errors import ConfigError
from aediff.models.defaults import NetworkDefaults
from aediff.models.interface import Capability, ClassSampler, Condition, Model
from aediff.models.networks import build_network
from aediff.models.registry import register_model
from aediff.models.text_encoder import build_text_encoder
from aediff.models.unet import UNetConfig
from aediff.modes import (
    ConditionKind,
    LossWeighting,
    NetworkKind,
    Parameterization,
    SampledClasses,
    SamplerName,
    ScheduleKind,
    TextEncoderKind,
)


@dataclass
class NetworkConfig:
    """The U-Net's shape (its input shape and condition widths are set by the model, not here). Ranges are
    declared with each field (``aediff.config.bounded``) and checked when the config is built."""

    # width of each resolution stage
    channels: tuple[int, ...] = bounded_items((32, 64, 64), 1, MAX_WIDTH, max_items=MAX_STAGES)
    blocks_per_stage: int = bounded(1, 1, MAX_BLOCKS)  # encoder ResBlocks per stage (the decoder has one more)
    # stage sizes (pixels; a stage's shorter side) with self-attention; sizes no stage has are ignored
    # (defaults serve any data)
    attention_resolutions: tuple[int, ...] = bounded_items((7,), 1, MAX_IMAGE_SIZE, min_items=0)
    dropout: float = bounded(0.0, 0, 1, high_open=True)  # inside residual blocks
    embedding_dim: int = bounded(128, 1, MAX_WIDTH)  # width of the noise-level embedding given to every ResBlock
    skip_connections: bool = True  # False: an autoencoder-shaped denoiser (no encoder -> decoder skips)
    # aediff's U-Net, or diffusers' UNet2DModel of the same shape inside aediff's recipe (models/networks.py)
    architecture: NetworkKind = "aediff"

    def __post_init__(self) -> None:
        check_ranges(self)


@dataclass
class ProcessConfig:
    """The diffusion process: which noise levels training visits, what the network predicts, the loss.
    Noise levels are positive and finite, sigma_min < sigma_max."""

    schedule: ScheduleKind = "cosine"  # training noise levels (see diffusion/schedules.py)
    # T of the discrete schedules; the cap keeps their per-step tables (built in Python) small
    num_train_steps: int = bounded(1000, 1, 100_000)
    parameterization: Parameterization = "v"  # what the network predicts
    sigma_data: float = bounded(0.5, 0, low_open=True)  # edm: standard deviation of the data, in [-1, 1] pixel units
    loss_weighting: LossWeighting = LossWeighting.UNIFORM  # uniform in the network's own target, or min-SNR
    # min_snr: weight on ||D - x0||^2 is min(1 / sigma^2, gamma) (Hang et al. 2023)
    min_snr_gamma: float = bounded(5.0, 0, low_open=True)
    p_mean: float = bounded(-1.2)  # edm: mean of ln(sigma) in training (any finite number)
    p_std: float = bounded(1.2, 0, low_open=True)  # edm: std of ln(sigma) in training
    sigma_min: float = bounded(0.002, 0, low_open=True)  # edm: smallest sampling sigma
    sigma_max: float = bounded(80.0, 0, low_open=True)  # largest sigma euler / heun / dpm++ start from (edm: training)

    def __post_init__(self) -> None:
        check_ranges(self)
        if self.loss_weighting not in tuple(LossWeighting):  # the JSON spelling, e.g. "min_snr", is taken as well
            choices = ", ".join(repr(w.value) for w in LossWeighting)
            raise FieldRangeError("loss_weighting", f"one of {choices}", self.loss_weighting)
        self.loss_weighting = LossWeighting(self.loss_weighting)
        if not self.sigma_min < self.sigma_max:
            raise FieldRangeError("sigma_min", f"below sigma_max ({self.sigma_max:g})", self.sigma_min)


@dataclass
class SamplingConfig:
    """Defaults of ``sample`` (each can be chosen per call with SamplerOptions / Condition)."""

    sampler: SamplerName = "dpm++"  # default sampler
    steps: int = bounded(20, 1, MAX_SAMPLING_STEPS)  # default sampling steps
    clip_denoised: bool = True  # clamp each x0 estimate to [-1, 1] while sampling
    # default classifier-free guidance scale w: D = D_null + w (D_cond - D_null); 0 = unconditional, 1 = none.
    # 1.5: chosen on a validation split from 1, 1.5, 2 and 3 (benchmarks/results/recipe_search.md)
    guidance: float = bounded(1.5, 0)
    # a class-conditioned model asked for no class: every class in turn over the samples ("cycle": as many of
    # each, like the data), or the null class ("null": the unconditional model; configs from before the field)
    classes: SampledClasses = "cycle"

    def __post_init__(self) -> None:
        check_ranges(self)


@dataclass
class ConditioningConfig:
    """What the model can be told to generate, and the caption encoder for text. A learned text encoder's
    width must be a multiple of its 4 attention heads."""

    kind: ConditionKind = "none"  # none, class labels, or captions
    # class: how many (set from the data); label num_classes is the null class
    num_classes: int = bounded(0, 0, MAX_CLASSES)
    # training: P(null condition), which lets one model guide itself (CFG)
    null_probability: float = bounded(0.1, 0, 1, high_open=True)
    text_encoder: TextEncoderKind = "learned"  # text: the caption encoder
    text_encoder_path: str = ""  # clip: a local folder or hub id of a transformers CLIP text model
    text_width: int = bounded(128, 4, 4096)  # learned: width of the text transformer
    text_layers: int = bounded(2, 1, 48)  # learned: transformer layers
    text_max_length: int = bounded(64, 2, 4096)  # learned: bytes per caption kept, BOS and EOS included

    def __post_init__(self) -> None:
        check_ranges(self)
        if self.kind == "text" and self.text_encoder == "learned" and self.text_width % 4:
            raise FieldRangeError(
                "text_width", "a multiple of 4 (the learned encoder's attention heads)", self.text_width
            )


@dataclass
class DiffusionConfig(ImageShape):
    image_channels: int = bounded(1, 1, MAX_IMAGE_CHANNELS)  # channels of the images (set from the data)
    image_size: int = bounded(28, 1, MAX_IMAGE_SIZE)  # height of the images, pixels (set from the data)
    image_width: int | None = bounded(None, 1, MAX_IMAGE_SIZE)  # width, pixels; None = image_size (square)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    process: ProcessConfig = field(default_factory=ProcessConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    conditioning: ConditioningConfig = field(default_factory=ConditioningConfig)

    def __post_init__(self) -> None:
        check_ranges(self)  # the nested configs checked themselves when built; a replaced one is checked here


# The U-Net of a new run per size rule (aediff.models.defaults; greyscale up to 32 px keeps NetworkConfig's
# defaults). colour-small's widths were searched: of 32,64,64 / 48,96,96 / 64,128,128, each trained 3 CPU-minutes
# on CIFAR-10, 48,96,96 denoised the validation split best (benchmarks/results/colour_defaults_diffusion.md; a
# short budget: tens of steps). Attention at the lowest stage as on the digits (8 px on 32 px images; DDPM's
# CIFAR-10 network, wider with four stages, attends at 16). medium and large are provisional (not searched):
# more stages so that the lowest stays near 8 px.
DIFFUSION_SIZES: dict[str, NetworkDefaults] = {
    "colour-small": NetworkDefaults(channels=(48, 96, 96), attention_stages=1),
    "medium": NetworkDefaults(channels=(64, 128, 128, 128), attention_stages=1),
    "large": NetworkDefaults(channels=(64, 128, 256, 256, 256), attention_stages=2, blocks_per_stage=2),
}


# Config format 1 kept every field in one flat DiffusionConfig; where each one lives now.
V1_FIELDS: dict[str, str] = {
    **{
        name: f"network.{name}"
        for name in (
            "channels",
            "blocks_per_stage",
            "attention_resolutions",
            "dropout",
            "embedding_dim",
            "skip_connections",
        )
    },
    **{
        name: f"process.{name}"
        for name in (
            "schedule",
            "num_train_steps",
            "parameterization",
            "sigma_data",
            "loss_weighting",
            "min_snr_gamma",
            "p_mean",
            "p_std",
            "sigma_min",
            "sigma_max",
        )
    },
    "sampler": "sampling.sampler",
    "sampling_steps": "sampling.steps",
    "clip_denoised": "sampling.clip_denoised",
    "guidance": "sampling.guidance",
    "condition": "conditioning.kind",
    "num_classes": "conditioning.num_classes",
    "condition_dropout": "conditioning.null_probability",
    **{
        name: f"conditioning.{name}"
        for name in ("text_encoder", "text_encoder_path", "text_width", "text_layers", "text_max_length")
    },
    "image_channels": "image_channels",
    "image_size": "image_size",
    "context_dim": "",  # derived, not stored
}


def nest_v1_fields(flat: dict[str, Any], table: dict[str, str] = V1_FIELDS) -> dict[str, Any]:
    """A format-1 flat model config -> the nested dict of today's config (keys ``table`` does not know are
    kept at the top level, where ``config_from_dict`` names them if they are wrong)."""
    nested: dict[str, Any] = {}
    for key, value in flat.items():
        path = table.get(key, key)
        if not path:
            continue
        *parents, leaf = path.split(".")
        target = nested
        for part in parents:
            target = target.setdefault(part, {})
        target[leaf] = value
    return nested


def keep_null_class_draws(stored: dict[str, Any]) -> dict[str, Any]:
    """A config written before ``sampling.classes`` drew the null class when asked for none: it still does."""
    sampling = stored.get("sampling")
    if isinstance(sampling, dict) and "classes" not in sampling:
        stored = {**stored, "sampling": {**sampling, "classes": "null"}}
    return stored


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


def class_names(train: Any) -> list[str]:
    """A labelled ``ImageDataset``'s class names, or its label indices as names when it has none."""
    return list(train.class_names) if train.class_names else [str(c) for c in range(int(train.labels.max()) + 1)]


def class_captions(names: Sequence[str], labels: Sequence[int]) -> list[str]:
    """One caption per label: the first caption template (``aediff.data.caption_templates``) filled with the
    label's class name."""
    template = caption_templates(names)[0]
    return [fill_template(template, names[label]) for label in labels]


class _LevelsRead(Exception):
    """Raised by the last feature hook to stop the forward pass: the layers after it are not needed."""


def _keep_pooled(found: dict[str, torch.Tensor], level: str, wanted: int) -> Callable:
    """A forward hook that keeps a module's output (the first element where it returns a tuple), averaged over
    positions: [N, width]; once ``wanted`` levels are kept it stops the pass (the decoder would be wasted)."""

    def hook(module: nn.Module, inputs: Any, output: Any) -> None:
        activation = output[0] if isinstance(output, tuple) else output  # encoders return (h, skips)
        found[level] = activation.float().mean(dim=(2, 3)).cpu()
        if len(found) == wanted:
            raise _LevelsRead

    return hook


@register_model
class DiffusionModel(Model):
    """x: [N, C, H, W] in [-1, 1]. ``sample(n)`` generates; ``denoise(x, sigma)`` removes noise of level sigma.

    The diffusion runs on tensors of ``space_shape``: the images themselves here, a latent in
    ``LatentDiffusionModel`` (which passes its latent's shape).
    """

    family = "diffusion"
    config_class = DiffusionConfig
    size_defaults = DIFFUSION_SIZES
    declared = frozenset(
        {
            Capability.GENERATE,
            Capability.DIFFUSION_SAMPLER,
            Capability.DENOISE,
            Capability.NOISE_LEVEL,
            Capability.DIFFUSION_BOUND,
            Capability.RESTORE,
            Capability.NETWORK_FEATURES,
        }
    )

    def __init__(self, config: DiffusionConfig, space_shape: tuple[int, int, int] | None = None):
        """space_shape: (C, H, W) the diffusion runs on; None: the images' (image_channels, *image_hw)."""
        super().__init__()
        conditioning = config.conditioning  # its ranges were checked when the config was built
        if conditioning.kind == "class" and conditioning.num_classes < 1:
            raise ConfigError(
                "condition 'class' needs num_classes >= 1: train on a labelled dataset, or use --condition text / none"
            )
        self.config = config
        self.space_shape = space_shape or (config.image_channels, *config.image_hw)
        context_dim = 0
        if conditioning.kind == "text":
            self.text_encoder = build_text_encoder(
                conditioning.text_encoder,
                path=conditioning.text_encoder_path,
                width=conditioning.text_width,
                layers=conditioning.text_layers,
                max_length=conditioning.text_max_length,
                cache_to_disk=conditioning.text_encoder != "learned",
            )
            context_dim = self.text_encoder.width
        channels, height, width = self.space_shape
        shape = {k: v for k, v in dataclasses.asdict(config.network).items() if k != "architecture"}
        network = UNetConfig(
            image_channels=channels,
            image_size=height,
            image_width=width if width != height else None,
            **shape,
            num_classes=conditioning.num_classes if conditioning.kind == "class" else 0,
            context_dim=context_dim,
        )
        process = config.process
        self.denoiser = Denoiser(build_network(config.network.architecture, network), process.parameterization,
                                 process.sigma_data)  # fmt: skip
        self.schedule = NoiseSchedule(
            process.schedule,
            process.num_train_steps,
            process.sigma_min,
            process.sigma_max,
            process.p_mean,
            process.p_std,
        )
        self.loss = DiffusionLoss(self.schedule, process.loss_weighting, process.min_snr_gamma)

    @classmethod
    def upgrade_config(cls, stored: dict[str, Any], version: int) -> dict[str, Any]:
        return keep_null_class_draws(nest_v1_fields(stored) if version < 2 else stored)

    @classmethod
    def data_defaults(cls, dataset: Any) -> dict[str, Any]:
        """Labelled data: a class-conditioned model (sampled a class in turn, guided; recipe_search.md)."""
        return {"conditioning.kind": "class"} if dataset.num_classes else {}

    # --- capabilities ---------------------------------------------------------------------------------
    @property
    def capabilities(self) -> frozenset[Capability]:
        extra = {
            "class": {Capability.CLASS_CONDITION, Capability.SAMPLE_CLASSES},
            "text": {Capability.TEXT_CONDITION, Capability.SAMPLE_CLASSES},
            "none": set(),
        }
        return self.declared | extra[self.config.conditioning.kind]

    def class_sampler(self, train: Any) -> ClassSampler:
        """Samples of given classes through the model's conditioning, guidance 1 (its conditional
        distribution): the labels themselves (--condition class), or the captions ``class_captions`` makes of
        ``train``'s class names (--condition text)."""
        self.require(Capability.SAMPLE_CLASSES, "sampling by class")
        text = self.can(Capability.TEXT_CONDITION)
        names = class_names(train) if text else []

        def draw(labels: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
            given = {"prompts": class_captions(names, labels.tolist())} if text else {"class_labels": labels}
            return self.sample(len(labels), Condition(**given, guidance=1.0), generator=generator)

        return draw

    @property
    def num_classes(self) -> int:
        conditioning = self.config.conditioning
        return conditioning.num_classes if conditioning.kind == "class" else 0

    def sampling_network(self) -> nn.Module:
        return self.denoiser

    def gradient_roots(self) -> dict[str, nn.Module]:
        roots: dict[str, nn.Module] = {"": self.denoiser.network}
        if self.config.conditioning.kind == "text":
            roots = {"text_encoder": self.text_encoder, **roots}
        return roots

    # --- training ---------------------------------------------------------------------------------------
    def forward(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        images, kind = batch["images"], self.config.conditioning.kind
        labels = batch.get("labels") if kind == "class" else None
        captions = batch.get("captions") if kind == "text" else None
        if (kind == "class" and labels is None) or (kind == "text" and captions is None):
            what = "labels" if kind == "class" else "captions"
            raise ConfigError(f"condition {kind!r} needs {what} in every batch; this dataset has none")
        dropped = None
        if self.config.conditioning.null_probability and kind != "none":
            # the null condition stands in for a random share of the batch (classifier-free guidance)
            dropped = torch.rand(len(images)) < self.config.conditioning.null_probability
            if captions is not None:
                captions = ["" if d else c for c, d in zip(captions, dropped.tolist(), strict=True)]
        condition = self.condition_inputs(len(images), labels, captions, where="the training batch")
        if dropped is not None and "class_labels" in condition:  # the null class, after the labels are checked
            labels = condition["class_labels"]
            condition["class_labels"] = torch.where(dropped.to(labels.device), self.num_classes, labels)
        return self.denoising_loss(self.diffusion_input(images), condition), {}

    def diffusion_input(self, images: torch.Tensor) -> torch.Tensor:
        """Images [N, C, H, W] in [-1, 1] -> what the diffusion runs on: the images themselves here."""
        return images

    def denoising_loss(self, x0: torch.Tensor, condition: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """The training objective on x0 [N, *space_shape] with the network's condition inputs (scalar)."""
        loss, _ = self.loss(self.denoiser, x0, condition)
        return loss

    # --- conditions ---------------------------------------------------------------------------------------
    def condition_inputs(
        self, n: int, class_labels: Any = None, prompts: Any = None, where: str = "sample()"
    ) -> dict[str, torch.Tensor]:
        """The network's condition inputs for n images. class_labels: an int, n ints or None (none: the
        null class); prompts: a string, n strings or None (none: the empty caption, the null prompt)."""
        kind = self.config.conditioning.kind
        if class_labels is not None:
            self.require(Capability.CLASS_CONDITION, f"{where}: a class")
        if prompts is not None:
            self.require(Capability.TEXT_CONDITION, f"{where}: a prompt")
        if kind == "class":
            if class_labels is None:
                return {"class_labels": torch.full((n,), self.num_classes, dtype=torch.long, device=self.device)}
            labels = torch.as_tensor(class_labels, dtype=torch.long, device=self.device).flatten()
            labels = labels.expand(n) if labels.numel() == 1 else labels
            if labels.numel() != n or labels.min() < 0 or labels.max() >= self.num_classes:
                raise ConfigError(
                    f"{where}: need 1 or {n} class labels in [0, {self.num_classes - 1}], got {labels.tolist()[:10]}"
                )
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
        """D(x, sigma, condition): the model's estimate of the clean x0, optionally clamped to [-1, 1]."""
        denoised = self.denoiser(x, torch.as_tensor(sigma, device=x.device, dtype=x.dtype), **condition)
        return denoised.clamp(-1, 1) if self.config.sampling.clip_denoised else denoised

    def guided_denoiser(self, n: int, condition: Condition | None = None) -> Callable:
        """The denoiser D(x, sigma) the samplers walk, for n images: conditional, and with classifier-free
        guidance (Ho & Salimans 2022) D = D_neg + w (D_cond - D_neg) when w != 1, where D_neg is the null
        condition unless a negative class / prompt is given. Guidance evaluates both in one batched call."""
        condition = condition or Condition()
        if self.config.conditioning.kind == "none" and condition.guidance not in (None, 1):
            raise ConfigError(
                f"guidance {condition.guidance} needs a conditioned model (this one has condition "
                "'none'); train one with --condition class or --condition text"
            )
        w = self.config.sampling.guidance if condition.guidance is None else condition.guidance
        negative_given = condition.negative_class is not None or condition.negative_prompt is not None
        if w == 0 and not negative_given:  # D_null alone: one network call, not two
            condition = dataclasses.replace(condition, class_labels=None, prompts=None)
        inputs = self.condition_inputs(n, condition.class_labels, condition.prompts)
        null_asked = condition.class_labels is None and condition.prompts is None  # guiding D_null to D_null
        if not inputs or ((w == 1 or null_asked) and not negative_given):
            return functools.partial(self.predict_x0, **inputs)
        both = concat_conditions(inputs, self.condition_inputs(n, condition.negative_class, condition.negative_prompt))
        clip = self.config.sampling.clip_denoised

        def denoise(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
            sigma = torch.as_tensor(sigma, device=x.device, dtype=x.dtype)
            d_cond, d_neg = self.denoiser(torch.cat([x, x]), sigma, **both).chunk(2)
            denoised = d_neg + w * (d_cond - d_neg)
            return denoised.clamp(-1, 1) if clip else denoised

        return denoise

    # --- sampling -------------------------------------------------------------------------------------------
    def sampler_plan(self, options: SamplerOptions | None = None) -> SamplerPlan:
        """``options`` with this model's defaults filled in, validated against the chosen sampler."""
        sampling = self.config.sampling
        return (options or SamplerOptions()).resolve(sampling.sampler, sampling.steps, self.noise_grid)

    @property
    def noise_grid(self) -> NoiseGrid:
        """The noise levels a diffusers scheduler is built on: the discrete schedule's, or the Karras range."""
        alphas_cumprod = self.schedule.alphas_cumprod if self.schedule.discrete else None
        return NoiseGrid(alphas_cumprod, *self.karras_range)

    def sampling_sigmas(self, plan: SamplerPlan) -> torch.Tensor:
        """The noise levels a planned sampler walks: for the samplers that need discrete timesteps
        (DDPM / DDIM) the schedule's own levels at evenly spaced timesteps ("trailing"); otherwise Karras et
        al.'s rho = 7 spacing from min(the schedule's largest sigma, sigma_max) down to its smallest; for a
        diffusers scheduler the levels it walks. [steps + 1], ending in 0 (a diffusers scheduler: its own count)."""
        if plan.spec.scheduler is not None:
            sigmas = scheduler_levels(plan.spec.scheduler, self.noise_grid, plan.steps)
        elif plan.spec.open_grid:
            grid = karras_sigmas(plan.steps + 1, *self.karras_range)
            sigmas = torch.cat([grid[:-2], grid[-1:]])
        elif plan.spec.discrete_timesteps and self.schedule.discrete:
            t = discrete_timesteps(self.schedule.num_steps, plan.steps)
            sigmas = torch.cat([self.schedule.sigmas[t], torch.zeros(1, dtype=torch.float64)])
        else:
            # A discrete schedule's largest sigma can be huge (cosine: ~2e4); sigma_max (80, far beyond the
            # data's scale of 0.5) is already pure noise, and starting there spares the steps that Karras'
            # spacing would spend above it (measured after the change: heun at 5 steps, FID 4.06 on 500
            # samples of docs/diffusion.md's 10-minute model; benchmarks/results/diffusion_budget.json,
            # "aediff_step_sweep"; the FID before the change was not kept).
            sigmas = karras_sigmas(plan.steps, *self.karras_range)
        return sigmas.float().to(self.device)

    @property
    def karras_range(self) -> tuple[float, float]:
        """(smallest, largest) sigma of the Karras spacing the continuous samplers walk: the schedule's
        smallest, and min(its largest, process.sigma_max)."""
        low, high = self.schedule.sigma_range
        return low, min(high, self.config.process.sigma_max)

    @torch.no_grad()
    def sample(
        self,
        n: int,
        condition: Condition | None = None,
        options: SamplerOptions | None = None,
        generator: torch.Generator | None = None,
        callback: Callable[[dict[str, Any]], None] | None = None,
    ) -> torch.Tensor:
        """n images [n, C, H, W] in [-1, 1].

        condition: what to draw and the guidance scale (None: the model's default, ``drawn_condition``: a
        class-conditioned model draws every class in turn at its default guidance; guidance 0: unconditional);
        options: sampler, steps and the sampler's own options (None: the model's defaults); callback:
        receives every step's state before the step ({"i", "sigma", "x", "denoised"}; see samplers.py).
        """
        plan = self.sampler_plan(options)
        denoise = self.guided_denoiser(n, self.drawn_condition(n, condition))
        sigmas = self.sampling_sigmas(plan)
        x = sigmas[0] * torch.randn((n, *self.space_shape), device=self.device, generator=generator)
        out = run_sampler(plan, denoise, x, sigmas, callback=callback, generator=generator)
        return self.output_images(out)

    def drawn_condition(self, n: int, condition: Condition | None) -> Condition | None:
        """What n samples are drawn with: a class-conditioned model asked for no class or caption takes every
        class in turn (labels 0, 1, ..., K-1, 0, ...) unless its config says ``sampling.classes = "null"``."""
        asked = condition or Condition()
        cycle = self.config.conditioning.kind == "class" and self.config.sampling.classes == "cycle"
        if not cycle or asked.class_labels is not None or asked.prompts is not None:
            return condition
        return dataclasses.replace(asked, class_labels=torch.arange(n) % self.num_classes)

    def output_images(self, x: torch.Tensor) -> torch.Tensor:
        """What the sampler's space means as images: here the pixels themselves, clamped to [-1, 1]."""
        return x.clamp(-1, 1)

    # --- the network's inner features ------------------------------------------------------------------------
    @property
    def feature_levels(self) -> tuple[str, ...]:
        return tuple(self.denoiser.network.feature_modules())

    @torch.no_grad()
    def network_features(
        self, images: torch.Tensor, sigma: float, levels: Sequence[str], generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        modules = self.denoiser.network.feature_modules()
        unknown = [level for level in levels if level not in modules]
        if unknown or not levels:
            offered = ", ".join(modules) or "none (this network exposes no levels)"
            raise ConfigError(f"feature level {', '.join(unknown) or '(none given)'} is not one of {offered}")
        if not sigma > 0:
            raise ConfigError(f"the features are read at a noise level sigma > 0, got {sigma!r}; e.g. 0.5")
        x = self.diffusion_input(images.to(self.device))
        x = x + sigma * torch.randn(x.shape, device=x.device, generator=generator)
        found: dict[str, torch.Tensor] = {}
        wanted = len(set(levels))
        hooks = [modules[level].register_forward_hook(_keep_pooled(found, level, wanted)) for level in set(levels)]
        try:
            self.denoiser(x, torch.tensor(float(sigma), device=x.device), **self.condition_inputs(len(x)))
        except _LevelsRead:
            pass
        finally:
            for hook in hooks:
                hook.remove()
        return {level: found[level] for level in levels}

    # --- restoration ---------------------------------------------------------------------------------------
    @property
    def restore_methods(self) -> tuple[str, ...]:
        return ("ddnm", "repaint", "one-pass")

    @torch.no_grad()
    def restore(
        self,
        y: torch.Tensor,
        operator: Degradation,
        options: RestoreOptions | None = None,
        condition: Condition | None = None,
        generator: torch.Generator | None = None,
        callback: Callable[[dict[str, Any]], None] | None = None,
    ) -> torch.Tensor:
        """DDNM (any sampler, any degradation), RePaint (masks), or one pass of the denoiser on the trivial fill
        ``A^+ y`` noised to ``options.sigma``; all in pixel space, see ``aediff.diffusion.restoration``. The
        condition and its guidance steer the denoiser as in ``sample``."""
        plan = (options or RestoreOptions()).resolve(self.restore_methods, operator)
        n = len(y)
        operator.check((n, *self.image_shape))
        y = y.to(self.device)
        denoise = self.guided_denoiser(n, condition)
        if plan.method == "one-pass":  # one network evaluation: no sampler, no noise levels to walk
            if plan.sigma is None:
                raise ConfigError("a diffusion model's one pass reads the filled image at a noise level: give --sigma")
            filled = operator.pseudo_inverse(y)
            noisy = filled + plan.sigma * torch.randn(filled.shape, device=self.device, generator=generator)
            x = denoise(noisy, torch.tensor(plan.sigma, device=self.device).expand(n))
        else:
            x = self.output_images(self._restore_by_sampling(plan, operator, y, denoise, generator, callback))
        return operator.project(x.clamp(-1, 1), y).clamp(-1, 1)

    def _restore_by_sampling(self, plan, operator: Degradation, y, denoise, generator, callback) -> torch.Tensor:
        """RePaint (resolve let it through only for a mask) or DDNM along this model's sampler plan."""
        sampling = self.sampler_plan(plan.sampler)
        sigmas = self.sampling_sigmas(sampling)
        if plan.method == "repaint":
            return sample_repaint(
                denoise, operator, y, sigmas, plan.jump_length, plan.jump_n_sample, generator, callback
            )
        start = sigmas[0] * torch.randn((len(y), *self.space_shape), device=self.device, generator=generator)
        return run_sampler(
            sampling, self.constrained_denoiser(denoise, operator, y), start, sigmas, callback, generator
        )

    def constrained_denoiser(self, denoise, operator: Degradation, y: torch.Tensor):
        """DDNM's denoiser in this model's sampling space: here pixels, each x0 estimate projected onto A x = y."""
        return projected_denoiser(denoise, operator, y)

    # --- denoising -----------------------------------------------------------------------------------------
    def integrate_down(self, x: torch.Tensor, sigma: float, steps: int, denoiser: Callable) -> torch.Tensor:
        """Integrate the probability-flow ODE from noise level ``sigma`` down to 0 in ``steps`` steps with
        the default sampler (dpm++ when the default needs discrete timesteps), deterministically."""
        low, _ = self.schedule.sigma_range
        sigmas = karras_sigmas(steps, min(low, sigma), sigma).float().to(x.device)
        name = self.config.sampling.sampler
        spec = SAMPLERS[name]
        # these sigmas are not the schedule's own, and the integration is deterministic (consistency restarts)
        name = "dpm++" if spec.discrete_timesteps or spec.stochastic({}) else name
        return run_sampler(SamplerOptions(sampler=name).resolve(name, steps), denoiser, x, sigmas)

    @torch.no_grad()
    def denoise(self, x: torch.Tensor, sigma: float | None = None, steps: int = 1) -> torch.Tensor:
        """Remove Gaussian noise of level ``sigma`` (in [-1, 1] pixel units) from x = x0 + sigma * eps.

        steps = 1: the single-step estimate D(x, sigma). steps > 1: run the default sampler from sigma
        down to 0 over ``steps`` noise levels (deterministic). The null condition throughout.
        """
        if sigma is None:
            raise ConfigError("a diffusion model must be told the noise level: denoise(x, sigma=...)")
        if steps < 1:
            raise ConfigError(f"steps must be at least 1, got {steps}")
        null = functools.partial(self.predict_x0, **self.condition_inputs(len(x)))
        if steps == 1:
            return null(x, sigma)
        return self.integrate_down(x, sigma, steps, null).clamp(-1, 1)

    @torch.no_grad()
    def preview(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Samples for TensorBoard (fixed seed, so they can be compared across steps)."""
        labels = torch.arange(16) % self.num_classes if self.can(Capability.CLASS_CONDITION) else None
        return {
            "samples": self.sample(
                16, Condition(class_labels=labels), generator=torch.Generator(self.device).manual_seed(0)
            )
        }

    # --- what DIFFUSION_SAMPLER and DIFFUSION_BOUND promise (models/interface.py) ----------------------------
    @property
    def denoiser(self) -> Denoiser:
        """D(x, sigma, **condition) on [N, *space_shape]: the parameterization around the network."""
        return self._modules["denoiser"]  # set in __init__: nn.Module keeps a sub-module there, not in __dict__

    @property
    def schedule(self) -> NoiseSchedule:
        """The noise levels training visits and the discrete samplers walk."""
        return self._schedule

    @schedule.setter
    def schedule(self, schedule: NoiseSchedule) -> None:  # __init__ sets it
        self._schedule = schedule

    @property
    def default_guidance(self) -> float:
        return self.config.sampling.guidance

    @property
    def clip_denoised(self) -> bool:
        return self.config.sampling.clip_denoised

    def config_with_sampling(self, sampler: SamplerName, steps: int, guidance: float | None = None) -> DiffusionConfig:
        guidance = self.config.sampling.guidance if guidance is None else guidance
        sampling = dataclasses.replace(self.config.sampling, sampler=sampler, steps=steps, guidance=guidance)
        return dataclasses.replace(self.config, sampling=sampling)

    @property
    def space_shape(self) -> tuple[int, int, int]:
        """(C, H, W) the diffusion runs on (given to __init__)."""
        return self._space_shape

    @space_shape.setter
    def space_shape(self, shape: tuple[int, int, int]) -> None:  # __init__ sets it
        self._space_shape = shape
