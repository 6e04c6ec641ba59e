"""Speed: how fast a model samples, and at how many network evaluations. (How fast a run trained is in its
``aediff.runs.TrainingSummary``.)"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from aediff.diffusion.samplers import SamplerOptions
from aediff.evaluation.protocols import model_device, sample_images
from aediff.evaluation.results import SamplingSpeed
from aediff.models import Capability, Condition, Model


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


WARM_UP = 8  # images in the untimed first call


def _first_rows(condition: Condition | None, k: int, n: int) -> Condition | None:
    """The condition of the first k of n images (per-image labels / prompts sliced)."""
    return condition.rows(0, k, n) if condition is not None else None


def sampling_speed(
    model: Model,
    n: int = 64,
    seed: int = 0,
    repeats: int = 3,
    condition: Condition | None = None,
    options: SamplerOptions | None = None,
) -> SamplingSpeed:
    """Time ``sample_images(model, n, seed, condition, options)``.

    One untimed warm-up call of at most ``WARM_UP`` images (it also counts the network evaluations per image,
    which do not depend on the batch), then ``repeats`` timed calls of ``n``.
    Returns images_per_second (median over the repeats), seconds_per_image, nfe (network evaluations per
    image: the rows ``model.sampling_network()`` processed, over n; classifier-free guidance's doubled batch
    counts twice), num_images, repeats, device and the sampler options it ran with.
    """
    device = model_device(model)
    warm_up = min(n, WARM_UP)
    with network_rows(model) as rows:
        sample_images(model, warm_up, seed, _first_rows(condition, warm_up, n), options)
    seconds = []
    for _ in range(repeats):
        _synchronize(device)
        start = time.perf_counter()
        sample_images(model, n, seed, condition, options)
        _synchronize(device)
        seconds.append(time.perf_counter() - start)
    median = statistics.median(seconds)
    return SamplingSpeed(n / median, median / n, rows[0] / warm_up, n, repeats, str(device), _chosen(model, options))


@contextlib.contextmanager
def network_rows(model: Model) -> Iterator[list[int]]:
    """Counts the rows ``model.sampling_network()`` processes inside the block, in the list's one item
    (classifier-free guidance's doubled batch counts twice)."""
    rows = [0]

    def count(module: nn.Module, args: tuple[Any, ...]) -> None:
        rows[0] += len(args[0])

    hook = model.sampling_network().register_forward_pre_hook(count)
    try:
        yield rows
    finally:
        hook.remove()


def _chosen(model: Model, options: SamplerOptions | None) -> dict[str, Any]:
    """The sampler choices the timing ran with: a diffusion model's resolved sampler and steps (its defaults
    filled in), and any option given."""
    if model.can(Capability.DIFFUSION_SAMPLER):
        options = model.sampler_plan(options).options
    return {k: v for k, v in vars(options or SamplerOptions()).items() if v is not None}
