"""The run folder: everything a trained model is, in safetensors + JSON (nothing is ever unpickled).

    runs/NAME/
      config.json                 family, model / training / data configs (typed dataclasses as JSON)
      model.safetensors           the trained weights (and buffers, e.g. an AE's fitted latent Gaussian)
      ema.safetensors             exponential moving average of the weights: used for sampling by default
      training_state/
        optimizer.safetensors     AdamW moments
        state.json                step, elapsed time, optimizer hyper-parameters: what --resume needs
      tb/                         TensorBoard logs

Checkpoints are written through a small journal so that a crash or Ctrl-C at any moment leaves the
last good checkpoint intact: every file is first written in full beside its target (``*.tmp``,
fsync'd), then ``pending.json`` is written atomically as the commit record, then the files are moved
into place and the record removed. On opening a run folder an interrupted commit is rolled forward
(record present) or discarded (record absent).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes
from torch import nn

from aediff.device import default_device
from aediff.errors import RunError

CONFIG_FILE = "config.json"
MODEL_FILE = "model.safetensors"
EMA_FILE = "ema.safetensors"
STATE_DIR = "training_state"
OPTIMIZER_FILE = f"{STATE_DIR}/optimizer.safetensors"
STATE_FILE = f"{STATE_DIR}/state.json"
PENDING_FILE = "pending.json"
FORMAT_VERSION = 1


# --- atomic, journaled writes ----------------------------------------------------------------
def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # not possible on some platforms (Windows); the renames are still atomic
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_files_atomically(run_dir: str | Path, files: dict[str, bytes]) -> None:
    """Replace several files of ``run_dir`` as one unit: after a crash, all are old or all are new."""
    run_dir = Path(run_dir)
    for name, data in files.items():
        target = run_dir / name
        target.parent.mkdir(parents=True, exist_ok=True)
        _write_synced(target.with_name(target.name + ".tmp"), data)
    pending = run_dir / PENDING_FILE
    _write_synced(pending.with_name(PENDING_FILE + ".tmp"), json.dumps(sorted(files)).encode())
    os.replace(pending.with_name(PENDING_FILE + ".tmp"), pending)  # the commit point
    _fsync_dir(run_dir)
    _finish_commit(run_dir, sorted(files))


def _finish_commit(run_dir: Path, names: list[str]) -> None:
    for name in names:
        tmp = run_dir / (name + ".tmp")
        if tmp.exists():
            os.replace(tmp, run_dir / name)
    for folder in {(run_dir / name).parent for name in names}:
        _fsync_dir(folder)
    (run_dir / PENDING_FILE).unlink(missing_ok=True)
    _fsync_dir(run_dir)


def recover(run_dir: str | Path) -> None:
    """Finish a commit that was interrupted after its commit point, or drop one that was not."""
    run_dir = Path(run_dir)
    pending = run_dir / PENDING_FILE
    if pending.exists():
        try:
            names = json.loads(pending.read_text())
        except (OSError, ValueError) as exc:
            raise RunError(f"{pending} is unreadable ({exc}); the checkpoint in {run_dir} may be damaged") from exc
        _finish_commit(run_dir, names)
    for tmp in list(run_dir.glob("*.tmp")) + list(run_dir.glob(f"{STATE_DIR}/*.tmp")):
        tmp.unlink()


# --- tensors <-> bytes -------------------------------------------------------------------------
def tensors_to_bytes(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> bytes:
    """A flat dict of tensors -> safetensors bytes (tensors copied to contiguous CPU memory)."""
    return save_safetensors_bytes({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, metadata)


def read_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """safetensors file -> dict of CPU tensors, with a clear error for a missing or damaged file."""
    path = Path(path)
    if not path.exists():
        raise RunError(f"{path} does not exist: is this a finished aediff run folder?")
    try:
        return load_safetensors_bytes(path.read_bytes())
    except (SafetensorError, ValueError) as exc:
        raise RunError(f"{path} is not a valid safetensors file ({exc}); the run may be damaged") from exc


def optimizer_to_files(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]]]:
    """Optimizer state -> (flat tensors ``"{param}.{name}"``, JSON-able param groups)."""
    state = optimizer.state_dict()
    tensors = {}
    for index, values in state["state"].items():
        for name, value in values.items():
            tensors[f"{index}.{name}"] = value if torch.is_tensor(value) else torch.tensor(value)
    return tensors, state["param_groups"]


def optimizer_from_files(tensors: dict[str, torch.Tensor], param_groups: list[dict[str, Any]]) -> dict[str, Any]:
    """Inverse of ``optimizer_to_files``: a state dict for ``optimizer.load_state_dict``."""
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    return {"state": state, "param_groups": param_groups}


# --- config.json ---------------------------------------------------------------------------------
def write_run_config(run_dir: str | Path, config: dict[str, Any]) -> None:
    """Write config.json atomically (``config`` holds family, model, training, data)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    payload = {"format_version": FORMAT_VERSION, **config}
    write_files_atomically(run_dir, {CONFIG_FILE: json.dumps(payload, indent=2).encode()})


def read_run_config(run_dir: str | Path) -> dict[str, Any]:
    """config.json of a run folder, validated enough to rebuild the model."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunError(f"run folder {run_dir} does not exist; train one with `aediff train FAMILY --out {run_dir}`")
    recover(run_dir)
    path = run_dir / CONFIG_FILE
    if not path.exists():
        raise RunError(f"{run_dir} has no {CONFIG_FILE}: it is not an aediff run folder")
    try:
        config = json.loads(path.read_text())
    except ValueError as exc:
        raise RunError(f"{path} is not valid JSON ({exc})") from exc
    if config.get("format_version", 0) > FORMAT_VERSION:
        raise RunError(f"{run_dir} was written by a newer aediff (format {config['format_version']}); upgrade aediff")
    for key in ("family", "model"):
        if key not in config:
            raise RunError(f"{path} lacks the {key!r} entry; the run folder is incomplete")
    return config


def load(path: str | Path, weights: str = "ema", device: str | torch.device | None = None) -> nn.Module:
    """Rebuild a model from its run folder alone, in eval mode.

    weights: "ema" (the moving average, used for sampling; falls back to "model" when absent) or "model".
    """
    from aediff.models import build_model  # registers every family

    run_dir = Path(path)
    config = read_run_config(run_dir)
    model = build_model(config["family"], config["model"])
    if weights not in ("ema", "model"):
        raise RunError(f"weights must be 'ema' or 'model', got {weights!r}")
    file = run_dir / (EMA_FILE if weights == "ema" else MODEL_FILE)
    if weights == "ema" and not file.exists():
        file = run_dir / MODEL_FILE
    tensors = read_tensors(file)
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    if missing or unexpected:
        raise RunError(f"{file} does not match the model in {CONFIG_FILE}: missing {missing[:5]}, "
                       f"unexpected {unexpected[:5]}")
    model.run_dir = run_dir  # type: ignore[attr-defined]
    model.run_config = config  # type: ignore[attr-defined]
    return model.to(device or default_device()).eval()
