"""Restoring test images under a known degradation, and how well it went: the PSNR on the missing pixels
(every pixel for super-resolution, where each is only known through its block's mean) of each restoration,
against the trivial fill ``A^+ y`` (holes at mid-grey, a low-resolution image upsampled by copying).

The classical controls every learned method must beat (``CLASSICAL``, ``classical_restore``): for a mask,
mean fill (each hole at the mean of the image's known pixels) and biharmonic inpainting (scikit-image's
``inpaint_biharmonic``); for super-resolution, nearest (``A^+ y``) and bicubic upsampling. Each ends with the
degradation's projection, as the learned methods do."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from aediff.diffusion.degradations import Degradation, degradation_from_spec, spec_kind
from aediff.diffusion.restoration import RestoreOptions, RestorePlan, repaint_evaluations
from aediff.errors import ConfigError
from aediff.evaluation.results import ImageScores, RestorationRow
from aediff.metrics import extract_features, frechet_distance, region_psnr, ssim
from aediff.models import Condition, Model


@dataclass
class Restorations:
    """originals, degraded (``A^+ y``, to show) [N, C, H, W]; restored [samples, N, C, H, W]; psnr [samples, N]
    on the missing pixels, psnr_degraded [N] of the trivial fill there; all in [-1, 1] / dB."""

    method: str
    degradation: str
    originals: torch.Tensor
    degraded: torch.Tensor
    restored: torch.Tensor
    psnr: np.ndarray
    psnr_degraded: np.ndarray
    seconds_per_image: float

    def grid(self) -> torch.Tensor:
        """Rows of the figure: originals, degraded, then one row per sample of restorations."""
        return torch.cat([self.originals, self.degraded, *self.restored]).cpu()

    def summary(self) -> dict[str, Any]:
        """What `aediff restore` prints: the PSNRs (mean over images, and each image's mean over samples)."""
        finite = np.where(np.isfinite(self.psnr), self.psnr, 100.0)  # a perfect fill: cap, as docs/metrics says
        out = {
            "method": self.method,
            "degradation": self.degradation,
            "images": int(self.psnr.shape[1]),
            "samples_per_image": int(self.psnr.shape[0]),
            "psnr_missing_db": float(finite.mean()),
            "psnr_missing_per_image_db": [round(float(v), 3) for v in finite.mean(0)],
            "psnr_trivial_fill_db": float(np.minimum(self.psnr_degraded, 100.0).mean()),
            "seconds_per_image": self.seconds_per_image,
        }
        if self.psnr.shape[0] > 1:  # the spread of a stochastic method over its samples
            out["psnr_missing_spread_db"] = float(finite.std(0, ddof=1).mean())
        return out


@torch.no_grad()
def restore_images(
    model: Model,
    dataset: Any,
    operator: Degradation,
    options: RestoreOptions | None,
    condition: Condition | None,
    n: int,
    samples: int = 1,
    seed: int = 0,
) -> Restorations:
    """Degrade the first n images of ``dataset`` with ``operator``, restore each ``samples`` times (seeds
    seed, seed + 1, ...), and score every restoration on the pixels the degradation lost."""
    x = dataset.batch(torch.arange(n))["images"].to(model.device)
    y = operator.forward(x)
    missing = operator.missing(x)
    started = time.perf_counter()
    restored = torch.stack(
        [
            model.restore(
                y, operator, options, condition, generator=torch.Generator(model.device).manual_seed(seed + i)
            )
            for i in range(samples)
        ]
    )
    seconds = (time.perf_counter() - started) / (n * samples)
    psnr = torch.stack([region_psnr(r, x, missing) for r in restored]).cpu().numpy()
    filled = operator.pseudo_inverse(y)
    method = (options or RestoreOptions()).resolve(model.restore_methods, operator).method
    return Restorations(
        method, operator.describe(), x.cpu(), filled.clamp(-1, 1).cpu(), restored.cpu(), psnr,
        region_psnr(filled, x, missing).cpu().numpy(), seconds,
    )  # fmt: skip


def _mean_fill(y: torch.Tensor, operator: Degradation) -> torch.Tensor:
    known = ~operator.missing(y)
    counts = known.flatten(1).sum(1).clamp_min(1)[:, None, None, None]
    means = (y * known).sum((2, 3), keepdim=True) / counts
    return torch.where(known, y, means.expand_as(y))


def _biharmonic(y: torch.Tensor, operator: Degradation) -> torch.Tensor:
    from skimage.restoration import inpaint_biharmonic

    holes = operator.missing(y)[:, 0].cpu().numpy()
    images = y.permute(0, 2, 3, 1).cpu().double().numpy()
    filled = [inpaint_biharmonic(image, hole, channel_axis=-1) for image, hole in zip(images, holes, strict=True)]
    return torch.from_numpy(np.stack(filled)).permute(0, 3, 1, 2).to(y.device, y.dtype)


def _nearest(y: torch.Tensor, operator: Degradation) -> torch.Tensor:
    return operator.pseudo_inverse(y)


def _bicubic(y: torch.Tensor, operator: Degradation) -> torch.Tensor:
    return F.interpolate(y, scale_factor=operator.factor, mode="bicubic", align_corners=False)  # type: ignore[attr-defined]


# name -> (the kind of degradation it restores, y -> the restoration before projection)
CLASSICAL = {
    "mean fill": ("mask", _mean_fill),
    "biharmonic": ("mask", _biharmonic),
    "nearest": ("downsample", _nearest),
    "bicubic": ("downsample", _bicubic),
}


def classical_controls(operator: Degradation) -> list[str]:
    """The classical controls that apply to ``operator``: mean fill and biharmonic for a mask, nearest and
    bicubic for super-resolution; none for colourisation."""
    return [name for name, (kind, _) in CLASSICAL.items() if kind == operator.kind]


@torch.no_grad()
def classical_restore(name: str, y: torch.Tensor, operator: Degradation) -> torch.Tensor:
    """The control ``name`` (one of ``classical_controls(operator)``) on the measurement y: [N, C, H, W]."""
    if name not in classical_controls(operator):
        raise ConfigError(
            f"{name!r} is not a control for {operator.describe()}; use {', '.join(classical_controls(operator))}"
        )
    return operator.project(CLASSICAL[name][1](y, operator), y).clamp(-1, 1)


# --- the protocol: every method and control on the same degraded images ----------------------------------------


def network_evaluations(model: Model, plan: RestorePlan) -> int:
    """Network evaluations per restored image of ``plan`` on ``model`` (without guidance's doubling)."""
    if plan.method == "one-pass":
        return 1
    sampling = model.sampler_plan(plan.sampler)  # ddnm and repaint run on a diffusion model's sampler plan
    if plan.method == "repaint":
        return repaint_evaluations(sampling.steps, plan.jump_length, plan.jump_n_sample)
    return sampling.evaluations


def restoration_scores(restored: torch.Tensor, truth: torch.Tensor, missing: torch.Tensor) -> ImageScores:
    """Per-image MSE and PSNR on the missing pixels (a perfect fill capped at 100 dB) and SSIM of the whole
    images ([0, 1] convention): [N] each."""
    psnr = region_psnr(restored, truth, missing).clamp(max=100.0)
    mse = 4.0 / 10 ** (psnr / 10)  # from the capped PSNR, range 2: the region's mean squared error
    unit = lambda x: ((x + 1) / 2).clamp(0, 1)  # noqa: E731
    window = min(11, *truth.shape[2:]) // 2 * 2 + 1  # odd, no larger than the image
    similarity = ssim(unit(restored), unit(truth), window_size=window)
    return ImageScores(*(v.double().cpu().numpy() for v in (mse, psnr, similarity)))


def restoration_row(
    x: torch.Tensor,
    operator: Degradation,
    method: str,
    restore: Any,
    evaluations: int,
    model: str = "",
    composite_fid: Callable[[torch.Tensor], dict[str, float]] | None = None,
) -> RestorationRow:
    """Run ``restore`` (y -> restored images) on ``operator.forward(x)``, time it and score it; with
    ``composite_fid`` (restored images -> {judge: FID}), the FIDs of the restorations too."""
    y = operator.forward(x)
    started = time.perf_counter()
    restored = restore(y)
    seconds = (time.perf_counter() - started) / len(x)
    missing = operator.missing(x)
    scores = restoration_scores(restored.to(x.device), x, missing)
    return RestorationRow(
        operator.describe(), operator.kind, method, float(missing.float().mean()),
        *_mean_se(scores.psnr), *_mean_se(scores.ssim), evaluations, seconds, len(x), model,
        composite_fid(restored.cpu()) if composite_fid is not None else {}, scores,
        missing.flatten(1).float().mean(1).double().cpu().numpy(), restored[:8].cpu(),
        operator.pseudo_inverse(y)[:8].clamp(-1, 1).cpu(),
    )  # fmt: skip


def _mean_se(values: np.ndarray) -> tuple[float, float]:
    return float(values.mean()), float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else 0.0


def _operator(spec: str, x: torch.Tensor, seed: int) -> Degradation:
    """The degradation ``spec`` of images like x, its masks drawn from ``seed``: the same for every method."""
    return degradation_from_spec(spec, len(x), tuple(x.shape[2:]), torch.Generator().manual_seed(seed))


def restoration_rows(
    model: Model,
    x: torch.Tensor,
    specs: list[str],
    methods: list[RestoreOptions],
    seed: int = 0,
    name: str = "",
    composite_fid: Callable[[torch.Tensor], dict[str, float]] | None = None,
) -> list[RestorationRow]:
    """Each of ``methods`` on each degradation of ``specs`` (``degradation_from_spec``: masks drawn from
    ``seed``, the same for every method and control) of the images x [N, C, H, W]; the restorations are seeded
    with ``seed`` too. A method that cannot run a degradation (RePaint on super-resolution) is left out of it.
    ``name``: the model's name in the rows; ``composite_fid``: as ``restoration_row``."""
    rows = []
    for spec in specs:
        operator = _operator(spec, x, seed)
        for options in methods:
            if not runs_on(options, model, operator):
                continue
            plan = options.resolve(model.restore_methods, operator)
            generator = torch.Generator(model.device).manual_seed(seed)
            run = lambda y, a=operator, o=options, g=generator: model.restore(y, a, o, generator=g)  # noqa: E731
            evaluations = network_evaluations(model, plan)
            rows.append(restoration_row(x, operator, plan.method, run, evaluations, name, composite_fid))
    return rows


def runs_on(options: RestoreOptions, model: Model, operator: Degradation) -> bool:
    """Whether ``options`` can restore ``operator`` on ``model`` (RePaint fills masks only)."""
    try:
        options.resolve(model.restore_methods, operator)
    except ConfigError:
        return False
    return True


def control_rows(
    x: torch.Tensor,
    specs: list[str],
    seed: int = 0,
    composite_fid: Callable[[torch.Tensor], dict[str, float]] | None = None,
) -> list[RestorationRow]:
    """The classical controls of each degradation of ``specs``, on the same images and masks."""
    rows = []
    for spec in specs:
        operator = _operator(spec, x, seed)
        for name in classical_controls(operator):
            run = lambda y, n=name, a=operator: classical_restore(n, y, a)  # noqa: E731
            rows.append(restoration_row(x, operator, name, run, 0, composite_fid=composite_fid))
    return rows


ONE_PASS_SIGMAS = (0.25, 0.5, 1.0, 2.0)  # the noise levels a diffusion model's one pass is tried at


def choose_one_pass_sigma(
    model: Model, validation: torch.Tensor, specs: list[str], sigmas=ONE_PASS_SIGMAS, seed: int = 0
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """A diffusion model's one-pass noise level per degradation kind: the sigma of ``sigmas`` with the best
    mean PSNR on the missing pixels of the ``validation`` images (carved from the training split, never the
    test images) over the degradations of ``specs`` of that kind. Returns ({kind: sigma}, {kind: {sigma: dB}},
    every level tried)."""
    tried: dict[str, dict[str, float]] = {}
    for kind in dict.fromkeys(spec_kind(spec) for spec in specs):
        mine = [spec for spec in specs if spec_kind(spec) == kind]
        for sigma in sigmas:
            rows = restoration_rows(model, validation, mine, [RestoreOptions(method="one-pass", sigma=sigma)], seed)
            tried.setdefault(kind, {})[f"{sigma:g}"] = float(np.mean([row.psnr for row in rows]))
    best = {kind: float(max(by, key=lambda s: by[s])) for kind, by in tried.items()}
    return best, tried


def composite_fid(judges: list[Any], reference: Any) -> Callable[[torch.Tensor], dict[str, float]]:
    """restored images -> {judge name: FID against ``reference`` in the judge's features} (``Judge``s of
    ``aediff.evaluation.judges``; a value, no bootstrap), for ``restoration_rows``' ``composite_fid``."""

    def fid(images: torch.Tensor) -> dict[str, float]:
        return {
            j.name: frechet_distance(extract_features(j.features, images), j.reference_features(reference))
            for j in judges
        }

    return fid
