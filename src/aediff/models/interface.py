"""What a model can do, declared once. Evaluation, the command line, the report and the web page decide
what to do with a model by asking ``model.can(Capability.X)``, never by probing attributes or reading
family names.

Every family subclasses :class:`Model` and declares its capabilities; the methods of a capability it does
not declare raise :class:`CapabilityError` with a message that says which models can. One meaning per
method, whatever the family:

| capability        | methods and properties                                  | meaning                                |
|-------------------|---------------------------------------------------------|----------------------------------------|
| LATENT            | encode(x) -> z, decode(z), reconstruct(x)               | a bottleneck: z [N, *latent_shape]     |
| GENERATE          | sample(n, condition, options, generator)                | n new images [n, C, H, W] in [-1, 1]   |
| DIFFUSION_SAMPLER | denoiser, schedule, space_shape, diffusion_input(x),    | sample walks a diffusion sampler:      |
|                   | output_images(x), condition_inputs(n, ...),             | SamplerOptions and trajectories apply  |
|                   | predict_x0(x, sigma), guided_denoiser(n, condition),    |                                        |
|                   | drawn_condition(n, condition),                          |                                        |
|                   | sampler_plan(options), sampling_sigmas(plan),           |                                        |
|                   | karras_range, default_guidance, clip_denoised,          |                                        |
|                   | config_with_sampling(sampler, steps, guidance)          |                                        |
| DENOISE           | denoise(x, sigma, steps)                                | x = clean + noise in pixels -> clean   |
| NOISE_LEVEL       | (denoise is told sigma, may take steps)                 | one network for every noise level      |
| ELBO              | elbo(x), iwae_log_likelihood(x, k), prepare_input(x),   | bounds on log p(x) of a VAE, nats per  |
|                   | likelihood                                              | image                                  |
| DIFFUSION_BOUND   | denoiser, schedule, on pixels (diffusion_nll)           | the variational bound of a pixel       |
|                   |                                                         | diffusion                              |
| CLASSIFY          | logits(x), features(x), layer_features(x), feature_dim, | a judge: classes, two feature spaces   |
|                   | layer_feature_dim                                       |                                        |
| CLASS_CONDITION   | sample(condition=Condition(class_labels))               | draws a given class                    |
| TEXT_CONDITION    | sample(condition=Condition(prompts))                    | draws a given caption                  |
| SAMPLE_CLASSES    | class_sampler(train) -> (labels, generator) -> images   | draws given classes of its training    |
|                   |                                                         | data: a class- or text-conditioned     |
|                   |                                                         | diffusion through its conditioning, an |
|                   |                                                         | autoencoder from a Gaussian fitted to  |
|                   |                                                         | each class's latents                   |
| RESTORE           | restore(y, operator, options, condition, generator,     | y = A x for a known degradation A      |
|                   | callback), restore_methods                              | (aediff.diffusion.degradations) -> x,  |
|                   |                                                         | keeping what y says of x               |
| NETWORK_FEATURES  | network_features(images, sigma, levels, generator),     | the denoiser's activations at a level  |
|                   | feature_levels                                          | (e.g. its bottleneck) for images noised|
|                   |                                                         | to sigma, pooled per image: [N, width] |
| CODEBOOK          | code_indices(x), codebook_size                          | a vector-quantised bottleneck: the     |
|                   |                                                         | index of each latent position's code,  |
|                   |                                                         | [N, h, w] in [0, codebook_size)        |

CLASS_CONDITION, TEXT_CONDITION and SAMPLE_CLASSES are declared by a diffusion model's config (its conditioning),
so ``class_sampler`` is promised by no entry of ``METHODS``: an autoencoder always declares SAMPLE_CLASSES.

A method or property may be promised by two capabilities (a diffusion sampler and the diffusion bound both
walk ``denoiser`` along ``schedule``); a family implements it when it declares either.

Images are [N, C, H, W] in [-1, 1] everywhere; ``model.image_shape`` is (C, H, W) of the images a model
takes and makes (a latent diffusion model's are its autoencoder's, not its latent's).
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from aediff.diffusion.degradations import Degradation
from aediff.diffusion.parameterization import Denoiser
from aediff.diffusion.restoration import RestoreOptions
from aediff.diffusion.samplers import SamplerOptions, SamplerPlan
from aediff.diffusion.schedules import NoiseSchedule
from aediff.errors import ConfigError
from aediff.models.defaults import NetworkDefaults
from aediff.modes import Likelihood, SamplerName


class CapabilityError(ConfigError):
    """A model was asked for something its family does not do; the message names the families that do."""


class Capability(str, enum.Enum):
    LATENT = "latent"
    GENERATE = "generate"
    DIFFUSION_SAMPLER = "diffusion-sampler"
    DENOISE = "denoise"
    NOISE_LEVEL = "noise-level"
    ELBO = "elbo"
    DIFFUSION_BOUND = "diffusion-bound"
    CLASSIFY = "classify"
    CLASS_CONDITION = "class-condition"
    TEXT_CONDITION = "text-condition"
    SAMPLE_CLASSES = "sample-classes"
    RESTORE = "restore"
    NETWORK_FEATURES = "network-features"
    CODEBOOK = "codebook"


# What each capability lets a caller do, for messages ("... needs a model that can <this>").
ABILITIES: dict[Capability, str] = {
    Capability.LATENT: "encode images to a latent and decode them (an AE, VAE, KL-AE, VQ-VAE or DAE)",
    Capability.GENERATE: "generate images",
    Capability.DIFFUSION_SAMPLER: "sample with a diffusion sampler (a diffusion or latent-diffusion model)",
    Capability.DENOISE: "denoise images",
    Capability.NOISE_LEVEL: "be told the noise level (a diffusion model)",
    Capability.ELBO: "bound its likelihood with the ELBO / IWAE (a VAE)",
    Capability.DIFFUSION_BOUND: "bound its likelihood with the diffusion variational bound (a pixel diffusion model)",
    Capability.CLASSIFY: "classify images (a classifier)",
    Capability.CLASS_CONDITION: "draw a given class (a diffusion model trained with --condition class)",
    Capability.TEXT_CONDITION: "draw a given caption (a diffusion model trained with --condition text)",
    Capability.SAMPLE_CLASSES: (
        "draw given classes of labelled data (an autoencoder, or a diffusion model trained with --condition class "
        "or text)"
    ),
    Capability.RESTORE: (
        "restore images under a known degradation (an autoencoder, or a diffusion model: pixel or latent)"
    ),
    Capability.NETWORK_FEATURES: "give its denoising network's inner features of noisy images (a diffusion model)",
    Capability.CODEBOOK: "quantise its latent to a codebook (a VQ-VAE)",
}

# A class sampler: labels [b] int64 (class indices of the data) and a generator -> images [b, C, H, W] in [-1, 1]
# of those classes, one per label.
ClassSampler = Callable[[torch.Tensor, torch.Generator | None], torch.Tensor]

# The methods and properties each capability promises; a family overrides exactly those of the capabilities it
# declares (tested for every family).
METHODS: dict[Capability, tuple[str, ...]] = {
    Capability.LATENT: ("encode", "decode", "reconstruct"),
    Capability.GENERATE: ("sample",),
    Capability.DENOISE: ("denoise",),
    Capability.DIFFUSION_SAMPLER: (
        "denoiser",
        "schedule",
        "space_shape",
        "diffusion_input",
        "output_images",
        "condition_inputs",
        "predict_x0",
        "guided_denoiser",
        "drawn_condition",
        "sampler_plan",
        "sampling_sigmas",
        "karras_range",
        "default_guidance",
        "clip_denoised",
        "config_with_sampling",
    ),
    Capability.ELBO: ("elbo", "iwae_log_likelihood", "prepare_input", "likelihood"),
    Capability.DIFFUSION_BOUND: ("denoiser", "schedule"),
    Capability.CLASSIFY: ("logits", "features", "layer_features", "feature_dim", "layer_feature_dim"),
    Capability.RESTORE: ("restore", "restore_methods"),
    Capability.NETWORK_FEATURES: ("network_features", "feature_levels"),
    Capability.CODEBOOK: ("code_indices", "codebook_size"),
}


@dataclass(frozen=True, eq=False)
class Condition:
    """What a conditioned model is asked to draw, and how strongly (classifier-free guidance).

    class_labels: one class index for every image, or one per image; prompts: one caption, or one per image;
    negative_class / negative_prompt: what guidance steers away from instead of the null condition;
    guidance: the scale w of D = D_neg + w (D_cond - D_neg); None = the model's default, 1 = no guidance.
    All None: the model's default draw (a class-conditioned diffusion model: every class in turn, unless its
    config's sampling.classes is "null"); guidance 0 with no negative: the null condition alone (unconditional).
    """

    class_labels: int | Sequence[int] | torch.Tensor | None = None
    prompts: str | Sequence[str] | None = None
    negative_class: int | None = None
    negative_prompt: str | None = None
    guidance: float | None = None

    @property
    def needs(self) -> list[Capability]:
        """The capabilities a model must have to honour this condition."""
        needs = []
        if self.class_labels is not None or self.negative_class is not None:
            needs.append(Capability.CLASS_CONDITION)
        if self.prompts is not None or self.negative_prompt is not None:
            needs.append(Capability.TEXT_CONDITION)
        return needs

    def rows(self, start: int, stop: int, n: int) -> Condition:
        """The condition of images start..stop-1 of n (per-image labels and prompts are sliced)."""

        def part(value: Any) -> Any:
            if value is None or np.ndim(value) == 0 or len(value) != n:  # one for all (0-d tensors too)
                return value
            return value[start:stop]

        return replace(self, class_labels=part(self.class_labels), prompts=part(self.prompts))


def check_no_sampling_choices(model: Model, condition: Condition | None, options: SamplerOptions | None) -> None:
    """Refuse a condition or sampler options for a model that would ignore them (never silently ignored)."""
    for capability in condition.needs if condition is not None else []:
        model.require(capability, "this condition")
    if condition is not None and condition.guidance not in (None, 1):
        raise CapabilityError(
            f"guidance {condition.guidance} needs a conditioned diffusion model; this is a {model.family!r} model"
        )
    if options is not None and options != SamplerOptions():
        model.require(Capability.DIFFUSION_SAMPLER, "sampler options (--sampler, --steps, --eta, --s-churn)")


class Model(nn.Module):
    """The interface every family implements. ``forward(batch) -> (loss, logs)`` is the training loss."""

    family: ClassVar[str]
    config_class: ClassVar[type]
    declared: ClassVar[frozenset[Capability]] = frozenset()  # what every model of the class can do
    # size rule name -> the network a new run on such images starts from (aediff.models.defaults); inherited by
    # subclasses; a rule not named keeps the config's defaults
    size_defaults: ClassVar[Mapping[str, NetworkDefaults]] = {}

    @classmethod
    def unread_settings(cls, model: Mapping[str, Any]) -> frozenset[str]:
        """Config fields a new model with the user's ``model`` overrides would never read (a vector bottleneck's
        width in a spatial latent): the data's defaults leave them alone and do not say they set them. None unless
        the family declares some."""
        return frozenset()

    # --- capabilities ---------------------------------------------------------------------------------
    @property
    def capabilities(self) -> frozenset[Capability]:
        """What this model can do: its class's declaration, plus what its config adds (conditioning)."""
        return self.declared

    def can(self, capability: Capability) -> bool:
        return capability in self.capabilities

    def require(self, capability: Capability, action: str) -> None:
        """Raise CapabilityError, naming ``action`` and who could do it, unless this model can."""
        if not self.can(capability):
            raise CapabilityError(
                f"{action} needs a model that can {ABILITIES[capability]}; this is a "
                f"{self.family!r} model, which cannot"
            )

    # --- shapes and placement ---------------------------------------------------------------------------
    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the images the model takes and makes (every family's config has ``image_hw``)."""
        c = self.config  # type: ignore[attr-defined]
        return (c.image_channels, *c.image_hw)

    @property
    def num_classes(self) -> int:
        """Classes the model tells apart or can be conditioned on; 0 when none."""
        return 0

    @property
    def device(self) -> torch.device:
        return model_device(self)

    # --- the capabilities' methods (overridden by the families that declare them) -------------------------
    def _unsupported(self, capability: Capability, what: str) -> CapabilityError:
        """The error of ``what`` ("encode()", "denoiser") asked of a model that lacks ``capability``."""
        return CapabilityError(
            f"{what} needs a model that can {ABILITIES[capability]}; this is a {self.family!r} model, which cannot"
        )

    # LATENT
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        raise self._unsupported(Capability.LATENT, "encode()")

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        raise self._unsupported(Capability.LATENT, "decode()")

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        raise self._unsupported(Capability.LATENT, "reconstruct()")

    # GENERATE
    def sample(
        self,
        n: int,
        condition: Condition | None = None,
        options: SamplerOptions | None = None,
        generator: torch.Generator | None = None,
        callback: Callable[[dict[str, Any]], None] | None = None,
    ) -> torch.Tensor:
        raise self._unsupported(Capability.GENERATE, "sample()")

    # RESTORE
    @property
    def restore_methods(self) -> tuple[str, ...]:
        """The restoration methods this model runs (``aediff.diffusion.restoration.RESTORE_METHODS``), its
        default first."""
        raise self._unsupported(Capability.RESTORE, "restore_methods")

    def restore(
        self,
        y: torch.Tensor,
        operator: Degradation,
        options: RestoreOptions | None = None,
        condition: Condition | None = None,
        generator: torch.Generator | None = None,
        callback: Callable[[dict[str, Any]], None] | None = None,
    ) -> torch.Tensor:
        """Images [N, C, H, W] in [-1, 1] that explain the measurement ``y = operator.forward(x)`` of unknown
        images x: ``operator.project`` is their last step, so a mask's known pixels are y's exactly (and
        ``A x = y`` holds to float precision wherever clamping to [-1, 1] does not bind). options: the method
        and its settings (None: the model's default method); condition: a conditioned model's class or
        caption and guidance; callback: a diffusion method's steps, as ``sample``'s."""
        raise self._unsupported(Capability.RESTORE, "restore()")

    # NETWORK_FEATURES
    @property
    def feature_levels(self) -> tuple[str, ...]:
        """The levels ``network_features`` reads (e.g. "unet-mid", the bottleneck); empty when its network
        exposes none."""
        raise self._unsupported(Capability.NETWORK_FEATURES, "feature_levels")

    def network_features(
        self, images: torch.Tensor, sigma: float, levels: Sequence[str], generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        """{level: [N, width]}: the denoising network's activations at each level for ``images`` [N, C, H, W] in
        [-1, 1] noised to ``sigma`` in the diffusion's own space (pixels; a latent diffusion model's scaled
        latents) with fresh noise from ``generator``, averaged over positions, unconditioned."""
        raise self._unsupported(Capability.NETWORK_FEATURES, "network_features()")

    # SAMPLE_CLASSES
    def class_sampler(self, train: Any) -> ClassSampler:
        """What draws images of given classes of ``train`` (a labelled ``aediff.data.ImageDataset``, the split
        the model was trained on), prepared once (an autoencoder fits its per-class Gaussians here): a
        ``ClassSampler``. No classifier-free guidance: samples of the model's conditional distribution."""
        raise self._unsupported(Capability.SAMPLE_CLASSES, "class_sampler()")

    # DIFFUSION_SAMPLER (denoiser and schedule also for DIFFUSION_BOUND)
    @property
    def denoiser(self) -> Denoiser:
        """D(x, sigma, **condition) -> the estimate of the clean x0, not clamped: x [N, *space_shape] (the images
        for a pixel diffusion, the scaled latents for a latent one), sigma [N] or 0-d (the noise level in
        those units), condition the network's condition inputs for the N images; -> [N, *space_shape]."""
        raise self._unsupported(Capability.DIFFUSION_SAMPLER, "denoiser")

    @property
    def schedule(self) -> NoiseSchedule:
        """The noise levels training visits (discrete with T steps, or continuous); the chain of the bound."""
        raise self._unsupported(Capability.DIFFUSION_SAMPLER, "schedule")

    @property
    def space_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of what the diffusion runs on: the images' for a pixel diffusion, the latent's for a latent one."""
        raise self._unsupported(Capability.DIFFUSION_SAMPLER, "space_shape")

    def diffusion_input(self, images: torch.Tensor) -> torch.Tensor:
        """Images [N, C, H, W] in [-1, 1] -> what the diffusion runs on, [N, *space_shape]."""
        raise self._unsupported(Capability.DIFFUSION_SAMPLER, "diffusion_input()")

    def output_images(self, x: torch.Tensor) -> torch.Tensor:
        """A sampler's final x [N, *space_shape] -> images [N, C, H, W] in [-1, 1]."""
        raise self._unsupported(Capability.DIFFUSION_SAMPLER, "output_images()")

    def condition_inputs(
        self, n: int, class_labels: Any = None, prompts: Any = None, where: str = "sample()"
    ) -> dict[str, torch.Tensor]:
        """The network's condition inputs for n images (the ``**condition`` of ``denoiser``): class_labels an int,
        n ints or None (the null class), prompts a string, n strings or None (the null prompt); ``where`` names
        the caller in errors. {} for an unconditioned model."""
        raise self._unsupported(Capability.DIFFUSION_SAMPLER, "condition_inputs()")

    def predict_x0(self, x: torch.Tensor, sigma: torch.Tensor | float, **condition: Any) -> torch.Tensor:
        """``denoiser(x, sigma, **condition)``, clamped to [-1, 1] when ``clip_denoised``; [N, *space_shape]."""
        raise self._unsupported(Capability.DIFFUSION_SAMPLER, "predict_x0()")

    def guided_denoiser(self, n: int, condition: Condition | None = None) -> Callable:
        """The denoiser (x [n, *space_shape], sigma) -> x0 estimate that the samplers walk for n images: with
        ``condition``'s class or prompt and its guidance (None: ``default_guidance``)."""
        raise self._unsupported(Capability.DIFFUSION_SAMPLER, "guided_denoiser()")

    def drawn_condition(self, n: int, condition: Condition | None) -> Condition | None:
        """What ``sample`` draws n images with when asked for ``condition``: the model's default draw filled in
        (a class-conditioned model asked for no class or caption: every class in turn, unless its config says
        the null class)."""
        raise self._unsupported(Capability.DIFFUSION_SAMPLER, "drawn_condition()")

    def sampler_plan(self, options: SamplerOptions | None = None) -> SamplerPlan:
        """``options`` with this model's default sampler and steps filled in, validated against the sampler's
        signature: the one plan ``run_sampler`` walks."""
        raise self._unsupported(Capability.DIFFUSION_SAMPLER, "sampler_plan()")

    def sampling_sigmas(self, plan: SamplerPlan) -> torch.Tensor:
        """The noise levels ``plan`` walks, [steps + 1], decreasing, ending in 0, on the model's device."""
        raise self._unsupported(Capability.DIFFUSION_SAMPLER, "sampling_sigmas()")

    @property
    def karras_range(self) -> tuple[float, float]:
        """(smallest, largest) sigma of the Karras spacing the continuous samplers walk."""
        raise self._unsupported(Capability.DIFFUSION_SAMPLER, "karras_range")

    @property
    def default_guidance(self) -> float:
        """The classifier-free guidance scale w >= 0 that ``sample`` uses when the condition gives none (1 = none)."""
        raise self._unsupported(Capability.DIFFUSION_SAMPLER, "default_guidance")

    @property
    def clip_denoised(self) -> bool:
        """Whether each x0 estimate is clamped to [-1, 1] while sampling."""
        raise self._unsupported(Capability.DIFFUSION_SAMPLER, "clip_denoised")

    def config_with_sampling(self, sampler: SamplerName, steps: int, guidance: float | None = None) -> Any:
        """A copy of this model's config whose default sampler, steps and guidance (None: kept) are these, the
        rest unchanged (what a distilled student's run folder records)."""
        raise self._unsupported(Capability.DIFFUSION_SAMPLER, "config_with_sampling()")

    # DENOISE
    def denoise(self, x: torch.Tensor, sigma: float | None = None, steps: int = 1) -> torch.Tensor:
        raise self._unsupported(Capability.DENOISE, "denoise()")

    # ELBO
    def elbo(self, x: torch.Tensor) -> torch.Tensor:
        raise self._unsupported(Capability.ELBO, "elbo()")

    def iwae_log_likelihood(self, x: torch.Tensor, k: int = 100) -> torch.Tensor:
        raise self._unsupported(Capability.ELBO, "iwae_log_likelihood()")

    def prepare_input(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Images [N, C, H, W] in [-1, 1] -> what ``likelihood`` models, the same shape: for "bernoulli" each
        pixel -1 or +1 with P(+1) = (x + 1) / 2 (drawn with ``generator``), for "gaussian" x itself."""
        raise self._unsupported(Capability.ELBO, "prepare_input()")

    @property
    def likelihood(self) -> Likelihood:
        """The decoder's p(x|z): "gaussian" (on pixels in [-1, 1]) or "bernoulli" (on binarized images)."""
        raise self._unsupported(Capability.ELBO, "likelihood")

    # CLASSIFY
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        raise self._unsupported(Capability.CLASSIFY, "logits()")

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Images [N, C, H, W] in [-1, 1] -> penultimate features [N, feature_dim]."""
        raise self._unsupported(Capability.CLASSIFY, "features()")

    def layer_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images [N, C, H, W] in [-1, 1] -> features that also see blur, [N, layer_feature_dim]."""
        raise self._unsupported(Capability.CLASSIFY, "layer_features()")

    @property
    def feature_dim(self) -> int:
        """D of ``features``."""
        raise self._unsupported(Capability.CLASSIFY, "feature_dim")

    @property
    def layer_feature_dim(self) -> int:
        """D of ``layer_features``."""
        raise self._unsupported(Capability.CLASSIFY, "layer_feature_dim")

    # CODEBOOK
    def code_indices(self, x: torch.Tensor) -> torch.Tensor:
        """Images [N, C, H, W] in [-1, 1] -> the index of the code each latent position is quantised to, [N, h, w]
        int64 in [0, codebook_size)."""
        raise self._unsupported(Capability.CODEBOOK, "code_indices()")

    @property
    def codebook_size(self) -> int:
        """K, the number of codes in the codebook."""
        raise self._unsupported(Capability.CODEBOOK, "codebook_size")

    # --- what the trainer and the diagnostics use --------------------------------------------------------
    def sampling_network(self) -> nn.Module:
        """The module whose calls are the network evaluations of sampling (counted as NFE)."""
        return self

    def gradient_roots(self) -> dict[str, nn.Module]:
        """Name prefix -> module whose blocks the gradient diagnostics report ("" = no prefix)."""
        return {"": self}

    def preview(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Image grids for TensorBoard, [N, C, H, W] in [-1, 1] each; none by default."""
        return {}

    def after_training(self, batches: Iterable[torch.Tensor]) -> None:
        """Called once by the trainer at the end of training with the training images; nothing by default."""

    def begin_step(self, step: int) -> None:
        """Called by the trainer before each optimizer step with the steps done so far (0 before the first; a
        resumed run goes on from its checkpoint's), for a loss that changes with training progress (a KL
        autoencoder's discriminator switches on at a step); nothing by default."""

    def without_training_parts(self) -> Model:
        """This model as a frozen part of another (latent diffusion's autoencoder): without the parts only its own
        training uses (a KL autoencoder's discriminator), sharing the rest of its weights, with a ``config`` that
        rebuilds exactly it. The model itself when it has no such parts."""
        return self

    @classmethod
    def prepare_config(cls, config: Any, dataset: Any, load_run: Callable[[str], Any]) -> tuple[Any, dict[str, Any]]:
        """Before a new run is built: (the completed config, components to build the model with). ``load_run``
        opens another run folder (latent diffusion reads its autoencoder this way, once)."""
        return config, {}

    @classmethod
    def data_defaults(cls, dataset: Any) -> dict[str, Any]:
        """Config overrides a new run on ``dataset`` starts from, before the user's own (which win)."""
        return {}

    @classmethod
    def upgrade_config(cls, stored: dict[str, Any], version: int) -> dict[str, Any]:
        """A model config as written by config.json format ``version`` -> today's fields."""
        return stored


def model_device(model: nn.Module) -> torch.device:
    """The device of a model's first parameter (or buffer); the CPU for a model with neither."""
    for tensor in itertools.chain(model.parameters(), model.buffers()):  # lazily: the first one decides
        return tensor.device
    return torch.device("cpu")
