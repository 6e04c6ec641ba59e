"""Export a diffusion run as a folder that diffusers loads and samples from, with diffusers' own scheduler.

``aediff export RUN --format diffusers --out DIR`` writes:

| file                                           | what                                                        |
|------------------------------------------------|-------------------------------------------------------------|
| model_index.json                               | the pipeline's components, for ``DiffusionPipeline``        |
| pipeline.py                                    | ``AediffPipeline``, the sampling loop (a custom pipeline)   |
| denoiser/config.json                           | the run's model config (family, model, format version)      |
| denoiser/diffusion_pytorch_model.safetensors   | the weights (the run's EMA weights where it has them)       |
| scheduler/scheduler_config.json                | an ``EulerDiscreteScheduler``: Karras sigmas, as aediff's    |

Load and sample (aediff must be installed: the denoiser component is ``aediff.export.diffusers.AediffDenoiser``)::

    pipe = DiffusionPipeline.from_pretrained(DIR, custom_pipeline=str(DIR / "pipeline.py"), trust_remote_code=True)
    images = pipe(batch_size=4, num_inference_steps=20, generator=torch.Generator().manual_seed(0)).images

The denoiser component is D(x, sigma) -> x0 estimate in the variance-exploding view x = x0 + sigma * eps that
aediff's samplers use (clamped to [-1, 1] when the run samples with ``clip_denoised``), so the scheduler is
configured with ``prediction_type="sample"``. Its sigmas are Karras et al.'s rho = 7 spacing between the
same ends aediff's ``euler`` walks, with ``timestep_spacing="trailing"`` so that the initial noise is scaled
by the largest sigma as in ``aediff sample``: the pipeline and ``aediff sample --sampler euler`` take the
same steps from the same noise (tests/test_diffusers_interop.py measures the difference).

The other way, ``load_diffusers_folder`` opens a diffusers ``UNet2DModel`` + scheduler folder (``unet/``,
``scheduler/``) as ``DiffusersUNet``, an aediff model that can GENERATE with diffusers' own loop; ``aediff.load``
and so ``aediff eval`` use it for a folder with ``unet/config.json``.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers import ConfigMixin, EulerDiscreteScheduler, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import nn

from aediff.config import ImageShape, config_from_dict
from aediff.diffusion.diffusers_schedulers import NoiseGrid, betas_from_alphas_cumprod
from aediff.diffusion.samplers import SamplerOptions
from aediff.errors import ConfigError
from aediff.export import folders
from aediff.models import Capability, CapabilityError, Condition, Model, model_class
from aediff.models.interface import check_no_sampling_choices
from aediff.models.sizes import check_model_size
from aediff.modes import DiffusersSampler
from aediff.outputs import write_bytes_whole

PIPELINE_FILE = "pipeline.py"
PIPELINE_TEMPLATE = Path(__file__).with_name("diffusers_pipeline.py")
COMPONENT_LIBRARY = "aediff.export.diffusers"  # where diffusers finds the denoiser's class


class AediffDenoiser(ModelMixin, ConfigMixin):
    """An aediff diffusion model as a diffusers component: config.json holds the run's model config, the
    weights are the model's state dict. ``forward(sample, sigma, class_labels=None)`` -> the x0 estimate."""

    config_name = "config.json"

    @register_to_config
    def __init__(self, family: str = "diffusion", model_config: dict[str, Any] | None = None, format_version: int = 1):
        super().__init__()
        cls = model_class(family)
        config = config_from_dict(cls.config_class, cls.upgrade_config(model_config or {}, format_version))
        check_model_size(cls, config)  # the folder's config.json is read before anything is allocated
        self.network: Model = cls(config)

    @property
    def space_shape(self) -> tuple[int, ...]:
        return tuple(self.network.space_shape)

    def forward(
        self, sample: torch.Tensor, sigma: torch.Tensor | float, class_labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        condition = Condition(class_labels=class_labels) if class_labels is not None else None
        # no labels: the run's own default draw, as `aediff sample` (a class-conditioned run: every class in turn)
        denoise = self.network.guided_denoiser(len(sample), self.network.drawn_condition(len(sample), condition))
        return denoise(sample, torch.as_tensor(sigma, device=sample.device, dtype=sample.dtype))

    def to_images(self, x: torch.Tensor) -> torch.Tensor:
        """The sampler's final state as images [N, C, H, W] in [-1, 1] (a latent model decodes)."""
        return self.network.output_images(x)


# aediff's sampler -> the diffusers scheduler that walks the same steps (scheduler_for configures it)
SCHEDULERS: dict[str, str] = {
    "euler": "EulerDiscreteScheduler",
    "ddim": "DDIMScheduler",
    "dpm++": "DPMSolverMultistepScheduler",
}


def scheduler_for(model: Model, sampler: DiffusersSampler = "euler") -> Any:
    """The diffusers scheduler that takes the steps aediff's ``sampler`` takes (deterministic: ddim's eta = 0).

    euler: EulerDiscreteScheduler over the Karras sigmas aediff's euler walks (variance-exploding state).
    ddim: DDIMScheduler over the model's own discrete schedule (its betas), "trailing" timesteps as aediff's
    ddim; refused for an edm schedule, which has no discrete timesteps (aediff's ddim then walks Karras
    sigmas, which DDIMScheduler cannot). dpm++: DPMSolverMultistepScheduler (DPM-Solver++(2M), Karras sigmas
    between the ends aediff's sampler walks, first order on the first step and the last, as aediff's); its
    ``trained_betas`` (log-uniform in sigma over the same range) only place its timesteps."""
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

    low, high = model.karras_range
    if sampler == "euler":
        return EulerDiscreteScheduler(
            prediction_type="sample", use_karras_sigmas=True, sigma_min=low, sigma_max=high,
            timestep_spacing="trailing", final_sigmas_type="zero",
        )  # fmt: skip
    if sampler == "ddim":
        schedule = model.schedule
        if not schedule.discrete:
            raise CapabilityError(
                f"--sampler ddim exports the model's discrete schedule, and this run's schedule is "
                f"{schedule.kind!r}, which has none; export with --sampler euler or --sampler dpm++"
            )
        return DDIMScheduler(
            num_train_timesteps=schedule.num_steps,
            trained_betas=betas_from_alphas_cumprod(schedule.alphas_cumprod),
            prediction_type="sample", clip_sample=False, set_alpha_to_one=True, steps_offset=0,
            timestep_spacing="trailing",
        )  # fmt: skip
    grid = NoiseGrid(None, low, high).training_alphas_cumprod()  # log-uniform in sigma, as the in-process samplers
    scheduler = DPMSolverMultistepScheduler(
        num_train_timesteps=len(grid), trained_betas=betas_from_alphas_cumprod(grid), prediction_type="sample",
        algorithm_type="dpmsolver++", solver_order=2, use_karras_sigmas=True, lower_order_final=False,
        final_sigmas_type="zero",
    )  # fmt: skip
    # The betas' float32 cumulative product misplaces the smallest sigma by up to 1e-4 (1 - abar ~ 4e-6
    # there); diffusers takes the Karras ends from config.sigma_min / sigma_max where a config has them
    # (DPMSolverMultistepScheduler._convert_to_karras), and keeps such keys through save / from_pretrained.
    scheduler.register_to_config(sigma_min=low, sigma_max=high)
    return scheduler


def export_diffusers(model: Model, stored_model_config: dict[str, Any], out: str | Path, family: str,
                     format_version: int = 1, sampler: DiffusersSampler = "euler", overwrite: bool = False,
                     ) -> Path:  # fmt: skip
    """Write the diffusers folder (module docstring) for ``model`` into ``out``, its scheduler the one that
    reproduces aediff's ``sampler`` (``scheduler_for``). The model is copied to the CPU in fp32. ``out`` is
    prepared as ``folders.prepare_out`` does (refused when not empty, unless ``overwrite``), after every check,
    so a refused export leaves an earlier one in place. CapabilityError for a model without a diffusion sampler,
    with text conditioning (its caption encoder is not exported), or a scheduler its schedule cannot drive."""
    if not model.can(Capability.DIFFUSION_SAMPLER):
        raise CapabilityError(
            "the diffusers format needs a model that can sample with a diffusion sampler (a diffusion or "
            "latent-diffusion model); export an AE / VAE / DAE with --format onnx"
        )
    if model.can(Capability.TEXT_CONDITION):
        raise CapabilityError(
            "diffusers export of a text-conditioned model is not supported yet; export an unconditional or "
            "class-conditioned model"
        )
    scheduler = scheduler_for(model, sampler)  # before anything is written: it may refuse
    out = folders.prepare_out(out, overwrite, ["denoiser", "scheduler", "model_index.json", PIPELINE_FILE])
    out.mkdir(parents=True, exist_ok=True)
    model = model.float().cpu().eval()
    denoiser = AediffDenoiser(family=family, model_config=stored_model_config, format_version=format_version)
    denoiser.network.load_state_dict(model.state_dict())
    denoiser.save_pretrained(out / "denoiser")
    scheduler.save_pretrained(out / "scheduler")
    import diffusers

    index = {
        "_class_name": "AediffPipeline",
        "_diffusers_version": diffusers.__version__,
        "denoiser": [COMPONENT_LIBRARY, "AediffDenoiser"],
        "scheduler": ["diffusers", SCHEDULERS[sampler]],
    }
    write_bytes_whole(out / "model_index.json", (json.dumps(index, indent=2) + "\n").encode())
    shutil.copyfile(PIPELINE_TEMPLATE, out / PIPELINE_FILE)
    return out


# --- the other way: a diffusers UNet2DModel + scheduler folder as an aediff model ---------------------------
def is_diffusers_folder(path: str | Path) -> bool:
    """A folder diffusers wrote for a UNet2DModel pipeline: ``unet/config.json`` (and a scheduler beside it)."""
    return (Path(path) / "unet" / "config.json").is_file()


@dataclass(frozen=True)
class DiffusersUNetConfig(ImageShape):
    """What aediff needs to know of a diffusers UNet folder: its image shape, and where it came from."""

    image_channels: int = 1
    image_size: int = 8  # height, pixels
    image_width: int | None = None  # width, pixels; None = image_size (square)
    path: str = ""
    scheduler: str = ""  # the scheduler's class name
    prediction_type: str = "epsilon"
    steps: int = 50  # default sampling steps


class DiffusersUNet(Model):
    """A diffusers ``UNet2DModel`` and its scheduler as an aediff model that can GENERATE: ``sample`` runs
    diffusers' own loop (the scheduler's ``set_timesteps`` / ``step``), so aediff's suite scores it."""

    family = "diffusers"
    config_class = DiffusersUNetConfig
    declared = frozenset({Capability.GENERATE})

    def __init__(self, config: DiffusersUNetConfig, unet: nn.Module, scheduler: Any):
        super().__init__()
        self.config = config
        self.unet = unet
        self.scheduler = scheduler

    def sampling_network(self) -> nn.Module:
        return self.unet

    def forward(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        raise CapabilityError("a diffusers model loaded into aediff is for sampling and evaluation, not training")

    @torch.no_grad()
    def sample(
        self,
        n: int,
        condition: Condition | None = None,
        options: SamplerOptions | None = None,
        generator: torch.Generator | None = None,
        callback: Callable[[dict[str, Any]], None] | None = None,
    ) -> torch.Tensor:
        """n images [n, C, H, W] in [-1, 1], drawn with the folder's scheduler; options may set --steps only."""
        check_no_sampling_choices(self, condition, None)
        options = options or SamplerOptions()
        if options != SamplerOptions(steps=options.steps):
            raise ConfigError("a diffusers model samples with its own scheduler; only --steps can be chosen")
        steps = options.steps or self.config.steps
        shape = (n, *self.image_shape)
        x = torch.randn(shape, generator=generator, device="cpu").to(self.device) * self.scheduler.init_noise_sigma
        self.scheduler.set_timesteps(steps, device=self.device)
        for i, t in enumerate(self.scheduler.timesteps):
            output = self.unet(self.scheduler.scale_model_input(x, t), t).sample
            result = self.scheduler.step(output, t, x, generator=generator)
            if callback is not None:
                callback({"i": i, "sigma": t, "x": x, "denoised": result.pred_original_sample})
            x = result.prev_sample
        return x.clamp(-1, 1)


def _schedulers() -> tuple[type, ...]:
    """The diffusers schedulers a UNet folder may name (each loads from its scheduler_config.json)."""
    from diffusers import (
        DDIMScheduler,
        DDPMScheduler,
        DPMSolverMultistepScheduler,
        EulerAncestralDiscreteScheduler,
        EulerDiscreteScheduler,
        HeunDiscreteScheduler,
        PNDMScheduler,
    )

    return (DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler,
            EulerDiscreteScheduler, HeunDiscreteScheduler, PNDMScheduler)  # fmt: skip


def load_diffusers_folder(path: str | Path) -> tuple[DiffusersUNet, DiffusersUNetConfig]:
    """A diffusers UNet2DModel folder (``unet/``, ``scheduler/``) -> (the model in eval mode, its config)."""
    from diffusers import UNet2DModel

    path = Path(path)
    if not (path / "scheduler" / "scheduler_config.json").is_file():
        raise ConfigError(f"{path} has unet/ but no scheduler/scheduler_config.json; save the scheduler beside it")
    unet = UNet2DModel.from_pretrained(path / "unet")
    name = json.loads((path / "scheduler" / "scheduler_config.json").read_text()).get("_class_name")
    schedulers = {cls.__name__: cls for cls in _schedulers()}
    if name not in schedulers:
        raise ConfigError(f"{path / 'scheduler'}: scheduler {name!r} is not one of {', '.join(sorted(schedulers))}")
    scheduler_class = schedulers[name]
    scheduler = scheduler_class.from_pretrained(path / "scheduler")
    size = unet.config.sample_size  # an int (square) or [height, width]
    height, width = (size, size) if isinstance(size, int) else size
    config = DiffusersUNetConfig(
        image_channels=int(unet.config.out_channels),
        image_size=int(height),
        image_width=int(width) if width != height else None,
        path=str(path),
        scheduler=scheduler_class.__name__,
        prediction_type=str(scheduler.config.get("prediction_type", "epsilon")),
    )
    return DiffusersUNet(config, unet.eval(), scheduler).eval(), config
