"""The typed recipe of a training run (saved in the run's config.json beside the model and data configs)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from aediff.modes import MixedPrecision


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
