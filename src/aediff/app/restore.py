"""The Restore tab's function: an image, a degradation (a mask of a chosen kind, a drawn mask, or
downsampling), and every loaded model that can restore (Capability.RESTORE) filling it side by side, with the
classical controls of that degradation; the PSNR on the missing pixels and the SSIM against the image, which
the page knows because it made the degradation itself; and, for the first diffusion model, the trajectory of
its predicted x0 while it restores.

Like ``aediff.app.handlers``, nothing here imports Gradio; each model is asked what it can do with
``model.can``, never by family name.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from aediff.app.handlers import Catalog
from aediff.app.limits import (
    MAX_SEED,
    MAX_STEPS,
    InputError,
    channel_note,
    check_whole,
    image_to_tensor,
    tensor_to_image,
)
from aediff.diffusion.degradations import Degradation, Mask
from aediff.errors import ConfigError
from aediff.evaluation.restoration import classical_controls, classical_restore
from aediff.metrics import region_psnr, ssim
from aediff.models import Capability, Model
from aediff.requests import parse_degradation, parse_restoration

DEGRADATIONS = ("box", "random", "half", "lines", "upscale", "drawn mask")
DEFAULT_METHOD = "(each model's default)"
METHODS = (DEFAULT_METHOD, "ddnm", "repaint", "one-pass")
STRIP_FRAMES = 10  # predicted x0 frames in the diffusion trajectory strip


@dataclass
class RestoreRequest:
    """What the Restore tab asks: the degradation (``kind`` of DEGRADATIONS and its ``value``: a box's side,
    a share of pixels, a number of lines, an upscale factor; nothing for half and a drawn mask), the diffusion
    models' method (METHODS), steps and one-pass sigma, and the seed of masks and noise."""

    kind: str = "box"
    value: Any = 10
    method: str = DEFAULT_METHOD
    steps: Any = 20
    sigma: Any = 0.5
    seed: Any = 0


@dataclass
class RestoreResult:
    images: list[tuple[Image.Image, str]]  # (image, caption): the original and degraded input first
    table: list[list[Any]]  # [who, method, seconds, PSNR on the missing pixels (dB), SSIM]
    trajectory: Image.Image | None  # the first diffusion model's predicted x0 along its steps
    text: str


def page_degradation(request: RestoreRequest, drawn: Image.Image | None, shape: tuple[int, int, int]) -> Degradation:
    """The degradation ``request`` names, for one image of ``shape`` (C, H, W); a drawn mask is scaled to the
    image (its light strokes are the pixels to fill). InputError / ConfigError naming the fix."""
    if request.kind not in DEGRADATIONS:
        raise InputError(f"the degradation must be one of {', '.join(DEGRADATIONS)}, got {request.kind!r}")
    seed = check_whole(request.seed, "seed", 0, MAX_SEED)
    if request.kind == "drawn mask":
        if drawn is None:
            raise InputError("draw the hole on the mask canvas first (light strokes are the pixels to fill)")
        operator: Degradation = drawn_mask(drawn, shape[1:])
        operator.check((1, *shape))
        return operator
    if request.kind == "upscale":
        return parse_degradation(None, str(request.value), 1, shape, seed)
    spec = request.kind if request.kind == "half" else f"{request.kind}:{request.value}"
    return parse_degradation(spec, None, 1, shape, seed)


def drawn_mask(drawing: Image.Image, size: tuple[int, int]) -> Mask:
    """A mask drawn on the page's canvas -> the Mask of ``size`` (H, W): pixels under light strokes are filled."""
    grey = drawing.convert("L").resize((size[1], size[0]), Image.Resampling.BOX)
    keep = torch.from_numpy(np.asarray(grey) < 128)[None, None]
    return Mask(keep, "drawn mask")


def _options(model: Model, operator: Degradation, request: RestoreRequest):
    """The request's method for a model that offers it; else the model's own default (an autoencoder's one
    pass), with no option it would refuse. Returns (options, the method run)."""
    method = request.method if request.method in model.restore_methods else model.restore_methods[0]
    steps = request.steps if method in ("ddnm", "repaint") else None
    # a diffusion model's one pass reads A^+ y at a noise level; an autoencoder's takes none
    sigma = float(request.sigma) if method == "one-pass" and model.can(Capability.DIFFUSION_SAMPLER) else None
    return parse_restoration(model, operator, method, None, steps, sigma=sigma), method


def check_request(request: RestoreRequest) -> None:
    """InputError for a choice no model could run: an unknown method, steps, seed or sigma out of range."""
    if request.method not in METHODS:
        raise InputError(f"the method must be one of {', '.join(METHODS)}, got {request.method!r}")
    check_whole(request.steps, "steps", 1, MAX_STEPS)
    check_whole(request.seed, "seed", 0, MAX_SEED)
    sigma = request.sigma
    if isinstance(sigma, bool) or not (isinstance(sigma, int | float) and 0 < sigma <= 80):
        raise InputError(f"the one-pass noise level must be in (0, 80], got {sigma!r}; e.g. 0.5")


def _scores(restored: torch.Tensor, clean: torch.Tensor, operator: Degradation) -> tuple[float | str, float]:
    psnr = float(region_psnr(restored, clean, operator.missing(clean))[0])
    similarity = float(ssim((restored + 1) / 2, (clean + 1) / 2, window_size=min(11, *clean.shape[2:]) // 2 * 2 + 1)[0])
    return (round(psnr, 2) if math.isfinite(psnr) else "inf (exact)"), round(similarity, 3)


def restore_all(catalog: Catalog, image: Image.Image, request: RestoreRequest, drawn: Image.Image | None = None):
    """Degrade ``image`` as ``request`` says and restore it with every loaded model that can, beside the
    classical controls (once per image size): a ``RestoreResult``."""
    check_request(request)
    names = catalog.names(Capability.RESTORE)
    if not names:
        raise InputError("no loaded run can restore; start the server with an AE, VAE, DAE or pixel diffusion run")
    images: list[tuple[Image.Image, str]] = []
    table: list[list[Any]] = []
    trajectory, skipped, shapes = None, [], set()
    for name in names:
        model = catalog.runs[name].model
        clean = image_to_tensor(image, model.image_shape).to(model.device)
        operator = page_degradation(request, drawn, model.image_shape)
        y = operator.forward(clean)
        if model.image_shape not in shapes:  # the input and the controls, once per image size
            shapes.add(model.image_shape)
            images += [(tensor_to_image(clean), "original"), (tensor_to_image(operator.pseudo_inverse(y).clamp(-1, 1)),
                       f"degraded ({operator.describe()})")]  # fmt: skip
            for control in classical_controls(operator):
                out = classical_restore(control, y, operator)
                images.append((tensor_to_image(out), f"{control} (classical control)"))
                table.append([control, "classical control", 0.0, *_scores(out, clean, operator)])
        try:
            options, method = _options(model, operator, request)
        except ConfigError as exc:  # e.g. RePaint asked for super-resolution: say so, run the others
            skipped.append(f"{name}: {exc}")
            continue
        frames: list[torch.Tensor] = []
        keep = (lambda state, kept=frames: kept.append(state["denoised"][0].cpu())) if trajectory is None else None
        generator = torch.Generator(model.device).manual_seed(check_whole(request.seed, "seed", 0, MAX_SEED))
        started = time.perf_counter()
        with torch.no_grad():
            out = model.restore(y, operator, options, generator=generator, callback=keep)
        seconds = round(time.perf_counter() - started, 2)
        psnr, similarity = _scores(out, clean, operator)
        images.append((tensor_to_image(out), f"{name} ({method}): PSNR on the hole {psnr} dB"))
        table.append([name, method, seconds, psnr, similarity])
        if frames:
            picks = np.unique(np.linspace(0, len(frames) - 1, min(STRIP_FRAMES, len(frames))).round().astype(int))
            strip = torch.stack([frames[k] for k in picks] + [out[0].cpu()]).clamp(-1, 1)
            trajectory = tensor_to_image(strip, nrow=len(strip), side=96)
    text = (
        f"{len(table)} restorations of the image you gave, degraded here, so the PSNR is on exactly the pixels "
        "the degradation lost (known pixels are kept by every method)."
    )
    if trajectory is not None:
        text += " Trajectory: the first diffusion model's predicted image at each step, high noise to low."
    if skipped:
        text += " Not run: " + "; ".join(skipped) + "."
    note = channel_note(image, {name: catalog.runs[name].model.image_shape[0] for name in names})
    text += f" {note}" if note else ""
    return RestoreResult(images, table, trajectory, text)
