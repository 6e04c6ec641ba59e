"""One trainer for every model family, over Hugging Face Accelerate.

The trainer knows no family by name. A model is an ``aediff.models.Model``: ``forward(batch)`` returns
``(loss, logs)``, ``begin_step(step)`` comes before every step (a KL autoencoder's discriminator switches on at
a step), ``preview(batch)`` gives image grids and ``after_training(batches)`` runs once at the end (an AE fits
its latent Gaussian there).

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
import json
import math
import shutil
import signal
import time
import warnings
from collections.abc import Callable, Iterator
from copy import deepcopy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from torch import nn
from tqdm.auto import tqdm

from aediff import runs
from aediff.config import config_to_dict
from aediff.data import DataConfig
from aediff.data.hfstream import ImageStream, StreamBatches, stream_batches
from aediff.data.loader import Augmentation, StepBatches, step_batches, step_seed
from aediff.errors import ConfigError, RunError
from aediff.models import Model
from aediff.runs.training_config import TrainConfig
from aediff.training import checkpoints, keeping, signals, trackers
from aediff.training.checkpoints import checkpoint_exists
from aediff.training.setup import check_config, make_accelerator, plan_batches, refuse_sharding, speed_up
from aediff.training.signals import StopRequests, TrainingAborted

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


# Training images the after_training hook sees (an AE's latent Gaussian), spread evenly over the split: a 128-number
# Gaussian is fitted well by 10,000, and encoding all of CIFAR-10's 50,000 for the model, its EMA and each snapshot
# took minutes per autoencoder on 2 cores. mnist5k's 5,000 are all seen.
FIT_IMAGES = 10_000


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
        self._source: nn.Module | None = None  # the model whose parameters _parameters lists
        self._parameters: tuple[list[torch.Tensor], list[torch.Tensor]] = ([], [])

    def _parameter_lists(self, model: nn.Module) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """(EMA parameters, ``model``'s parameters), listed once per source model: walking the module tree at every
        step cost about 4 s of the demo's 600 s of training (cProfile, benchmarks/demo_profile.py). Parameters stay
        the same tensors (the optimizer holds them too); buffers are listed at every step: a module may replace one."""
        if self._source is not model:
            ema_params, params = list(self.model.parameters()), list(model.parameters())
            if len(ema_params) != len(params):
                raise ValueError(f"EMA.update: the model has {len(params)} parameters, its EMA {len(ema_params)}")
            self._source, self._parameters = model, (ema_params, params)
        return self._parameters

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        decay = min(self.decay, (1 + step) / (10 + step))
        torch._foreach_lerp_(*self._parameter_lists(model), 1 - decay)  # one call for all, each tensor as lerp_
        for ema_b, b in zip(self.model.buffers(), model.buffers(), strict=True):
            ema_b.copy_(b)


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
        check_config(config, model, held_out)
        self.config = config
        self.run_dir = Path(run_dir)
        self.train_set = train_set
        self.held_out = held_out
        self.data_config = data_config
        self.fid_probe = (
            keeping.FIDProbe(config.eval_judge, held_out, config.eval_samples) if config.eval_judge else None
        )
        self.best_heldout = keeping.best_loss(self.run_dir)  # a resumed run keeps the best it had
        self.callbacks = callbacks or []
        self.show_progress = progress
        self.accelerator = accelerator or make_accelerator(config)
        refuse_sharding(self.accelerator)
        self.world_size, self.rank = self.accelerator.num_processes, self.accelerator.process_index
        self.plan = plan_batches(train_set, config, self.world_size, self.rank)
        self.steps_per_epoch = self.plan.steps_per_epoch
        self.horizon = self._horizon()
        self.step = 0
        self.train_seconds = 0.0
        self.elapsed_seconds = 0.0
        self.stops = StopRequests(self._say)
        self.saved_step: int | None = None  # the step of the checkpoint on disk (None: none written yet)

        self.model = model
        trainable = [p for p in model.parameters() if p.requires_grad]  # a frozen part (e.g. an autoencoder) stays
        self.optimizer = torch.optim.AdamW(
            trainable, lr=config.lr, betas=config.adam_betas, weight_decay=config.weight_decay
        )
        # Held from before the first write to the end of train(): one writer per run folder (re-entrant: train()
        # takes it first on a resume, to read the run).
        self._lock = contextlib.ExitStack()
        if self.accelerator.is_main_process:
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
        self._parameters = list(self.ddp_model.parameters())  # clipped at every step: listed once
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
            kept = checkpoints.log_until(text, self.step)
            if kept != text.encode():
                runs.write_files_atomically(self.run_dir, {runs.LOG_FILE: kept})

    def _say(self, line: str) -> None:
        """One line for the user, from the main process only (beside the progress bar)."""
        if self.accelerator.is_main_process:
            tqdm.write(line)

    # --- the loop ----------------------------------------------------------------------------------
    def request_stop(self) -> None:
        """Finish the current step, write a checkpoint and return (what the first Ctrl-C does)."""
        self.stops.requested = True

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
        previous_handlers = self.stops.install(self._abort)
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
            while not self._done() and not self.stops.requested:
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
            interrupted = self.stops.requested
            if not interrupted:
                self.check_weights()  # the AE's latent Gaussian fit would fail on NaN weights with a worse message
                self._after_training()
            if self.step != self.saved_step or not interrupted:
                self.save_checkpoint()
        finally:
            batches.close()  # stops the loader's workers
            bar.close()
            signals.restore(previous_handlers)
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
            self.stops.stop_signal,
        )

    def _train_step(
        self, session_start: float, batches: Iterator[dict[str, Any]]
    ) -> tuple[dict[str, Any], dict[str, float]]:
        """One optimizer step on the next of ``batches`` (and the EMA update); returns the batch and the logs."""
        acc, cfg = self.accelerator, self.config
        t0 = time.perf_counter()
        torch.manual_seed(step_seed(cfg.seed, self.step, self.rank))  # the loss's draws (noise levels, noise)
        self.model.begin_step(self.step)  # e.g. a KL autoencoder's discriminator switches on at a step
        batch = self._to_device(next(batches))
        lr = cfg.lr * lr_factor(cfg, self.step, self._progress())
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.ddp_model.train()
        loss, logs = self._accumulate_gradients(batch)
        if cfg.grad_clip > 0:
            logs["grad_norm"] = float(acc.clip_grad_norm_(self._parameters, cfg.grad_clip))
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

    def _abort(self, signum: int) -> None:
        name = signal.Signals(signum).name
        raise TrainingAborted(
            f"aborted by a second {name} at step {self.step}; {self._last_good()}; continue with --resume", signum
        )

    def _after_training(self, models: tuple[Model, ...] | None = None) -> None:
        """Give the models (default: the model and its EMA) their ``after_training`` hook with FIT_IMAGES training
        images (an AE fits its latent Gaussian), spread evenly over the split (a stream in Hugging Face streaming
        mode gives its first FIT_IMAGES)."""
        from aediff.evaluation import iterate_images

        device = self.accelerator.device
        for model in models or (self.model, self.ema.model):
            if isinstance(self.train_set, ImageStream):  # maybe endless: its first images, as many as RUN/best's fit
                batches = self.train_set.first_batches(FIT_IMAGES)
            else:
                batches = iterate_images(self.train_set, limit=FIT_IMAGES)
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
                self._after_training((self.ema.model,))
                record = {"step": self.step, "heldout_loss": loss, "images_seen": self.step * self.config.batch_size}
                keeping.write_folder(self.run_dir / keeping.BEST_DIR, {
                    **checkpoints.weights_files(self.model, self.ema.model, self.step),
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
            files = {
                **checkpoints.weights_files(self.model, self.ema.model, self.step),
                **checkpoints.state_files(self.optimizer.optimizer, self._progress_so_far(), self.world_size,
                                          self.accelerator.scaler),  # the optimizer: Accelerate's wrapper's
            }  # fmt: skip
            self.stops.writing = True
            try:
                runs.write_files_atomically(self.run_dir, files)
                if self.config.keep_checkpoints:
                    config = {runs.CONFIG_FILE: (self.run_dir / runs.CONFIG_FILE).read_bytes()}
                    keeping.keep_checkpoint(self.run_dir, self.step, {**files, **config}, self.config.keep_checkpoints)
            except OSError as exc:
                raise self._write_error(exc, f"checkpoint at step {self.step}", files) from None
            finally:
                self.stops.writing = False
        acc.wait_for_everyone()
        self.saved_step = self.step
        if self.stops.abort_signal is not None:
            self._abort(self.stops.abort_signal)

    def _progress_so_far(self) -> checkpoints.Progress:
        return checkpoints.Progress(
            self.step, self.step * self.config.batch_size, self.train_seconds, self.elapsed_seconds
        )

    def _write_error(self, exc: OSError, what: str, files: dict[str, bytes]) -> RunError:
        """A failed checkpoint or snapshot write as one line that says what to do; the files it left half
        written are removed (they hold space, and they are not part of any checkpoint)."""
        try:
            runs.recover(self.run_dir)  # before the commit point: drops the .tmp files; after it: completes it
        except (OSError, RunError):
            pass
        self.saved_step = checkpoints.step_on_disk(self.run_dir, self.saved_step)  # recover may have completed it
        return checkpoints.write_error(self.run_dir, exc, what, files, self.saved_step)

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
            files = {
                runs.CONFIG_FILE: (self.run_dir / runs.CONFIG_FILE).read_bytes(),
                **checkpoints.weights_files(self.model, self.ema.model, self.step),
            }
            log = self.run_dir / runs.LOG_FILE
            if log.exists():
                files[runs.LOG_FILE] = checkpoints.log_until(log.read_text(), self.step)
            for fraction in fractions:
                record = checkpoints.snapshot_record(fraction, self._progress_so_far())
                try:
                    checkpoints.write_snapshot(self.run_dir, fraction, {**files, runs.SNAPSHOT_FILE: record})
                except OSError as exc:
                    raise self._write_error(exc, f"snapshot at {fraction:.0%} (step {self.step})", files) from None
        acc.wait_for_everyone()
