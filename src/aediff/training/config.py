"""The typed recipe of a training run (saved in the run's config.json beside the model and data configs)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Real
from typing import Any, Literal

from aediff.errors import ConfigError
from aediff.modes import MixedPrecision

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


@dataclass
class TrainConfig:
    batch_size: int = 64  # global batch, split evenly over processes
    lr: float = 1e-3  # peak AdamW learning rate
    weight_decay: float = 0.0  # AdamW decoupled weight decay
    adam_betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 100  # linear LR warm-up from 0, in optimizer steps
    lr_schedule: Literal["cosine", "constant"] = "cosine"  # after warm-up, over the run's horizon
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    grad_clip: float = 1.0  # max global gradient norm; 0 = no clipping
    ema_decay: float = 0.999  # EMA of the weights; warm-up: decay_t = min(ema_decay, (1 + t) / (10 + t))
    max_steps: int | None = None  # stop after this many optimizer steps ...
    epochs: float | None = None  # ... or after this many passes over the training split ...
    max_minutes: float | None = None  # ... or after this much wall-clock training time (first one reached)
    seed: int = 0  # model init, data order and every random draw of the loss derive from it
    mixed_precision: MixedPrecision = "no"  # autocast dtype on accelerators
    log_every: int = 25  # steps between logged scalars (progress bar, TensorBoard, log.jsonl)
    checkpoint_every: int = 1000  # steps between checkpoints; one is always written at the end
    preview_every: int = 1000  # steps between TensorBoard image grids; 0 = never
    tensorboard: bool = True  # write TensorBoard scalars and image grids under RUN/tb
    # Fractions of the budget, increasing, in (0, 1): when the run's progress (steps / horizon, or time / time
    # budget) first reaches one, a loadable copy of the model is kept in RUN/snapshots/<percent> (e.g. 25).
    # Writing them counts neither as training time nor against a time budget.
    snapshots: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        self.snapshots = check_snapshots(self.snapshots)
