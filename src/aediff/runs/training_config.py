"""The typed recipe of a training run (saved in the run's config.json beside the model and data configs)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Real
from typing import Any, Literal

from aediff.config import bounded, bounded_items, check_ranges
from aediff.errors import ConfigError
from aediff.modes import MixedPrecision, TrackerName

SNAPSHOT_EXAMPLE = "e.g. 0.25,0.5 for snapshots at 25% and 50% of the budget"


def snapshot_label(fraction: float) -> str:
    """The folder name of the snapshot at ``fraction`` (in (0, 1)) of the budget: its percent, "25" for 0.25."""
    return f"{fraction * 100:g}"


def check_snapshots(values: Any, what: str = "snapshots") -> tuple[float, ...]:
    """``values`` as snapshot fractions: numbers strictly between 0 and 1, increasing, each with its own
    folder name. ``what`` names them in the error (a ConfigError that says what to write instead)."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise ConfigError(
            f"{what} must be a list of fractions of the training budget, {SNAPSHOT_EXAMPLE}; got {values!r}"
        )
    if not all(isinstance(v, Real) and not isinstance(v, bool) for v in values):
        raise ConfigError(f"{what} must be numbers, {SNAPSHOT_EXAMPLE}; got {values!r}")
    fractions = tuple(float(v) for v in values)
    shown = ",".join(f"{v:g}" for v in fractions)
    if not all(0 < v < 1 for v in fractions):  # also refuses NaN
        raise ConfigError(
            f"{what} must lie strictly between 0 and 1 (fractions of the training budget; the end of the run is "
            f"the run itself), {SNAPSHOT_EXAMPLE}; got {shown}"
        )
    if any(a >= b for a, b in zip(fractions, fractions[1:], strict=False)):
        raise ConfigError(f"{what} must be increasing and without repeats, {SNAPSHOT_EXAMPLE}; got {shown}")
    for a, b in zip(fractions, fractions[1:], strict=False):
        if snapshot_label(a) == snapshot_label(b):  # labels round to 6 digits, in order: equal ones are neighbours
            raise ConfigError(
                f"{what} {a!r} and {b!r} are too close: both would be snapshots/{snapshot_label(a)}; drop one"
            )
    return fractions


# Seeds feed torch.manual_seed and numpy's generators, which take non-negative 64-bit ints.
MAX_SEED = 2**63 - 1


@dataclass
class TrainConfig:
    """The training recipe; every numeric field declares its range (``aediff.config.bounded``), checked when the
    config is built. ``warmup_steps`` may exceed the run's length: the LR then never reaches its peak, which is
    what a short smoke run (``--max-steps 2``) with the default warm-up does."""

    batch_size: int = bounded(64, 1)  # global batch, split evenly over processes
    # each process's share of the batch is computed in this many parts, one after the other (less memory, same step)
    grad_accumulation: int = bounded(1, 1, 4096)
    lr: float = bounded(1e-3, 0, low_open=True)  # peak AdamW learning rate, > 0
    weight_decay: float = bounded(0.0, 0)  # AdamW decoupled weight decay, >= 0
    adam_betas: tuple[float, float] = bounded_items((0.9, 0.999), 0, 1, high_open=True, min_items=2, max_items=2)
    warmup_steps: int = bounded(100, 0)  # linear LR warm-up from 0, in optimizer steps; 0 = none
    lr_schedule: Literal["cosine", "constant"] = "cosine"  # after warm-up, over the run's horizon
    min_lr_ratio: float = bounded(0.1, 0, 1)  # cosine decays to lr * min_lr_ratio
    grad_clip: float = bounded(1.0, 0)  # max global gradient norm; 0 = no clipping
    ema_decay: float = bounded(0.999, 0, 1)  # EMA of the weights; warm-up: decay_t = min(ema_decay, (1 + t) / (10 + t))
    max_steps: int | None = bounded(None, 1)  # stop after this many optimizer steps ...
    epochs: float | None = bounded(None, 0, low_open=True)  # ... or after this many passes over the training split ...
    max_minutes: float | None = bounded(None, 0, low_open=True)  # ... or after this much wall-clock training time
    seed: int = bounded(0, 0, MAX_SEED)  # model init, data order and every random draw of the loss derive from it
    # autocast: "auto" = bf16 where the CPU (AVX512-BF16, AMX) or GPU computes it natively, else fp32 ("no");
    # measured on mnist5k: 1.7x the steps in the same minutes, FID 2.30 against 4.68 (benchmarks/results/peers.md)
    mixed_precision: MixedPrecision = "auto"
    # torch.compile the training copy's networks (the EMA, which samples and is saved, stays eager); off by default:
    # its warm-up and a C++ compiler on the CPU cost more than it gains in a short run (benchmarks/train_speed.py)
    compile: bool = False
    channels_last: bool = False  # convolutions in NHWC memory layout (the training copy and its batches)
    log_every: int = bounded(25, 1)  # steps between logged scalars (progress bar, TensorBoard, log.jsonl)
    checkpoint_every: int = bounded(1000, 1)  # steps between checkpoints; one is always written at the end
    # also keep the last N checkpoints in RUN/checkpoints/step-N; 0 = none
    keep_checkpoints: int = bounded(0, 0, 10_000)
    # steps between evaluations of the EMA weights' loss on held-out images (logged; the lowest kept in RUN/best)
    eval_every: int = bounded(0, 0)  # 0 = never
    eval_images: int = bounded(256, 1)  # held-out images per evaluation, spread evenly over the held-out split
    eval_judge: str | None = None  # a classifier run folder: each evaluation also logs the samples' FID in its features
    eval_samples: int = bounded(500, 2)  # samples per FID evaluation (the default sampler, the same seed each time)
    preview_every: int = bounded(1000, 0)  # steps between TensorBoard image grids; 0 = never
    tensorboard: bool = True  # write TensorBoard scalars and image grids under RUN/tb
    trackers: tuple[TrackerName, ...] = ()  # more experiment trackers through Accelerate: wandb, mlflow
    # Fractions of the budget, increasing, in (0, 1): when the run's progress (steps / horizon, or time / time
    # budget) first reaches one, a loadable copy of the model is kept in RUN/snapshots/<percent> (e.g. 25).
    # Writing them counts neither as training time nor against a time budget.
    snapshots: tuple[float, ...] = bounded_items((), 0, 1, low_open=True, high_open=True, min_items=0)

    def __post_init__(self) -> None:
        self.snapshots = check_snapshots(self.snapshots, "training.snapshots")  # its own messages: order, labels
        check_ranges(self, "training")
