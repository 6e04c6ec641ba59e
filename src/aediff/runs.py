"""The run folder: everything a trained model is, in safetensors + JSON (nothing is ever unpickled).

    runs/NAME/
      config.json                 family, model / training / data configs (typed dataclasses as JSON)
      model.safetensors           the trained weights (and buffers, e.g. an AE's fitted latent Gaussian)
      ema.safetensors             exponential moving average of the weights: used for sampling by default
      training_state/
        optimizer.safetensors     AdamW moments
        state.json                step, elapsed time, optimizer hyper-parameters: what --resume needs
      tb/                         TensorBoard logs
      snapshots/25/               with TrainConfig.snapshots: the model when 25% of the budget was spent, a
                                  loadable run folder itself (config.json, weights, snapshot.json, log.jsonl)

Checkpoints are written through a small journal so that a crash or Ctrl-C at any moment leaves the
last good checkpoint intact: every file is first written in full beside its target (``*.tmp``,
fsync'd), then ``pending.json`` is written atomically as the commit record, then the files are moved
into place and the record removed. On opening a run folder an interrupted commit is rolled forward
(record present) or discarded (record absent).
"""

from __future__ import annotations

import json
import os
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes

from aediff.config import config_from_dict
from aediff.data.config import DataConfig
from aediff.device import default_device
from aediff.errors import AediffError, RunError
from aediff.models import Model, model_class
from aediff.training.config import TrainConfig, snapshot_label

CONFIG_FILE = "config.json"
MODEL_FILE = "model.safetensors"
EMA_FILE = "ema.safetensors"
STATE_DIR = "training_state"
OPTIMIZER_FILE = f"{STATE_DIR}/optimizer.safetensors"
STATE_FILE = f"{STATE_DIR}/state.json"
PENDING_FILE = "pending.json"
LOG_FILE = "log.jsonl"
SNAPSHOTS_DIR = "snapshots"
SNAPSHOT_FILE = "snapshot.json"  # in a snapshot folder: fraction, step, images_seen, train / elapsed seconds
FORMAT_VERSION = 2  # 2: nested diffusion configs; latent diffusion keeps the images' shape and its autoencoder


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
    """config.json of a run folder as written (any format version), checked enough to rebuild the model."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunError(f"run folder {run_dir} does not exist; train one with `aediff train FAMILY --out {run_dir}`")
    recover(run_dir)
    path = run_dir / CONFIG_FILE
    if not path.exists():
        if (run_dir / "unet" / CONFIG_FILE).is_file():
            raise RunError(
                f"{run_dir} is a diffusers UNet2DModel folder, not an aediff run: it can be sampled and scored "
                f"(aediff sample / eval, compare --peer), not trained or reused as one of the family"
            )
        raise RunError(f"{run_dir} has no {CONFIG_FILE}: it is not an aediff run folder")
    try:
        config = json.loads(path.read_text())
    except ValueError as exc:
        raise RunError(f"{path} is not valid JSON ({exc})") from exc
    if not isinstance(config, dict):
        raise RunError(f"{path} should hold a JSON object, not {type(config).__name__}; the run folder is damaged")
    version = config.get("format_version", 1)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise RunError(f"{path}: format_version must be a whole number, got {version!r}")
    if version > FORMAT_VERSION:
        raise RunError(f"{run_dir} was written by a newer aediff (format {version}); upgrade aediff")
    for key in ("family", "model"):
        if key not in config:
            raise RunError(f"{path} lacks the {key!r} entry; the run folder is incomplete")
    return config


@dataclass
class TrainingSummary:
    """How much training a run has had (from its training state, else the last line of log.jsonl)."""

    steps: int
    images_seen: int
    train_seconds: float  # in training steps only (checkpoints and previews excluded), all sessions
    wall_seconds: float  # the whole training, all sessions (log-only runs: train_seconds)

    @property
    def images_per_second(self) -> float:
        return self.images_seen / max(self.train_seconds, 1e-9)


def read_training_summary(run_dir: str | Path, batch_size: int) -> TrainingSummary | None:
    """The run's TrainingSummary (a snapshot's: at the time it was taken), or None when it has neither a
    training state, a snapshot record nor a log."""
    run_dir = Path(run_dir)
    state_path, log_path = run_dir / STATE_FILE, run_dir / LOG_FILE
    try:
        if state_path.exists():
            state = json.loads(state_path.read_text())
            return TrainingSummary(
                int(state["step"]),
                int(state["images_seen"]),
                float(state["train_seconds"]),
                float(state["elapsed_seconds"]),
            )
        record_path = run_dir / SNAPSHOT_FILE
        if record_path.exists():  # a snapshot keeps no training state (nothing to resume from), only this
            record = json.loads(record_path.read_text())
            return TrainingSummary(
                int(record["step"]),
                int(record["images_seen"]),
                float(record["train_seconds"]),
                float(record["elapsed_seconds"]),
            )
        lines = log_path.read_text().strip().splitlines() if log_path.exists() else []
        if lines:
            last = json.loads(lines[-1])
            steps, seconds = int(last["step"]), float(last["train_seconds"])
            return TrainingSummary(steps, steps * batch_size, seconds, seconds)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RunError(f"the training record of {run_dir} is unreadable ({exc}); the run folder is damaged") from exc
    return None


def snapshot_path(run_dir: str | Path, fraction: float) -> Path:
    """The folder of the run's snapshot at ``fraction`` (in (0, 1)) of its budget: RUN/snapshots/<percent>."""
    return Path(run_dir) / SNAPSHOTS_DIR / snapshot_label(fraction)


def list_snapshots(run_dir: str | Path) -> list[tuple[float, Path]]:
    """The run's snapshots as (fraction of the budget in (0, 1), folder), by fraction; empty when it has none.

    Each folder is a run folder of its own: ``load(folder).summary`` tells the steps, images and time it had.
    """
    folder = Path(run_dir) / SNAPSHOTS_DIR
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        record = path / SNAPSHOT_FILE
        # A write in progress (or cut short) happens in a hidden staging folder, renamed when complete.
        if path.name.startswith(".") or not record.is_file():
            continue
        try:
            fraction = float(json.loads(record.read_text())["fraction"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise RunError(f"{record} is unreadable ({exc}); delete the snapshot folder {path}") from exc
        found.append((fraction, path))
    return sorted(found)


@dataclass
class Run:
    """A trained model and everything its run folder says about it: what ``aediff.load`` returns."""

    model: Model  # in eval mode, on the requested device
    path: Path
    family: str
    config: Any  # the model's typed config (``model.config``)
    training: TrainConfig
    data: DataConfig | None  # None when the model was trained on data passed in as arrays
    summary: TrainingSummary | None  # None for a run folder without training state or log
    format_version: int  # of the config.json it was read from (older formats are upgraded on reading)
    weights: str  # "ema" or "model": which weights the model holds

    @property
    def name(self) -> str:
        return self.path.name


def _typed(cls: type, stored: Any, where: Path, what: str) -> Any:
    try:
        return config_from_dict(cls, stored if stored is not None else {})
    except AediffError as exc:
        raise RunError(f"{where}: the {what} config is not valid ({exc})") from exc


def load(path: str | Path, weights: str = "ema", device: str | torch.device | None = None) -> Run:
    """Rebuild a run's model from its folder alone, in eval mode, and return it with its configs.

    path: a run folder, or ``hf://owner/name[@revision]``: a run on the Hugging Face Hub (fetched into, or
    offline found in, the local Hugging Face cache; ``aediff.export.hub_resolve``).
    weights: "ema" (the moving average, used for sampling; falls back to "model" when absent) or "model".
    """
    if weights not in ("ema", "model"):
        raise RunError(f"weights must be 'ema' or 'model', got {weights!r}")
    if str(path).startswith("hf:/"):
        from aediff.export.hub_resolve import resolve  # needs huggingface_hub only when used

        path = resolve(path)
    run_dir = Path(path)
    if (run_dir / "unet" / "config.json").is_file():  # a diffusers UNet2DModel + scheduler folder
        return _load_diffusers(run_dir, device)
    stored = read_run_config(run_dir)
    version = stored.get("format_version", 1)
    where = run_dir / CONFIG_FILE
    cls = model_class(stored["family"])
    model_config = _typed(cls.config_class, cls.upgrade_config(stored["model"], version), where, "model")
    model = cls(model_config)
    file = run_dir / (EMA_FILE if weights == "ema" else MODEL_FILE)
    if weights == "ema" and not file.exists():
        file, weights = run_dir / MODEL_FILE, "model"
    tensors = read_tensors(file)
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    if missing or unexpected:
        raise RunError(
            f"{file} does not match the model in {CONFIG_FILE}: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    training = _typed(TrainConfig, stored.get("training"), where, "training")
    data = _typed(DataConfig, stored["data"], where, "data") if stored.get("data") is not None else None
    return Run(
        model=model.to(device or default_device()).eval(),
        path=run_dir,
        family=cls.family,
        config=model_config,
        training=training,
        data=data,
        summary=read_training_summary(run_dir, training.batch_size),
        format_version=version,
        weights=weights,
    )


def _load_diffusers(run_dir: Path, device: str | torch.device | None) -> Run:
    """A diffusers UNet2DModel + scheduler folder as a Run (``aediff.export.diffusers``; needs diffusers)."""
    import importlib.util

    if importlib.util.find_spec("diffusers") is None:
        raise RunError(f"{run_dir} is a diffusers folder (unet/config.json); install diffusers to load it")
    from aediff.export.diffusers import load_diffusers_folder

    model, config = load_diffusers_folder(run_dir)
    return Run(
        model=model.to(device or default_device()).eval(),
        path=run_dir,
        family=model.family,
        config=config,
        training=TrainConfig(),
        data=None,
        summary=None,
        format_version=1,
        weights="model",
    )


def median_images_per_second(run: Run) -> float:
    """Median training throughput over the windows of the run's log.jsonl (robust to a noisy shared machine);
    for a run too short to log two windows, its mean over the whole training; NaN with neither."""
    path = run.path / LOG_FILE
    log = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    batch = run.training.batch_size
    rates = [
        (b["step"] - a["step"]) * batch / (b["train_seconds"] - a["train_seconds"])
        for a, b in zip(log, log[1:], strict=False)
        if b["train_seconds"] > a["train_seconds"]
    ]
    if rates:
        return statistics.median(rates)
    return run.summary.images_per_second if run.summary is not None else float("nan")
