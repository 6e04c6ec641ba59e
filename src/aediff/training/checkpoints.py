"""The checkpoint and snapshot writer's parts: which files a checkpoint holds and their bytes (weights, EMA
weights, optimizer moments, training state), the log up to a step, and a failed write as one line that names the
disk it needed space on (from /proc/self/mounts). The writes themselves are journaled (``aediff.runs``)."""

from __future__ import annotations

import errno
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from aediff import runs
from aediff.errors import RunError
from aediff.training import keeping

CHECKPOINT_FILES = (runs.MODEL_FILE, runs.EMA_FILE, runs.OPTIMIZER_FILE, runs.STATE_FILE)


def checkpoint_exists(run_dir: str | Path) -> bool:
    """Whether the run folder holds any part of a checkpoint (a run that crashed before its first one has
    only config.json: it is resumed from step 0)."""
    return any((Path(run_dir) / name).exists() for name in CHECKPOINT_FILES)


@dataclass
class Progress:
    """How far a training has come, all sessions together: what state.json and snapshot.json record."""

    step: int  # optimizer steps done
    images_seen: int
    train_seconds: float  # in training steps only (checkpoints and previews excluded)
    elapsed_seconds: float  # the whole training


def weights_files(model: nn.Module, ema: nn.Module, step: int) -> dict[str, bytes]:
    """model.safetensors and ema.safetensors, each recording ``step`` in its metadata."""
    meta = {"step": str(step)}
    return {
        runs.MODEL_FILE: runs.tensors_to_bytes(model.state_dict(), meta),
        runs.EMA_FILE: runs.tensors_to_bytes(ema.state_dict(), meta),
    }


def state_files(
    optimizer: torch.optim.Optimizer, progress: Progress, world_size: int, scaler: Any | None
) -> dict[str, bytes]:
    """The optimizer's moments and state.json: with the weights, what --resume needs (``scaler``: fp16's loss
    scaler, so that a resume continues from its scale; None without one)."""
    tensors, param_groups = runs.optimizer_to_files(optimizer)
    state: dict[str, Any] = {
        "step": progress.step,
        "train_seconds": progress.train_seconds,
        "elapsed_seconds": progress.elapsed_seconds,
        "images_seen": progress.images_seen,
        "world_size": world_size,
        "param_groups": param_groups,
    }
    if scaler is not None:
        state["grad_scaler"] = scaler.state_dict()
    return {
        runs.OPTIMIZER_FILE: runs.tensors_to_bytes(tensors, {"step": str(progress.step)}),
        runs.STATE_FILE: json.dumps(state, indent=2).encode(),
    }


def snapshot_record(fraction: float, progress: Progress) -> bytes:
    """snapshot.json: the fraction of the budget and the progress when the snapshot was taken."""
    record = {
        "fraction": fraction,
        "step": progress.step,
        "images_seen": progress.images_seen,
        "train_seconds": progress.train_seconds,
        "elapsed_seconds": progress.elapsed_seconds,
    }
    return json.dumps(record, indent=2).encode()


def write_snapshot(run_dir: Path, fraction: float, files: dict[str, bytes]) -> None:
    """Write ``files`` as RUN/snapshots/<percent>: whole or not at all (``keeping.write_folder``); a write cut
    short leaves no staging folder behind."""
    target = runs.snapshot_path(run_dir, fraction)
    try:
        keeping.write_folder(target, files)
    except OSError:
        shutil.rmtree(keeping.staging_folder(target), ignore_errors=True)
        raise


def log_until(text: str, step: int) -> bytes:
    """The lines of log.jsonl up to ``step`` (a resumed run's log may run past its checkpoint; a line cut
    short by a crash is skipped, not fatal)."""
    kept = []
    for line in text.splitlines():
        try:
            if json.loads(line)["step"] <= step:
                kept.append(line + "\n")
        except (ValueError, KeyError, TypeError):
            continue
    return "".join(kept).encode()


def step_on_disk(run_dir: Path, known: int | None) -> int | None:
    """The step of the checkpoint on disk now (state.json), else ``known``."""
    try:
        return int(json.loads((run_dir / runs.STATE_FILE).read_text())["step"])
    except (OSError, ValueError, KeyError, TypeError):  # none, or unreadable
        return known


def write_error(run_dir: Path, exc: OSError, what: str, files: dict[str, bytes], saved_step: int | None) -> RunError:
    """A failed checkpoint or snapshot write as one line that says what to do and which checkpoint is kept
    (``saved_step``: the step of the one on disk; None: none). The caller has run ``runs.recover`` first."""
    if saved_step is None:
        kept = f"no checkpoint was written yet (--resume starts {run_dir} again from step 0)"
    else:
        kept = f"the checkpoint of step {saved_step} is intact"
    size = f"{sum(len(data) for data in files.values()) / 1e6:.1f} MB"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        reason = "no space left" if exc.errno == errno.ENOSPC else "disk quota exceeded"
        return RunError(
            f"{reason} on {filesystem_of(run_dir)} writing {run_dir}'s {what} (needs {size}); "
            f"free space and continue with --resume; {kept}"
        )
    return RunError(
        f"could not write {run_dir}'s {what} ({exc.strerror or exc}); fix that and continue with --resume; {kept}"
    )


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
