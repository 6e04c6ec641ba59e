"""One trainer for every model family, over Hugging Face Accelerate.

The trainer knows no family by name. A model is an ``aediff.models.Model``: ``forward(batch)`` returns
``(loss, logs)``, ``preview(batch)`` gives image grids and ``after_training(batches)`` runs once at the
end (an AE fits its latent Gaussian there).

Determinism, which makes ``--resume`` exact and multi-process runs equal to single-process ones:
- data order: epoch e is a permutation drawn from ``seed`` and e; global step s takes the s-th slice of
  ``batch_size`` indices, and process r of W takes the r-th of W equal parts of that slice;
- randomness inside the loss (VAE noise, DAE corruption): the global torch RNG is re-seeded at every
  step from (seed, step, process), so the RNG state to restore is the step itself;
- the learning rate is a function of progress (step / horizon, or elapsed / time budget).

Faults never cost the last good checkpoint: the weights (model and EMA) are checked before every checkpoint
and snapshot, so a step that made them NaN never overwrites it; a write that fails (a full disk) is one line
naming the space it needed and the checkpoint kept; the first Ctrl-C or SIGTERM finishes the step and saves,
a second one aborts (once a checkpoint write under way is done). A run that crashed before its first
checkpoint resumes from step 0.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import shutil
import signal
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from copy import deepcopy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import DistributedType
from torch import nn
from tqdm.auto import tqdm

from aediff import runs
from aediff.config import config_to_dict
from aediff.data import DataConfig
from aediff.data.hfstream import ImageStream, StreamBatches, StreamPlan, stream_batches
from aediff.data.loader import Augmentation, BatchPlan, StepBatches, step_batches, step_seed
from aediff.device import default_device, resolve_mixed_precision
from aediff.errors import ConfigError, RunError
from aediff.models import Capability, Model
from aediff.runs.training_config import TrainConfig
from aediff.training import keeping, trackers

# DDP on CPU warns that 1x1-conv gradients have other strides than its buckets: harmless, and noisy.
warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")


def lr_factor(config: TrainConfig, step: int, progress: float) -> float:
    """Multiplier of the peak LR: linear warm-up over ``warmup_steps``, then cosine (or constant).

    progress: fraction of the run done, in [0, 1] (by steps or by wall-clock time).
    """
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    if config.lr_schedule == "constant":
        return 1.0
    cosine = 0.5 * (1 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))
    return config.min_lr_ratio + (1 - config.min_lr_ratio) * cosine


BEST_FIT_IMAGES = 10_000  # training images RUN/best's after_training hook sees (the final model sees them all)


def split_batch(batch: dict[str, Any], parts: int) -> list[dict[str, Any]]:
    """A batch dict cut into ``parts`` equal consecutive parts (tensors and lists alike)."""
    size = len(batch["images"]) // parts
    return [{k: v[i * size : (i + 1) * size] for k, v in batch.items()} for i in range(parts)]


class EMA:
    """Exponential moving average of a model's weights (Polyak averaging), with warm-up.

    decay at step t = min(decay, (1 + t) / (10 + t)): early averages forget the random init quickly.
    """

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.model = deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        decay = min(self.decay, (1 + step) / (10 + step))
        for ema_p, p in zip(self.model.parameters(), model.parameters(), strict=True):
            ema_p.lerp_(p.detach(), 1 - decay)
        for ema_b, b in zip(self.model.buffers(), model.buffers(), strict=True):
            ema_b.copy_(b)


CHECKPOINT_FILES = (runs.MODEL_FILE, runs.EMA_FILE, runs.OPTIMIZER_FILE, runs.STATE_FILE)


# Set by `accelerate launch --use_fsdp` / `--use_deepspeed` (or an accelerate config file that chooses them).
SHARDED = {DistributedType.FSDP: "FSDP", DistributedType.DEEPSPEED: "DeepSpeed"}


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


def checkpoint_exists(run_dir: str | Path) -> bool:
    """Whether the run folder holds any part of a checkpoint (a run that crashed before its first one has
    only config.json: it is resumed from step 0)."""
    return any((Path(run_dir) / name).exists() for name in CHECKPOINT_FILES)


class TrainingAborted(KeyboardInterrupt):
    """A second Ctrl-C (or SIGTERM) while the first one's checkpoint was pending: training stops at once.

    A KeyboardInterrupt, so that code which handles Ctrl-C handles it; ``exit_code`` is 128 + the signal
    number (130 for SIGINT, 143 for SIGTERM) and ``str()`` is the line to show."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum


def filesystem_of(path: Path) -> str:
    """The device (e.g. /dev/sda1) of the file system that holds ``path``, for messages; the mount point or
    the path itself where /proc/self/mounts cannot tell."""
    target = os.path.realpath(path)
    best, device = "", str(path)
    try:
        lines = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return device
    for line in lines:
        fields = line.split()
        if len(fields) < 2:
            continue
        mount = fields[1].replace("\\040", " ")
        inside = target == mount or target.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) >= len(best):
            best, device = mount, fields[0] if fields[0].startswith("/") else f"{fields[0]} ({mount})"
    return device


def _megabytes(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


@dataclass
class TrainResult:
    run_dir: Path
    step: int  # optimizer steps done in total (all sessions of the run)
    images_seen: int
    train_seconds: float  # time in training steps, all sessions (excludes checkpoints and previews)
    interrupted: bool  # stopped early by Ctrl-C or request_stop(); a checkpoint was written
    is_main_process: bool = True  # False on the other processes of a multi-process run
    last_logs: dict[str, float] = field(default_factory=dict)
    stop_signal: int | None = None  # the signal that stopped it early (SIGINT, SIGTERM); None otherwise

    @property
    def images_per_second(self) -> float:
        return self.images_seen / max(self.train_seconds, 1e-9)


class Trainer:
    """Train ``model`` on ``train_set`` and write the run folder ``run_dir``.

    train_set: an ``aediff.data.ImageDataset`` (anything with ``__len__`` and ``batch(indices) -> dict``), or an
        ``aediff.data.ImageStream`` (Hugging Face streaming mode: read in order, see ``aediff.data.hfstream``).
    run_config: what config.json records besides the training and data configs: {"family", "model"}.
    callbacks: called as ``callback(trainer, step, logs)`` after every optimizer step.

    The run folder's writer lock (``runs.writer_lock``) is taken here, before anything is written, and
    released when ``train()`` returns or raises.
    """

    def __init__(
        self,
        model: Model,
        train_set: Any,
        run_dir: str | Path,
        config: TrainConfig,
        run_config: dict[str, Any],
        data_config: DataConfig | None = None,
        resume: bool = False,
        accelerator: Accelerator | None = None,
        callbacks: list[Callable[[Trainer, int, dict[str, float]], None]] | None = None,
        progress: bool = True,
        held_out: Any = None,
    ):
        if config.max_steps is None and config.epochs is None and config.max_minutes is None:
            raise ConfigError(
                "say how long to train: set max_steps, epochs or max_minutes (--max-steps, --epochs, --max-time)"
            )
        self.config = config
        self.run_dir = Path(run_dir)
        self.train_set = train_set
        if config.eval_every and held_out is None:
            raise ConfigError("eval_every needs held-out images: give the trainer the data's test split (held_out=)")
        self.held_out = held_out
        trackers.check_installed(config.trackers)
        self.fid_probe = None
        if config.eval_judge:
            if not config.eval_every or not model.can(Capability.GENERATE):
                raise ConfigError(
                    "eval_judge scores samples at each evaluation: set eval_every, on a model that samples"
                )
            self.fid_probe = keeping.FIDProbe(config.eval_judge, held_out, config.eval_samples)
        self.best_heldout = keeping.best_loss(Path(run_dir))  # a resumed run keeps the best it had
        self.callbacks = callbacks or []
        self.show_progress = progress
        if accelerator is None:
            # Accelerate keeps its settings in a process-wide singleton; a second run in the same Python
            # process with another precision must start from fresh settings (the process group stays).
            AcceleratorState._reset_state(reset_partial_state=False)
            # Accelerate only forms a multi-process CPU group (gloo) when told it is on the CPU.
            device = default_device()
            precision = resolve_mixed_precision(config.mixed_precision, device)
            accelerator = Accelerator(mixed_precision=precision, cpu=device.type == "cpu")
        refuse_sharding(accelerator)
        self.accelerator = accelerator
        acc = self.accelerator
        self.world_size, self.rank = acc.num_processes, acc.process_index
        parts = self.world_size * config.grad_accumulation
        if config.batch_size % parts:
            raise ConfigError(
                f"batch size {config.batch_size} does not split over {self.world_size} process(es) x "
                f"{config.grad_accumulation} accumulation part(s); use a multiple of {parts}"
            )
        if isinstance(train_set, ImageStream):  # no positions: batches are read in order (its size may be unknown)
            self.plan = StreamPlan(train_set.num_examples, config.batch_size, config.seed, self.world_size, self.rank)
        else:
            self.plan = BatchPlan(len(train_set), config.batch_size, config.seed, self.world_size, self.rank)
        self.data_config = data_config
        self.steps_per_epoch = self.plan.steps_per_epoch
        if self.steps_per_epoch == 0:
            raise ConfigError(
                f"the training split has {self.plan.size} images, fewer than one batch of "
                f"{config.batch_size}; lower --batch-size"
            )
        self.horizon = self._horizon()
        self.step = 0
        self.train_seconds = 0.0
        self.elapsed_seconds = 0.0
        self._stop_requested = False
        self._stop_signal: int | None = None
        self._writing = False  # a checkpoint write is under way: a second Ctrl-C waits for its end
        self._abort_signal: int | None = None  # the second Ctrl-C / SIGTERM that came during that write
        self.saved_step: int | None = None  # the step of the checkpoint on disk (None: none written yet)

        self.model = model
        trainable = [p for p in model.parameters() if p.requires_grad]  # a frozen part (e.g. an autoencoder) stays
        self.optimizer = torch.optim.AdamW(
            trainable, lr=config.lr, betas=config.adam_betas, weight_decay=config.weight_decay
        )
        # Held from before the first write to the end of train(): one writer per run folder (re-entrant: train()
        # takes it first on a resume, to read the run).
        self._lock = contextlib.ExitStack()
        if acc.is_main_process:
            self._lock.enter_context(runs.writer_lock(self.run_dir))
        try:
            self._open_run(model, run_config, data_config, resume)
        except BaseException:
            self._lock.close()
            raise
        self._trackers: list[Any] | None = None  # started on the first log (main process): training/trackers.py

    def _open_run(self, model: Model, run_config: dict[str, Any], data_config: DataConfig | None, resume: bool) -> None:
        """Start the run folder (or load its checkpoint), the EMA and the optimizer."""
        acc, config = self.accelerator, self.config
        state = None
        if resume:
            state = self._load_checkpoint()
        else:
            # Every process checks before any writes, so that all of them stop on the same error.
            if (self.run_dir / runs.CONFIG_FILE).exists():
                raise RunError(
                    f"{self.run_dir} already holds a run; pass --resume to continue it, or choose another --out"
                )
            acc.wait_for_everyone()
            if acc.is_main_process:
                self._start_run_folder(run_config, data_config)
        acc.wait_for_everyone()
        self.ema = EMA(model, config.ema_decay)
        if state is not None:
            runs.load_weights(self.ema.model, self.run_dir / runs.EMA_FILE)
        self.ema.model.to(acc.device)
        speed_up(model, config, acc.device)
        # A resumed run keeps the snapshots it already wrote (they are the same weights: training is exact).
        self._snapshots_due = [f for f in config.snapshots if not runs.snapshot_path(self.run_dir, f).is_dir()]
        self.ddp_model = acc.prepare(model)  # moves to the device; wraps in DDP with several processes
        if state is not None:
            self._load_optimizer(state)
            for group in self.optimizer.param_groups:  # a resume may change these (the LR is set at every step)
                group["betas"], group["weight_decay"] = tuple(config.adam_betas), config.weight_decay
        self.optimizer = acc.prepare(self.optimizer)
        if state is not None and acc.scaler is not None and "grad_scaler" in state:
            acc.scaler.load_state_dict(state["grad_scaler"])  # fp16: the loss scale it had reached, exactly

    # --- set-up ------------------------------------------------------------------------------------
    def _load_optimizer(self, state: dict[str, Any]) -> None:
        """The optimizer's moments from the checkpoint; RunError naming the file when they do not fit."""
        path = self.run_dir / runs.OPTIMIZER_FILE
        try:
            tensors = runs.read_tensors(path)
            self.optimizer.load_state_dict(runs.optimizer_from_files(tensors, state["param_groups"]))
        except (KeyError, ValueError, RuntimeError, TypeError) as exc:
            raise RunError(
                f"{path} does not fit the model's parameters ({exc}); the checkpoint is damaged: {runs.RESTORE}"
            ) from None

    def _horizon(self) -> int | None:
        """Total optimizer steps, when the run is bounded by steps or epochs (else None: by time)."""
        bounds = []
        if self.config.max_steps is not None:
            bounds.append(self.config.max_steps)
        if self.config.epochs is not None:
            if self.steps_per_epoch is None:
                raise ConfigError(
                    f"{self.train_set.name} is read in streaming mode and does not say how many images it has, so "
                    "--epochs cannot be counted: bound the run with --max-steps or --max-time"
                )
            bounds.append(max(1, math.ceil(self.config.epochs * self.steps_per_epoch)))
        return min(bounds) if bounds else None

    def _start_run_folder(self, run_config: dict[str, Any], data_config: DataConfig | None) -> None:
        runs.write_run_config(
            self.run_dir,
            {
                **run_config,
                "training": config_to_dict(self.config),
                "data": config_to_dict(data_config) if data_config is not None else None,
            },
        )
        (self.run_dir / runs.LOG_FILE).unlink(missing_ok=True)
        # Snapshots left in a folder without config.json belong to no run; they would pass for this one's.
        shutil.rmtree(self.run_dir / runs.SNAPSHOTS_DIR, ignore_errors=True)

    def _load_checkpoint(self) -> dict[str, Any] | None:
        """Load the checkpoint to resume from; None for a run that crashed before its first checkpoint (it
        starts again from step 0, with the weights its config and seed give)."""
        runs.recover(self.run_dir)
        if not checkpoint_exists(self.run_dir):
            self._say(f"{self.run_dir} has no checkpoint yet: training it from step 0 with its config.json")
            self._trim_log()
            return None
        state_path = self.run_dir / runs.STATE_FILE
        if not state_path.exists():
            raise RunError(  # e.g. a snapshot: weights without optimizer state
                f"{self.run_dir} has weights but no training state to resume from ({runs.STATE_FILE}); "
                f"start a new run in another --out"
            )
        runs.check_checkpoint_consistent(self.run_dir)
        try:
            state = json.loads(state_path.read_text())
            self.step = int(state["step"])
            self.train_seconds = float(state["train_seconds"])
            self.elapsed_seconds = float(state["elapsed_seconds"])
        except (ValueError, KeyError, TypeError) as exc:
            raise RunError(f"{state_path} is unreadable ({exc}); the checkpoint in {self.run_dir} is damaged") from exc
        runs.load_weights(self.model, self.run_dir / runs.MODEL_FILE)
        self.saved_step = self.step
        self._trim_log()
        return state

    def _trim_log(self) -> None:
        """Drop the lines of log.jsonl past the step training resumes from (a crash after a log line but
        before the next checkpoint leaves them; those steps are trained, and logged, again)."""
        log = self.run_dir / runs.LOG_FILE
        if self.accelerator.is_main_process and log.exists():
            text = log.read_text()
            kept = self._log_until_now(text)
            if kept != text.encode():
                runs.write_files_atomically(self.run_dir, {runs.LOG_FILE: kept})

    def _say(self, line: str) -> None:
        """One line for the user, from the main process only (beside the progress bar)."""
        if self.accelerator.is_main_process:
            tqdm.write(line)

    # --- the loop ----------------------------------------------------------------------------------
    def request_stop(self) -> None:
        """Finish the current step, write a checkpoint and return (what the first Ctrl-C does)."""
        self._stop_requested = True

    def _batches(self) -> Iterator[dict[str, Any]]:
        """The training batches from the current step on (``aediff.data.loader``: a function of seed and step,
        so a resumed run sees what an uninterrupted one would); streamed data is decoded ahead by workers."""
        data = self.data_config or DataConfig()
        augmentation = data.augmentation if self.data_config else Augmentation()
        workers = data.loader_workers(self.train_set)
        if isinstance(self.train_set, ImageStream):  # read in order, so loaded ahead by one thread at most
            return stream_batches(StreamBatches(self.train_set, self.plan, augmentation), self.step, workers)
        return step_batches(StepBatches(self.train_set, self.plan, augmentation), self.step, workers)

    def _to_device(self, batch: dict[str, Any]) -> dict[str, Any]:
        batch = {k: v.to(self.accelerator.device) if torch.is_tensor(v) else v for k, v in batch.items()}
        if self.config.channels_last:
            batch["images"] = batch["images"].contiguous(memory_format=torch.channels_last)
        return batch

    def _done(self) -> bool:
        if self.horizon is not None and self.step >= self.horizon:
            return True
        if self.config.max_minutes is not None:
            over = torch.tensor(
                float(self.elapsed_seconds >= self.config.max_minutes * 60), device=self.accelerator.device
            )
            if self.world_size > 1:  # every process must stop at the same step
                over = self.accelerator.reduce(over, "max")
            return bool(over.item())
        return False

    def _progress(self) -> float:
        if self.horizon is not None:
            return self.step / self.horizon
        return self.elapsed_seconds / (self.config.max_minutes * 60)  # type: ignore[operator]

    def train(self) -> TrainResult:
        """Run until the step, epoch or time budget is spent (or Ctrl-C / SIGTERM); returns what was done."""
        acc, cfg = self.accelerator, self.config
        previous_handlers = self._install_signal_handlers()
        bar = tqdm(
            total=self.horizon,
            initial=self.step,
            disable=not (acc.is_main_process and self.show_progress),
            desc=f"train {self.run_dir.name}",
            unit="step",
            dynamic_ncols=True,
        )
        logs: dict[str, float] = {}
        session_start = time.perf_counter() - self.elapsed_seconds
        batches = self._batches()
        try:
            while not self._done() and not self._stop_requested:
                batch, logs = self._train_step(session_start, batches)
                bar.update(1)
                if self.step % cfg.log_every == 0:
                    self._log(logs, bar)
                if cfg.preview_every and self.step % cfg.preview_every == 0:
                    self._preview(batch)
                if cfg.eval_every and self.step % cfg.eval_every == 0:
                    self._evaluate(bar)
                # Before the checkpoint: a run that resumes from this step has its snapshot already.
                due = self._due_snapshots()
                if due:
                    began = time.perf_counter()
                    self.save_snapshots(due)
                    session_start += time.perf_counter() - began  # not training: out of the time budget too
                if self.step % cfg.checkpoint_every == 0:
                    self.save_checkpoint()
                for callback in self.callbacks:
                    callback(self, self.step, logs)
            interrupted = self._stop_requested
            if not interrupted:
                self.check_weights()  # the AE's latent Gaussian fit would fail on NaN weights with a worse message
                self._after_training()
            if self.step != self.saved_step or not interrupted:
                self.save_checkpoint()
        finally:
            batches.close()  # stops the loader's workers
            bar.close()
            for signum, handler in previous_handlers.items():
                signal.signal(signum, handler)
            trackers.finish(self._trackers or [])
            self._trackers = None
            self._lock.close()
        return TrainResult(
            self.run_dir,
            self.step,
            self.step * cfg.batch_size,
            self.train_seconds,
            interrupted,
            acc.is_main_process,
            logs,
            self._stop_signal,
        )

    def _train_step(
        self, session_start: float, batches: Iterator[dict[str, Any]]
    ) -> tuple[dict[str, Any], dict[str, float]]:
        """One optimizer step on the next of ``batches`` (and the EMA update); returns the batch and the logs."""
        acc, cfg = self.accelerator, self.config
        t0 = time.perf_counter()
        torch.manual_seed(step_seed(cfg.seed, self.step, self.rank))  # the loss's draws (noise levels, noise)
        batch = self._to_device(next(batches))
        lr = cfg.lr * lr_factor(cfg, self.step, self._progress())
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.ddp_model.train()
        loss, logs = self._accumulate_gradients(batch)
        if cfg.grad_clip > 0:
            logs["grad_norm"] = float(acc.clip_grad_norm_(self.ddp_model.parameters(), cfg.grad_clip))
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.ema.update(self.model, self.step)
        self.step += 1
        self.train_seconds += time.perf_counter() - t0
        self.elapsed_seconds = time.perf_counter() - session_start
        logs = {"loss": loss.item(), "lr": lr, **logs}
        if not math.isfinite(logs["loss"]):
            raise RunError(
                f"the loss became {logs['loss']} at step {self.step}; {self._lower_lr_advice()}, or check the data; "
                f"{self._last_good()}"
            )
        return batch, logs

    def _accumulate_gradients(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        """Backward of the mean loss over ``batch`` in ``grad_accumulation`` equal parts, one at a time (the
        activations of one part in memory; DDP's all-reduce once, on the last part). Returns the mean loss and
        the parts' mean logs."""
        parts = self.config.grad_accumulation
        if parts == 1:
            loss, logs = self.ddp_model(batch)
            self.accelerator.backward(loss)
            return loss, logs
        total, summed = torch.zeros((), device=self.accelerator.device), {}
        for i, part in enumerate(split_batch(batch, parts)):
            sync = contextlib.nullcontext() if i == parts - 1 else self.accelerator.no_sync(self.ddp_model)
            with sync:
                loss, logs = self.ddp_model(part)
                self.accelerator.backward(loss / parts)
            total += loss.detach() / parts
            for key, value in logs.items():
                summed[key] = summed.get(key, 0.0) + value / parts
        return total, summed

    def _lower_lr_advice(self) -> str:
        """What to do about a loss or weights gone non-finite: resume with a lower LR (a resume may change it)."""
        return f"lower --lr (now {self.config.lr:g}): `aediff train --resume --out {self.run_dir} --lr ...`"

    def _last_good(self) -> str:
        """Where the last good checkpoint is, for error messages."""
        if self.saved_step is None:
            return f"no checkpoint was written yet in {self.run_dir} (--resume starts it again from step 0)"
        return f"the last good checkpoint (step {self.saved_step}) is in {self.run_dir}"

    def check_weights(self) -> None:
        """Refuse weights (model or EMA) with NaN, inf or absurd values: a checkpoint of them would overwrite
        the last good one. Run on every process (the weights are the same on all), so all stop together."""
        for which, model in (("model", self.model), ("EMA", self.ema.model)):
            try:
                runs.check_finite_weights(model.state_dict(), which)
            except RunError:
                raise RunError(
                    f"the weights became non-finite at step {self.step} ({which} weights); {self._lower_lr_advice()}; "
                    f"{self._last_good()}"
                ) from None

    def _install_signal_handlers(self) -> dict[int, Any]:
        """First Ctrl-C or SIGTERM: stop after this step and save; a second one aborts at once (the last
        checkpoint stays intact thanks to the journaled writes). Returns the handlers to put back."""
        if threading.current_thread() is not threading.main_thread():
            return {}

        def handler(signum: int, frame: Any) -> None:
            if not self._stop_requested:
                self._stop_requested, self._stop_signal = True, signum
                again = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
                self._say(f"Stopping after this step and saving a checkpoint ({again} again to abort).")
            elif self._writing and self._abort_signal is None:  # a few moments more: the message stays exact
                self._abort_signal = signum
                self._say("Aborting once this checkpoint is written (again to abort now).")
            else:
                self._abort(signum)

        return {signum: signal.signal(signum, handler) for signum in (signal.SIGINT, signal.SIGTERM)}

    def _abort(self, signum: int) -> None:
        name = signal.Signals(signum).name
        raise TrainingAborted(
            f"aborted by a second {name} at step {self.step}; {self._last_good()}; continue with --resume", signum
        )

    def _after_training(self, models: tuple[Model, ...] | None = None, limit: int | None = None) -> None:
        """Give the models (default: the model and its EMA) their ``after_training`` hook with the training
        images (an AE fits its latent Gaussian); ``limit``: that many, spread evenly over the split (a stream in
        Hugging Face streaming mode gives its first ``BEST_FIT_IMAGES``, whatever the limit)."""
        from aediff.evaluation import iterate_images

        device = self.accelerator.device
        for model in models or (self.model, self.ema.model):
            if isinstance(self.train_set, ImageStream):  # maybe endless: its first images, as many as RUN/best's fit
                batches = self.train_set.first_batches(BEST_FIT_IMAGES)
            else:
                batches = iterate_images(self.train_set, limit=limit)
            model.after_training(b["images"].to(device) for b in batches)

    def _due_snapshots(self) -> list[float]:
        """The snapshot fractions the run's progress has reached since the last call (the same on every process)."""
        if not self._snapshots_due:
            return []
        progress = self._progress()
        if self.horizon is None and self.world_size > 1:  # by time: the processes' clocks differ; all must agree
            reached = torch.tensor(progress, device=self.accelerator.device)
            progress = float(self.accelerator.reduce(reached, "max").item())
        due = [f for f in self._snapshots_due if progress >= f]
        self._snapshots_due = self._snapshots_due[len(due) :]
        return due

    # --- logging, checkpoints and snapshots --------------------------------------------------------
    def _started_trackers(self) -> list[Any]:
        """The run's experiment trackers, started on first use (main process; none on the others)."""
        if self._trackers is None:
            main = self.accelerator.is_main_process
            self._trackers = (
                trackers.start_trackers(self.config.tensorboard, self.config.trackers, self.run_dir, self.step)
                if main
                else []
            )
        return self._trackers

    def _log(self, logs: dict[str, float], bar: Any) -> None:
        if not self.accelerator.is_main_process:
            return
        bar.set_postfix({k: f"{v:.4g}" for k, v in logs.items() if k in ("loss", "lr")})
        record = {
            "step": self.step,
            "train_seconds": self.train_seconds,
            "images_per_second": self.step * self.config.batch_size / max(self.train_seconds, 1e-9),
            **logs,
        }
        with open(self.run_dir / runs.LOG_FILE, "a") as f:
            f.write(json.dumps(record) + "\n")
        scalars = {f"train/{key}": value for key, value in record.items() if key != "step"}
        trackers.log_scalars(self._started_trackers(), scalars, self.step)

    def _evaluate(self, bar: Any) -> None:
        """Log the EMA weights' held-out loss; keep them in RUN/best when it is the lowest so far (main process)."""
        acc = self.accelerator
        if acc.is_main_process:
            loss = keeping.held_out_loss(self.ema.model, self.held_out, self.config.eval_images,
                                         self.config.batch_size, acc.device)  # fmt: skip
            scores = {"heldout_loss": loss}
            if self.fid_probe is not None:
                with torch.random.fork_rng(devices=[]):
                    scores["fid"] = self.fid_probe(self.ema.model)
            self._log(scores, bar)
            if self.best_heldout is None or loss < self.best_heldout:
                self.check_weights()
                # e.g. the AE's latent Gaussian, to sample from RUN/best: fitted on a bounded spread of the training
                # images, since a new best can come at every evaluation and a streamed split can be very large
                self._after_training((self.ema.model,), limit=BEST_FIT_IMAGES)
                record = {"step": self.step, "heldout_loss": loss, "images_seen": self.step * self.config.batch_size}
                keeping.write_folder(self.run_dir / keeping.BEST_DIR, {
                    **self._weights_files(with_optimizer=False),
                    runs.CONFIG_FILE: (self.run_dir / runs.CONFIG_FILE).read_bytes(),
                    keeping.BEST_FILE: json.dumps(record, indent=2).encode(),
                })  # fmt: skip
                self.best_heldout = loss
        acc.wait_for_everyone()

    def _preview(self, batch: dict[str, Any]) -> None:
        if not self.accelerator.is_main_process or not self._started_trackers():
            return
        grids = {
            f"preview/{k}": ((v.float().clamp(-1, 1) + 1) / 2).cpu() for k, v in self.ema.model.preview(batch).items()
        }
        trackers.log_images(self._started_trackers(), grids, self.step)

    def save_checkpoint(self) -> None:
        """Write weights, EMA weights and the training state as one atomic unit (main process)."""
        acc = self.accelerator
        self.check_weights()
        acc.wait_for_everyone()
        if acc.is_main_process:
            files = self._weights_files(with_optimizer=True)
            self._writing = True
            try:
                runs.write_files_atomically(self.run_dir, files)
                if self.config.keep_checkpoints:
                    config = {runs.CONFIG_FILE: (self.run_dir / runs.CONFIG_FILE).read_bytes()}
                    keeping.keep_checkpoint(self.run_dir, self.step, {**files, **config}, self.config.keep_checkpoints)
            except OSError as exc:
                raise self._write_error(exc, f"checkpoint at step {self.step}", files) from None
            finally:
                self._writing = False
        acc.wait_for_everyone()
        self.saved_step = self.step
        if self._abort_signal is not None:
            self._abort(self._abort_signal)

    def _weights_files(self, with_optimizer: bool) -> dict[str, bytes]:
        """The checkpoint's files: weights and EMA weights, and with ``with_optimizer`` the optimizer and
        training state (what --resume needs)."""
        meta = {"step": str(self.step)}
        files = {
            runs.MODEL_FILE: runs.tensors_to_bytes(self.model.state_dict(), meta),
            runs.EMA_FILE: runs.tensors_to_bytes(self.ema.model.state_dict(), meta),
        }
        if with_optimizer:
            opt_tensors, param_groups = runs.optimizer_to_files(self.optimizer.optimizer)  # Accelerate's wrapper
            state = {
                "step": self.step,
                "train_seconds": self.train_seconds,
                "elapsed_seconds": self.elapsed_seconds,
                "images_seen": self.step * self.config.batch_size,
                "world_size": self.world_size,
                "param_groups": param_groups,
            }
            if self.accelerator.scaler is not None:  # fp16's loss scaler: a resume continues from its scale
                state["grad_scaler"] = self.accelerator.scaler.state_dict()
            files[runs.OPTIMIZER_FILE] = runs.tensors_to_bytes(opt_tensors, meta)
            files[runs.STATE_FILE] = json.dumps(state, indent=2).encode()
        return files

    def _write_error(self, exc: OSError, what: str, files: dict[str, bytes]) -> RunError:
        """A failed checkpoint or snapshot write as one line that says what to do; the files it left half
        written are removed (they hold space, and they are not part of any checkpoint)."""
        try:
            runs.recover(self.run_dir)  # before the commit point: drops the .tmp files; after it: completes it
        except (OSError, RunError):
            pass
        if (self.run_dir / runs.STATE_FILE).exists():  # what is on disk now (recover may have completed the write)
            try:
                self.saved_step = int(json.loads((self.run_dir / runs.STATE_FILE).read_text())["step"])
            except (OSError, ValueError, KeyError, TypeError):
                pass
        if self.saved_step is None:
            kept = f"no checkpoint was written yet (--resume starts {self.run_dir} again from step 0)"
        else:
            kept = f"the checkpoint of step {self.saved_step} is intact"
        size = _megabytes(sum(len(data) for data in files.values()))
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            reason = "no space left" if exc.errno == errno.ENOSPC else "disk quota exceeded"
            return RunError(
                f"{reason} on {filesystem_of(self.run_dir)} writing {self.run_dir}'s {what} (needs {size}); "
                f"free space and continue with --resume; {kept}"
            )
        return RunError(
            f"could not write {self.run_dir}'s {what} ({exc.strerror or exc}); fix that and continue with "
            f"--resume; {kept}"
        )

    def save_snapshots(self, fractions: list[float]) -> None:
        """Keep the model as it is now as RUN/snapshots/<percent> for each of ``fractions`` (main process).

        A snapshot is a run folder of its own for ``aediff.load``: config.json, the weights and EMA weights,
        snapshot.json (fraction, step, images seen, train and elapsed seconds: its ``summary``) and the log so
        far; no optimizer state, so it cannot be resumed. The EMA model gets its ``after_training`` hook first
        (an AE fits its latent Gaussian, to sample); the next step's EMA update overwrites those buffers again.
        """
        acc = self.accelerator
        self.check_weights()
        acc.wait_for_everyone()
        if acc.is_main_process:
            self._after_training((self.ema.model,))
            meta = {"step": str(self.step)}
            files = {
                runs.CONFIG_FILE: (self.run_dir / runs.CONFIG_FILE).read_bytes(),
                runs.MODEL_FILE: runs.tensors_to_bytes(self.model.state_dict(), meta),
                runs.EMA_FILE: runs.tensors_to_bytes(self.ema.model.state_dict(), meta),
            }
            log = self.run_dir / runs.LOG_FILE
            if log.exists():
                files[runs.LOG_FILE] = self._log_until_now(log.read_text())
            for fraction in fractions:
                record = {
                    "fraction": fraction,
                    "step": self.step,
                    "images_seen": self.step * self.config.batch_size,
                    "train_seconds": self.train_seconds,
                    "elapsed_seconds": self.elapsed_seconds,
                }
                record_bytes = json.dumps(record, indent=2).encode()
                try:
                    self._write_snapshot(fraction, {**files, runs.SNAPSHOT_FILE: record_bytes})
                except OSError as exc:
                    shutil.rmtree(
                        keeping.staging_folder(runs.snapshot_path(self.run_dir, fraction)), ignore_errors=True
                    )
                    raise self._write_error(exc, f"snapshot at {fraction:.0%} (step {self.step})", files) from None
        acc.wait_for_everyone()

    def _log_until_now(self, text: str) -> bytes:
        """The lines of log.jsonl up to the current step (a resumed run's log may run past its checkpoint;
        a line cut short by a crash is skipped, not fatal)."""
        kept = []
        for line in text.splitlines():
            try:
                if json.loads(line)["step"] <= self.step:
                    kept.append(line + "\n")
            except (ValueError, KeyError, TypeError):
                continue
        return "".join(kept).encode()

    def _write_snapshot(self, fraction: float, files: dict[str, bytes]) -> None:
        """Write ``files`` as the snapshot's folder: whole or not at all (``keeping.write_folder``)."""
        keeping.write_folder(runs.snapshot_path(self.run_dir, fraction), files)
