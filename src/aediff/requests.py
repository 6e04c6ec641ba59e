"""One parser from what a user asks for to what a model takes: a ``Condition``, ``SamplerOptions`` and, for
restoration, a ``Degradation``.

The command line (``aediff sample``) and the web page's Generate tab both call ``parse_sampling``, so every
value is checked once, against one declared range, with one message: the same bad value gets the same words
from either front end. Values come as typed (``--guidance 3``) or as the page's text fields ("3", "" for
none); None or an empty string leaves a choice to the model's defaults.

Declared ranges (also in docs/app.md and the CLI's --help):
- class, negative class: a class index in [0, num_classes - 1]; class also takes "all" (every class in turn);
- guidance: the classifier-free guidance scale w in [GUIDANCE_MIN, GUIDANCE_MAX] = [0, 20]; 0 = the negative
  (or null) condition alone, 1 = none. Useful scales are 1-10; above 20 every sample saturates;
- sampler, steps, eta, s_churn: checked by ``SamplerOptions.resolve`` against the chosen sampler (steps a
  whole number in [1, MAX_SAMPLING_STEPS], eta in [0, 1], s_churn >= 0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from aediff.config import MAX_SAMPLING_STEPS
from aediff.data.files import IMAGE_EXTENSIONS
from aediff.diffusion.degradations import Degradation, Downsample, Mask, degradation_from_spec, whole_number
from aediff.diffusion.restoration import RestoreOptions
from aediff.diffusion.samplers import SamplerOptions
from aediff.errors import ConfigError
from aediff.models import Capability, Condition, Model

GUIDANCE_MIN, GUIDANCE_MAX = 0.0, 20.0  # classifier-free guidance scale w; 1 = none
ALL_CLASSES = "all"  # class: every class in turn over the samples

Text = str | float | int | None  # a value as typed on the command line or in a page's field


class RequestError(ConfigError):
    """A request refused: the message names the field, what it takes, and the value given."""


@dataclass(frozen=True)
class SamplingRequest:
    """What ``model.sample`` is asked for: condition None = unconditional with the model's guidance;
    options None = the model's sampler and steps."""

    condition: Condition | None = None
    options: SamplerOptions | None = None


def _given(value: Text) -> bool:
    return value is not None and str(value).strip() != ""


def parse_class(value: Text, model: Model, what: str, samples: int | None = None) -> int | torch.Tensor | None:
    """A class index of a class-conditioned model, in [0, num_classes - 1]; with ``samples``, also "all": the
    labels 0, 1, ..., cycled over ``samples`` images. None when not given."""
    if not _given(value):
        return None
    model.require(Capability.CLASS_CONDITION, what)
    text = str(value).strip()
    if samples is not None and text == ALL_CLASSES:
        return torch.arange(samples) % model.num_classes
    try:
        index = int(text)
    except ValueError:
        accepted = f"a class index or {ALL_CLASSES!r}" if samples is not None else "a class index"
        raise RequestError(f"{what} takes {accepted}, got {text!r}") from None
    count = model.num_classes
    if not 0 <= index < count:
        raise RequestError(f"{what} {index} is not a class of this run: it has classes 0..{count - 1}")
    return index


def parse_prompt(value: Text, model: Model, what: str) -> str | None:
    """A caption for a text-conditioned model; None when not given."""
    if not _given(value):
        return None
    model.require(Capability.TEXT_CONDITION, what)
    return str(value)


def parse_guidance(value: Text, model: Model) -> float | None:
    """The guidance scale, a number in [GUIDANCE_MIN, GUIDANCE_MAX]; other than 1 only for a class- or
    text-conditioned model. None when not given (the model's default)."""
    if not _given(value):
        return None
    model.require(Capability.DIFFUSION_SAMPLER, "guidance")
    try:
        scale = float(value)  # type: ignore[arg-type]  # _given: not None
    except ValueError:
        raise RequestError(f"guidance takes a number (1 = none), got {value!r}") from None
    if not (math.isfinite(scale) and GUIDANCE_MIN <= scale <= GUIDANCE_MAX):
        raise RequestError(f"guidance must be from {GUIDANCE_MIN:g} to {GUIDANCE_MAX:g} (1 = none), got {scale:g}")
    if scale != 1 and not (model.can(Capability.CLASS_CONDITION) or model.can(Capability.TEXT_CONDITION)):
        raise RequestError(
            f"guidance {scale:g} needs a class- or text-conditioned run; leave it out (or 1) for this one"
        )
    return scale


def parse_steps(value: Text) -> int | None:
    """Sampling steps, a whole number in [1, MAX_SAMPLING_STEPS]; None when not given."""
    if not _given(value):
        return None
    try:
        number = float(value)  # type: ignore[arg-type]  # _given: not None
    except ValueError:
        number = math.nan
    if not (number.is_integer() and 1 <= number <= MAX_SAMPLING_STEPS):
        raise RequestError(f"steps must be a whole number from 1 to {MAX_SAMPLING_STEPS}, got {value!r}")
    return int(number)


def parse_sampler_options(
    model: Model, sampler: Text = None, steps: Text = None, eta: float | None = None, s_churn: float | None = None
) -> SamplerOptions | None:
    """The SamplerOptions asked for, checked against the chosen sampler now, before any work ("--eta applies
    to ddim, not dpm++"); None when nothing is asked."""
    options = SamplerOptions(
        sampler=str(sampler).strip() if _given(sampler) else None, steps=parse_steps(steps), eta=eta, s_churn=s_churn
    )
    if options == SamplerOptions():
        return None
    model.require(Capability.DIFFUSION_SAMPLER, "sampler options (sampler, steps, eta, s_churn)")
    model.sampler_plan(options)  # type: ignore[attr-defined]  # DIFFUSION_SAMPLER models plan their sampler
    return options


def parse_sampling(
    model: Model,
    samples: int,
    *,
    class_: Text = None,
    negative_class: Text = None,
    prompt: Text = None,
    negative_prompt: Text = None,
    guidance: Text = None,
    sampler: Text = None,
    steps: Text = None,
    eta: float | None = None,
    s_churn: float | None = None,
) -> SamplingRequest:
    """A request to draw ``samples`` images from ``model``, every value checked (RequestError, or the
    model's CapabilityError for what it cannot do)."""
    condition = Condition(
        class_labels=parse_class(class_, model, "class", samples=samples),
        negative_class=parse_class(negative_class, model, "negative class"),  # type: ignore[arg-type]  # no "all"
        prompts=parse_prompt(prompt, model, "prompt"),
        negative_prompt=parse_prompt(negative_prompt, model, "negative prompt"),
        guidance=parse_guidance(guidance, model),
    )
    wanted = bool(condition.needs) or condition.guidance is not None
    options = parse_sampler_options(model, sampler, steps, eta, s_churn)
    return SamplingRequest(condition if wanted else None, options)


# --- restoration --------------------------------------------------------------------------------------------

MASK_FORMS = "box:SIDE, random:RATE, half, lines:N or a mask image (white = the pixels to fill)"
MASK_KINDS = ("box", "random", "half", "lines")


def parse_degradation(
    mask: Text, upscale: Text, n: int, image_shape: tuple[int, int, int], seed: int = 0
) -> Degradation:
    """What ``aediff restore --mask`` / ``--upscale`` asks for (exactly one), for n images of ``image_shape``
    (C, H, W), checked to fit them; masks are drawn from ``seed`` so every method sees the same holes."""
    if _given(mask) == _given(upscale):
        raise RequestError(f"give --mask ({MASK_FORMS}) or --upscale (2, 4, ...): one of them")
    if _given(upscale):
        factor = whole_number(upscale, "--upscale", "2 or 4")
        operator: Degradation = Downsample(factor)
    else:
        operator = _mask(str(mask).strip(), n, image_shape[1:], torch.Generator().manual_seed(seed))
    operator.check((n, *image_shape))
    return operator


def _mask(spec: str, n: int, size: tuple[int, int], generator: torch.Generator) -> Mask:
    kind = spec.partition(":")[0]
    if kind in MASK_KINDS:
        return degradation_from_spec(spec, n, size, generator)
    if Path(spec).suffix.lower() in IMAGE_EXTENSIONS or Path(spec).is_file():
        return mask_from_image(Path(spec), size)
    raise RequestError(f"unknown mask {spec!r}: use {MASK_FORMS}")


def mask_from_image(path: Path, size: tuple[int, int]) -> Mask:
    """A mask drawn by a user: an image of ``size`` (H, W) whose white pixels (above mid-grey) are the ones
    to fill; the same mask for every image."""
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise RequestError(f"mask image {path} does not exist; give a PNG of the images' size, or e.g. box:10")
    try:
        with Image.open(path) as image:
            grey = np.asarray(image.convert("L"))
    except (UnidentifiedImageError, OSError) as exc:
        raise RequestError(f"{path} is not an image ({exc.__class__.__name__}); give a PNG mask") from None
    if grey.shape != tuple(size):
        raise RequestError(
            f"the mask image {path} is {grey.shape[0]}x{grey.shape[1]} but the images are {size[0]}x{size[1]}; "
            "draw the mask at the images' size"
        )
    keep = torch.from_numpy(grey < 128)[None, None]
    return Mask(keep, f"mask {path.name}")


def parse_restoration(
    model: Model,
    operator: Degradation,
    method: Text = None,
    sampler: Text = None,
    steps: Text = None,
    jump_length: int | None = None,
    jump_n_sample: int | None = None,
    sigma: float | None = None,
) -> RestoreOptions:
    """The RestoreOptions asked for, checked now against the model and the degradation (a method it cannot
    run, another method's option, a sampler RePaint does not take): RequestError or CapabilityError."""
    model.require(Capability.RESTORE, "restoration")
    chosen = SamplerOptions(sampler=str(sampler).strip() if _given(sampler) else None, steps=parse_steps(steps))
    options = RestoreOptions(
        method=str(method).strip() if _given(method) else None,
        sampler=None if chosen == SamplerOptions() else chosen,
        jump_length=jump_length,
        jump_n_sample=jump_n_sample,
        sigma=sigma,
    )
    plan = options.resolve(model.restore_methods, operator)
    if plan.method == "ddnm" and plan.sampler is not None:
        model.sampler_plan(plan.sampler)  # type: ignore[attr-defined]  # ddnm runs on a diffusion sampler
    return options
