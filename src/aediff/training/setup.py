"""What a Trainer checks and builds before it trains: the configuration checks, the accelerator (and the
training copy's speed-ups), and the data plan (which images each process reads at each step)."""

from __future__ import annotations

import shutil
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import DistributedType
from torch import nn

from aediff.data.hfstream import ImageStream, StreamPlan
from aediff.data.loader import BatchPlan
from aediff.device import default_device, resolve_mixed_precision
from aediff.errors import ConfigError
from aediff.models import Capability, Model
from aediff.runs.training_config import TrainConfig
from aediff.training import trackers

# Set by `accelerate launch --use_fsdp` / `--use_deepspeed` (or an accelerate config file that chooses them).
SHARDED = {DistributedType.FSDP: "FSDP", DistributedType.DEEPSPEED: "DeepSpeed"}


def check_config(config: TrainConfig, model: Model, held_out: Any) -> None:
    """ConfigError, saying what to set, for a recipe the trainer cannot follow: no budget, evaluations without
    held-out images, a judge for a model that does not sample, a tracker that is not installed."""
    if config.max_steps is None and config.epochs is None and config.max_minutes is None:
        raise ConfigError(
            "say how long to train: set max_steps, epochs or max_minutes (--max-steps, --epochs, --max-time)"
        )
    if config.eval_every and held_out is None:
        raise ConfigError("eval_every needs held-out images: give the trainer the data's test split (held_out=)")
    trackers.check_installed(config.trackers)
    if config.eval_judge and (not config.eval_every or not model.can(Capability.GENERATE)):
        raise ConfigError("eval_judge scores samples at each evaluation: set eval_every, on a model that samples")


def make_accelerator(config: TrainConfig) -> Accelerator:
    """An Accelerator with the recipe's mixed precision, on the default device."""
    # Accelerate keeps its settings in a process-wide singleton; a second run in the same Python
    # process with another precision must start from fresh settings (the process group stays).
    AcceleratorState._reset_state(reset_partial_state=False)
    # Accelerate only forms a multi-process CPU group (gloo) when told it is on the CPU.
    device = default_device()
    precision = resolve_mixed_precision(config.mixed_precision, device)
    return Accelerator(mixed_precision=precision, cpu=device.type == "cpu")


def refuse_sharding(accelerator: Accelerator) -> None:
    """Sharded training is refused up front: the trainer keeps a full-weight EMA beside the model and every
    process's checkpoint code reads full weights, which a sharded model would hand over as shards."""
    engine = SHARDED.get(accelerator.distributed_type)
    if engine:
        raise ConfigError(
            f"{engine} shards the weights, and aediff's trainer keeps a full-weight EMA and full-weight checkpoints: "
            "launch with plain data parallelism instead (`accelerate launch --multi_gpu ...`, or "
            "`distributed_type: MULTI_GPU` in the accelerate config); see docs/scale.md"
        )


def speed_up(model: nn.Module, config: TrainConfig, device: torch.device) -> None:
    """The training copy's memory layout (``channels_last``) and, with ``compile``, each trainable part compiled
    in place (``nn.Module.compile``: the parameter names, hence checkpoints, stay as they are). Called after the
    EMA's copy is made, so that the EMA stays eager."""
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    if not config.compile:
        return
    if device.type == "cpu" and not any(shutil.which(c) for c in ("c++", "g++", "clang++")):
        raise ConfigError("--compile on the CPU needs a C++ compiler (g++ or clang++): install one, or drop --compile")
    for part in model.children():
        if any(p.requires_grad for p in part.parameters()):
            part.compile()


def plan_batches(train_set: Any, config: TrainConfig, world_size: int, rank: int) -> BatchPlan | StreamPlan:
    """Which images process ``rank`` of ``world_size`` reads at each step: a function of the seed and the step
    (``aediff.data.loader``); a stream is read in order. ConfigError when the batch does not split evenly over
    the processes and accumulation parts, or the split holds less than one batch."""
    parts = world_size * config.grad_accumulation
    if config.batch_size % parts:
        raise ConfigError(
            f"batch size {config.batch_size} does not split over {world_size} process(es) x "
            f"{config.grad_accumulation} accumulation part(s); use a multiple of {parts}"
        )
    if isinstance(train_set, ImageStream):  # no positions: batches are read in order (its size may be unknown)
        plan = StreamPlan(train_set.num_examples, config.batch_size, config.seed, world_size, rank)
    else:
        plan = BatchPlan(len(train_set), config.batch_size, config.seed, world_size, rank)
    if plan.steps_per_epoch == 0:
        raise ConfigError(
            f"the training split has {plan.size} images, fewer than one batch of {config.batch_size}; "
            "lower --batch-size"
        )
    return plan
