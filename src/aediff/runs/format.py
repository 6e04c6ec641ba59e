"""The run folder's format: the names of its files, its format version, and how tensors and optimizer state
become bytes (safetensors; nothing is ever pickled).

    runs/NAME/
      config.json                 family, model / training / data configs (typed dataclasses as JSON)
      model.safetensors           the trained weights (and buffers, e.g. an AE's fitted latent Gaussian)
      ema.safetensors             exponential moving average of the weights: used for sampling by default
      training_state/
        optimizer.safetensors     AdamW moments
        state.json                step, elapsed time, optimizer hyper-parameters: what --resume needs
      writer.lock                 while a training writes the folder: {"pid", "host", "started"}
      tb/                         TensorBoard logs
      snapshots/25/               with TrainConfig.snapshots: the model when 25% of the budget was spent, a
                                  loadable run folder itself (config.json, weights, snapshot.json, log.jsonl)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import xxhash
from safetensors.torch import save as save_safetensors_bytes

from aediff.errors import RunError
from aediff.runs.training_config import snapshot_label

CONFIG_FILE = "config.json"
MODEL_FILE = "model.safetensors"
EMA_FILE = "ema.safetensors"
STATE_DIR = "training_state"
OPTIMIZER_FILE = f"{STATE_DIR}/optimizer.safetensors"
STATE_FILE = f"{STATE_DIR}/state.json"
PENDING_FILE = "pending.json"
LOCK_FILE = "writer.lock"
LOG_FILE = "log.jsonl"
SNAPSHOTS_DIR = "snapshots"
TENSORBOARD_DIR = "tb"
OWN_FILES = (CONFIG_FILE, MODEL_FILE, EMA_FILE, LOG_FILE, PENDING_FILE, LOCK_FILE)  # never an output's target
OWN_FOLDERS = (STATE_DIR, SNAPSHOTS_DIR, TENSORBOARD_DIR, "checkpoints", "best")  # the last two: training/keeping.py
SNAPSHOT_FILE = "snapshot.json"  # in a snapshot folder: fraction, step, images_seen, train / elapsed seconds
FORMAT_VERSION = 2  # 2: nested diffusion configs; latent diffusion keeps the images' shape and its autoencoder
CHECKPOINT_WEIGHTS = (MODEL_FILE, EMA_FILE, OPTIMIZER_FILE)  # each records {"step": "N"} in its metadata
RESTORE = "retrain, or restore the run from a backup"
DIGEST_KEY = "aediff_xxh3_128"  # a weights file's checksum, in its own safetensors metadata (content_digest)


def one_line(exc: BaseException) -> str:
    """An exception's message on one line (the CLI prints errors as one line)."""
    text = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return " ".join(text.split()) or type(exc).__name__


# --- tensors <-> bytes -------------------------------------------------------------------------
def tensors_to_bytes(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> bytes:
    """A flat dict of tensors -> safetensors bytes (tensors copied to contiguous CPU memory), whose metadata
    carries the file's own checksum (``DIGEST_KEY``: ``content_digest``), checked on every load."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    plain = save_safetensors_bytes(tensors, metadata)
    return save_safetensors_bytes(tensors, {**(metadata or {}), DIGEST_KEY: content_digest(plain)})


def safetensors_header(data: bytes) -> tuple[dict[str, Any], int]:
    """(the JSON header, where the tensor data starts) of safetensors bytes, unchecked (see runs.validation)."""
    length = int.from_bytes(data[:8], "little")
    return json.loads(data[8 : 8 + length]), 8 + length


def content_digest(data: bytes) -> str:
    """XXH3-128 of a safetensors file's content: its header as canonical JSON without the digest itself, then
    its tensor bytes. A flipped bit anywhere in the tensors, names, dtypes, shapes, offsets or metadata changes
    it; a header byte that is only layout (padding) cannot flip without breaking the JSON. XXH3 is not a
    cryptographic hash: it finds damage (about 15 GB/s, against 1 for BLAKE2b here), not tampering."""
    header, start = safetensors_header(data)
    meta = {k: v for k, v in (header.get("__metadata__") or {}).items() if k != DIGEST_KEY}
    header = {k: v for k, v in header.items() if k != "__metadata__"} | ({"__metadata__": meta} if meta else {})
    digest = xxhash.xxh3_128(json.dumps(header, sort_keys=True, separators=(",", ":")).encode())
    digest.update(memoryview(data)[start:])
    return digest.hexdigest()


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


# --- where things are ----------------------------------------------------------------------------
def run_owning(path: str | Path) -> Path | None:
    """The run folder of which ``path`` is one of its own files (OWN_FILES, or inside OWN_FOLDERS), or None:
    what no command's --out may overwrite."""
    path = Path(path).resolve()
    if path.name in OWN_FILES and (path.parent / CONFIG_FILE).is_file():
        return path.parent
    return next((f.parent for f in path.parents if f.name in OWN_FOLDERS and (f.parent / CONFIG_FILE).is_file()), None)


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
