"""The batches a training run sees, step by step: which examples (``BatchPlan``), their augmentation, and a
prefetching stream of them (``step_batches``) that worker processes can decode ahead of the training step.

Everything a batch depends on is a function of (run seed, step, process): the examples of step s are batch
s mod steps_per_epoch of epoch e's permutation, seeded by (seed, e); the label-caption templates and the
augmentation of step s are drawn from a generator seeded by (seed, s, process). So a resumed run sees the
same batches as an uninterrupted one, and a dataset read from disk gives the same batches as the same
dataset held in memory.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F


def step_seed(seed: int, step: int, rank: int) -> int:
    """A distinct, reproducible RNG seed for each (run seed, step, process)."""
    return (seed * 1_000_003 + step * 7_919 + rank * 104_729) % (2**63 - 1)


ORDER_SALT = 10_007  # the epoch permutation's seed is step_seed(seed, epoch, ORDER_SALT)
DRAW_SALT = 20_011  # the batch generator's seed is step_seed(seed, step, DRAW_SALT + rank)


def step_generator(seed: int, step: int, rank: int) -> torch.Generator:
    """The generator of ``step``'s random draws in the data (caption templates, augmentation) on process ``rank``."""
    return torch.Generator().manual_seed(step_seed(seed, step, DRAW_SALT + rank))


@functools.lru_cache(maxsize=2)  # one permutation per epoch, not per step: a 10M-image set takes 0.1 s to permute
def epoch_order(size: int, seed: int, epoch: int) -> torch.Tensor:
    """The order of the ``size`` examples in ``epoch``: a permutation seeded by (seed, epoch)."""
    return torch.randperm(size, generator=torch.Generator().manual_seed(step_seed(seed, epoch, ORDER_SALT)))


@dataclass(frozen=True)
class BatchPlan:
    """Which examples each optimizer step trains on. ``size``: examples in the training split;
    ``batch_size``: the global batch, split evenly over ``world_size`` processes (this one is ``rank``)."""

    size: int
    batch_size: int
    seed: int
    world_size: int = 1
    rank: int = 0

    @property
    def steps_per_epoch(self) -> int:
        return self.size // self.batch_size

    def indices(self, step: int) -> torch.Tensor:
        """int64 [batch_size / world_size]: this process's examples at ``step``."""
        epoch, position = divmod(step, self.steps_per_epoch)
        order = epoch_order(self.size, self.seed, epoch)
        start = position * self.batch_size
        local = self.batch_size // self.world_size
        return order[start + self.rank * local : start + (self.rank + 1) * local]

    def generator(self, step: int) -> torch.Generator:
        """The generator of ``step``'s random draws in the data (caption templates, augmentation)."""
        return step_generator(self.seed, step, self.rank)


@dataclass(frozen=True)
class Augmentation:
    """Random, label-preserving changes to training images, off by default (digits must not be mirrored).

    flip: mirror left-right with probability 1/2. crop: keep a random window of this fraction of each side
    (1 = none), resized back to the full size (bilinear)."""

    flip: bool = False
    crop: float = 1.0

    @property
    def active(self) -> bool:
        return self.flip or self.crop < 1.0

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """images [B, C, H, W] in [-1, 1] -> the same shape, each image changed by its own draws."""
        b, _, h, w = images.shape
        flips = torch.rand(b, generator=generator) < 0.5
        if self.crop < 1.0:
            ch, cw = max(1, round(self.crop * h)), max(1, round(self.crop * w))
            tops = torch.randint(0, h - ch + 1, (b,), generator=generator).tolist()
            lefts = torch.randint(0, w - cw + 1, (b,), generator=generator).tolist()
            windows = [
                images[i : i + 1, :, t : t + ch, l : l + cw] for i, (t, l) in enumerate(zip(tops, lefts, strict=True))
            ]
            images = F.interpolate(torch.cat(windows), size=(h, w), mode="bilinear", align_corners=False)
        if self.flip:
            images = torch.where(flips[:, None, None, None], images.flip(-1), images)
        return images


class StepBatches(torch.utils.data.Dataset):
    """``batch(step)``: the training batch of ``step`` (a dataset's ``batch`` dict, augmented). As a DataLoader
    dataset it is fetched by steps: ``__getitems__([step])``."""

    def __init__(self, dataset: Any, plan: BatchPlan, augmentation: Augmentation = Augmentation()):
        self.dataset, self.plan, self.augmentation = dataset, plan, augmentation

    def batch(self, step: int) -> dict[str, Any]:
        generator = self.plan.generator(step)
        out = self.dataset.batch(self.plan.indices(step), generator=generator)
        if self.augmentation.active:
            out["images"] = self.augmentation(out["images"], generator)
        return out

    def __getitems__(self, steps: list[int]) -> dict[str, Any]:
        (step,) = steps
        return self.batch(step)

    def __len__(self) -> int:  # DataLoader asks; the stream itself is endless
        return 2**62


class _Steps(torch.utils.data.Sampler):
    """[start], [start + 1], ...: one step per fetch, without end."""

    def __init__(self, start: int):
        self.start = start

    def __iter__(self) -> Iterator[list[int]]:
        return ([step] for step in itertools.count(self.start))


def _passthrough(batch: dict[str, Any]) -> dict[str, Any]:
    return batch


def step_batches(source: StepBatches, start: int, workers: int) -> Iterator[dict[str, Any]]:
    """The batches of steps start, start + 1, ... without end. ``workers`` > 0: that many processes build
    them ahead (decoding, augmenting); 0: each is built when asked for. Close the iterator to stop the workers."""
    if workers == 0:
        for step in itertools.count(start):
            yield source.batch(step)
        return
    loader = torch.utils.data.DataLoader(
        source, batch_sampler=_Steps(start), num_workers=workers, collate_fn=_passthrough, prefetch_factor=4
    )
    yield from loader
