"""The run folder: everything a trained model is, in safetensors + JSON (nothing is ever unpickled).

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

Checkpoints are written through a small journal so that a crash or Ctrl-C at any moment leaves the
last good checkpoint intact: every file is first written in full beside its target (``*.tmp``,
fsync'd), then ``pending.json`` is written atomically as the commit record, then the files are moved
into place and the record removed. A writer (``recover``, under ``writer_lock``) rolls an interrupted
commit forward (record present) or discards it (record absent). Readers (``load``) never write: they read
a commit past its commit point through its ``*.tmp`` files, and read again when a live writer moved on
while they read. Every file of a checkpoint records its step (safetensors metadata, state.json), and a
checkpoint whose files disagree on it is refused.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import socket
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes

from aediff.config import config_from_dict
from aediff.data.config import DataConfig
from aediff.device import default_device
from aediff.errors import AediffError, RunError
from aediff.models import MODELS, Model, model_class
from aediff.models.sizes import check_model_size
from aediff.training.config import TrainConfig, snapshot_label

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
# Trained weights and buffers of every family stay within a few units (the largest seen: ~4, an AE's latent
# Gaussian); a flipped exponent bit makes 1e19..1e38 or inf. 1e6 leaves ample room and catches those.
MAX_ABS_WEIGHT = 1e6
RESTORE = "retrain, or restore the run from a backup"
READ_AGAIN_SECONDS = 10.0  # how long a reader keeps re-reading a folder that a live writer changes under it
T = TypeVar("T")


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
    """Replace several files of ``run_dir`` as one unit: after a crash, all are old or all are new.

    Refused while another live process holds the folder's ``writer_lock``: two writers would mix checkpoints."""
    run_dir = Path(run_dir)
    _refuse_other_writer(run_dir)
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
    """Finish a commit that was interrupted after its commit point, or drop one that was not (writers only).

    Readers never call this (``load`` reads through the journal instead). It refuses while another live
    process holds the folder's ``writer_lock`` (its ``*.tmp`` files are a write in progress, not debris), and
    when there is something to repair in a folder this process cannot write."""
    run_dir = Path(run_dir)
    _refuse_other_writer(run_dir)
    pending = run_dir / PENDING_FILE
    debris = list(run_dir.glob("*.tmp")) + list(run_dir.glob(f"{STATE_DIR}/*.tmp"))
    if not pending.exists() and not debris:
        return
    if not os.access(run_dir, os.W_OK):
        raise RunError(
            f"{run_dir} holds a checkpoint write cut short ({PENDING_FILE} or *.tmp files) and is not writable: "
            f"make it writable to finish it (aediff.load reads it as it is)"
        )
    if pending.exists():
        names = _Journal.open(run_dir).pending
        _finish_commit(run_dir, sorted(names))
    for tmp in debris:
        tmp.unlink(missing_ok=True)


# --- one writer at a time ------------------------------------------------------------------------
def _process_start(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot, from /proc), to tell a reused pid; None off Linux."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()  # after the command name, which may hold spaces and parentheses
    return fields[19] if len(fields) > 19 else None


def _alive(pid: int, start: str | None) -> bool:
    """Whether process ``pid`` of this host runs, and is the one that started at ``start`` (when known)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        pass
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except (OSError, IndexError):
        return True  # no /proc (macOS): os.kill said it exists
    if state in ("Z", "X"):  # a zombie: it has exited, only its parent has not collected it yet
        return False
    return start is None or _process_start(pid) in (None, start)


def _lock_record(path: Path) -> tuple[bytes, dict[str, Any] | None] | None:
    """(raw bytes, the record or None when unreadable) of a lock file; None when there is none. A lock just
    created is empty for an instant before its owner writes it: an unreadable one younger than 2 s is read
    again, for up to 1 s."""
    deadline = time.monotonic() + 1.0
    while True:
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError:
            return b"", None
        try:
            record = json.loads(raw)
            if isinstance(record, dict) and isinstance(record.get("pid"), int):
                return raw, record
        except ValueError:
            pass
        with contextlib.suppress(OSError):
            if time.time() - path.stat().st_mtime > 2:  # not a lock being created: damaged, so stale
                return raw, None
        if time.monotonic() > deadline:
            return raw, None
        time.sleep(0.05)


def _holder(run_dir: Path) -> tuple[bytes, dict[str, Any] | None, bool] | None:
    """The folder's lock as (raw bytes, record, whether its writer is alive); None without a lock file."""
    found = _lock_record(run_dir / LOCK_FILE)
    if found is None:
        return None
    raw, record = found
    if record is None:
        return raw, None, False  # unreadable: stale
    if record.get("host") not in (None, socket.gethostname()):
        return raw, record, True  # a writer on another machine (a shared disk): cannot be checked, so trusted
    return raw, record, _alive(record["pid"], record.get("proc_start"))


def live_writer(run_dir: str | Path) -> int | None:
    """The process id of the live writer holding ``run_dir``'s ``writer_lock`` (this process's own id when it
    holds it); None when no lock is held, or its holder is gone."""
    held = _holder(Path(run_dir))
    if held is None or not held[2]:
        return None
    return held[1]["pid"]  # type: ignore[index]


def _busy(run_dir: Path, record: dict[str, Any]) -> RunError:
    host = record.get("host")
    where = f" on {host}" if host not in (None, socket.gethostname()) else ""
    hint = f" (if it is gone, delete {run_dir / LOCK_FILE})" if where else ""
    return RunError(
        f"{run_dir} is being written by process {record['pid']}{where} (started {record.get('started', '?')}); "
        f"wait for it or stop it{hint}"
    )


def _refuse_other_writer(run_dir: Path) -> None:
    held = _holder(run_dir)
    if held is not None and held[2] and held[1]["pid"] != os.getpid():  # type: ignore[index]
        raise _busy(run_dir, held[1])  # type: ignore[arg-type]


@contextlib.contextmanager
def writer_lock(run_dir: str | Path) -> Iterator[None]:
    """Hold ``run_dir`` as its only writer: creates ``run_dir/writer.lock`` atomically (O_CREAT | O_EXCL) with
    {"pid", "host", "started"}; removes it on exit.

    A lock of a live process on this host (or of any process on another host) is a RunError naming it; a
    stale one (its process gone, or unreadable) is taken over. Re-entrant within one process: an inner
    ``writer_lock`` of the holder passes through. Readers (``load``) do not take it; they check it."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    me = os.getpid()
    record = {
        "pid": me,
        "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "proc_start": _process_start(me),  # tells a later process that was given the same pid
    }
    mine = json.dumps(record).encode()
    if not _acquire(run_dir, mine):
        yield  # this process holds it already (an outer writer_lock): that one releases it
        return
    try:
        yield
    finally:
        _remove_if_unchanged(run_dir / LOCK_FILE, mine)  # a process that took it over as stale keeps its own


def _acquire(run_dir: Path, mine: bytes) -> bool:
    """Create the lock file holding ``mine``: True when created, False when this process holds it already."""
    path = run_dir / LOCK_FILE
    for _ in range(5):  # a stale lock is removed, then created anew: another process may win that race
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            held = _holder(run_dir)
            if held is None:
                continue  # its holder released it just now
            raw, other, alive = held
            if alive and other["pid"] == os.getpid():  # type: ignore[index]
                return False
            if alive:
                raise _busy(run_dir, other) from None  # type: ignore[arg-type]
            _remove_if_unchanged(path, raw)
            continue
        try:
            os.write(fd, mine)
            os.fsync(fd)
        finally:
            os.close(fd)
        return True
    raise RunError(f"{path} keeps being claimed by other processes; wait for them, then run this again")


def _remove_if_unchanged(path: Path, raw: bytes) -> None:
    """Delete the lock file if it still holds ``raw`` (not a lock another process has taken meanwhile)."""
    with contextlib.suppress(OSError):
        if path.read_bytes() == raw:
            path.unlink()


# --- reading, never writing ------------------------------------------------------------------------
@dataclass
class _Journal:
    """A read-only view of a run folder: the files of a commit past its commit point (``pending.json``) are
    read from their ``*.tmp`` until the writer has moved them into place; ``*.tmp`` files without a commit
    record are a write in progress (or debris) and are ignored. Nothing is written or deleted."""

    run_dir: Path
    pending: frozenset[str]
    stamp: tuple[int, int, int] | None  # pending.json's identity when opened: a later commit replaces it

    @classmethod
    def open(cls, run_dir: Path) -> _Journal:
        path = run_dir / PENDING_FILE
        try:
            stamp, text = _stamp(path), path.read_text()
        except FileNotFoundError:  # no commit under way (or it was finished just now)
            return cls(run_dir, frozenset(), None)
        except (OSError, ValueError) as exc:
            raise RunError(f"{path} cannot be read ({_why(exc)}); {RESTORE}") from exc
        try:
            names = json.loads(text)
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise ValueError("not a list of file names")
            if any(Path(n).is_absolute() or ".." in Path(n).parts for n in names):
                raise ValueError("it names files outside the run folder")
        except ValueError as exc:
            raise RunError(
                f"{path}, the record of a checkpoint being committed, is damaged ({_why(exc)}), so which checkpoint "
                f"is the last cannot be told; {RESTORE}"
            ) from exc
        return cls(run_dir, frozenset(names), stamp)

    def unchanged(self) -> bool:
        """Whether pending.json is as it was when opened (else a writer moved on during the read)."""
        try:
            return _stamp(self.run_dir / PENDING_FILE) == self.stamp
        except FileNotFoundError:
            return self.stamp is None

    def candidates(self, name: str) -> list[Path]:
        """Where ``name`` is, in the order to try: its *.tmp first while its commit is pending."""
        target = self.run_dir / name
        return [target.with_name(target.name + ".tmp"), target] if name in self.pending else [target]

    def exists(self, name: str) -> bool:
        return any(os.path.lexists(path) for path in self.candidates(name))

    def read(self, name: str) -> tuple[Path, bytes]:
        """(the file read, its bytes); RunError when it is missing or unreadable."""
        for path in self.candidates(name):
            with contextlib.suppress(FileNotFoundError):  # a *.tmp the writer moved into place meanwhile
                return path, _read_bytes(path)
        raise RunError(f"{self.run_dir / name} does not exist: is this a finished aediff run folder?")


def _stamp(path: Path) -> tuple[int, int, int]:
    stat = path.stat()
    return stat.st_ino, stat.st_mtime_ns, stat.st_ctime_ns


def _why(exc: BaseException) -> str:
    """An exception's message on one line (the CLI prints errors as one line)."""
    text = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return " ".join(text.split()) or type(exc).__name__


def _read_bytes(path: Path) -> bytes:
    """A file's bytes; FileNotFoundError passes, anything else unreadable is a RunError."""
    if path.is_dir():
        raise RunError(f"{path} is a folder, not a file; {RESTORE}")
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise RunError(f"{path} cannot be read ({_why(exc)}); check its permissions, or {RESTORE}") from exc


def _header(path: Path, data: bytes, size: int) -> dict[str, Any]:
    """The JSON header of safetensors bytes ``data`` (a whole file of ``size`` bytes, or its start), checked
    against that size: a file cut short or padded, or not safetensors at all, is a RunError."""

    def damaged(why: str) -> RunError:
        return RunError(f"{path} is not a valid safetensors file ({why}); {RESTORE}")

    length = int.from_bytes(data[:8], "little") if len(data) >= 8 else 0
    if not 2 <= length <= 100 << 20:
        raise damaged(f"{size} bytes that do not start with a safetensors header")
    if length > size - 8:
        raise damaged(f"cut short: {size} bytes, where its header alone takes {8 + length}")
    try:
        header = json.loads(data[8 : 8 + length])
    except (ValueError, UnicodeDecodeError) as exc:
        raise damaged(f"its header is not JSON: {_why(exc)}") from exc
    if not isinstance(header, dict):
        raise damaged("its header is not a JSON object")
    try:
        ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
    except (KeyError, TypeError, IndexError, ValueError) as exc:
        raise damaged(f"its header lacks tensor offsets: {_why(exc)}") from exc
    expected = 8 + length + max(ends, default=0)
    if expected != size:
        raise damaged(f"{size} bytes where its header describes {expected}: cut short or overwritten")
    return header


def _step(header: dict[str, Any], path: Path) -> int | None:
    """The checkpoint step a safetensors header records in its metadata ({"step": "N"}); None when none."""
    meta = header.get("__metadata__")
    step = meta.get("step") if isinstance(meta, dict) else None
    if step is None:
        return None
    if not (isinstance(step, str) and step.isascii() and step.isdigit()):
        raise RunError(f"{path}: its step metadata {step!r} is not a whole number; {RESTORE}")
    return int(step)


def _read_weights(journal: _Journal, name: str) -> tuple[Path, dict[str, torch.Tensor], int | None]:
    """(the file read, its tensors checked finite, its step) of the safetensors file ``name``."""
    path, tensors, step = _read_weights_unchecked(journal, name)
    check_finite_weights(tensors, str(path))
    return path, tensors, step


def _file_step(journal: _Journal, name: str) -> int | None:
    """The step a checkpoint's safetensors file records, from its header alone (checked against its size);
    None when the file is absent or records none."""
    for path in journal.candidates(name):
        if path.is_dir():
            raise RunError(f"{path} is a folder, not a file; {RESTORE}")
        try:
            with open(path, "rb") as f:  # one open file: its size and header belong to the same version
                size = os.fstat(f.fileno()).st_size
                head = f.read(8)
                length = int.from_bytes(head, "little") if len(head) == 8 else 0
                data = head + f.read(length) if 2 <= length <= min(size - 8, 100 << 20) else head
        except FileNotFoundError:
            continue  # a *.tmp the writer moved into place meanwhile, or a file this checkpoint lacks
        except OSError as exc:
            raise RunError(f"{path} cannot be read ({_why(exc)}); check its permissions, or {RESTORE}") from exc
        return _step(_header(path, data, size), path)
    return None


def check_finite_weights(tensors: dict[str, torch.Tensor], where: str, fix: str = RESTORE) -> None:
    """RunError naming ``where`` and the first bad tensor unless every floating-point tensor is finite and within
    ±MAX_ABS_WEIGHT (trained weights stay within a few units; a flipped exponent bit does not). One device
    sync for all tensors; ``fix``: what the message tells to do (the trainer checks before saving, too)."""
    named = [(k, v.detach()) for k, v in tensors.items() if v.is_floating_point() and v.numel()]
    if not named:
        return
    peaks = torch.stack([v.abs().max().float().cpu() for _, v in named])
    if bool((peaks <= MAX_ABS_WEIGHT).all()):  # NaN fails the comparison too
        return
    for (name, value), peak in zip(named, peaks.tolist(), strict=True):
        if not peak <= MAX_ABS_WEIGHT:
            if bool(torch.isnan(value).any()):
                what = "NaN"
            elif math.isinf(peak):
                what = "infinite values"
            else:
                what = f"{peak:.3g}, beyond the ±{MAX_ABS_WEIGHT:g} no trained weight reaches"
            raise RunError(f"{where}: tensor {name!r} holds {what}: the weights are damaged; {fix}")


def load_weights(model: torch.nn.Module, path: str | Path, fix: str = RESTORE) -> None:
    """Load the safetensors file ``path`` into ``model`` after checking it: whole, the names and shapes the
    model has, every value finite and sane (RunError naming the file and the first bad tensor)."""
    path = Path(path)
    tensors = read_tensors(path)
    _check_shapes(model, tensors, path)
    check_finite_weights(tensors, str(path), fix)
    model.load_state_dict(tensors)


def read_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """safetensors file -> dict of CPU tensors, with a clear error for a missing, unreadable or damaged file
    (its header is checked against its size). The values are not checked: see ``check_finite_weights``."""
    path = Path(path)
    journal = _Journal(path.parent, frozenset(), None)
    return _read_weights_unchecked(journal, path.name)[1]


def _read_weights_unchecked(journal: _Journal, name: str) -> tuple[Path, dict[str, torch.Tensor], int | None]:
    path, data = journal.read(name)
    step = _step(_header(path, data, len(data)), path)
    try:
        return path, load_safetensors_bytes(data), step
    except (SafetensorError, ValueError) as exc:
        raise RunError(f"{path} is not a valid safetensors file ({_why(exc)}); {RESTORE}") from exc


def _read_state(journal: _Journal) -> dict[str, Any] | None:
    """training_state/state.json with its counters checked (None when the run has none)."""
    if not journal.exists(STATE_FILE):
        return None
    path, data = journal.read(STATE_FILE)
    return _counters(path, data, ("step", "images_seen"), ("train_seconds", "elapsed_seconds"))


def _counters(path: Path, data: bytes, counts: tuple[str, ...], seconds: tuple[str, ...]) -> dict[str, Any]:
    """A JSON object of training counters: ``counts`` whole numbers >= 0, ``seconds`` finite numbers >= 0."""
    try:
        record = json.loads(data)
    except ValueError as exc:
        raise RunError(f"{path} is not valid JSON ({_why(exc)}); {RESTORE}") from exc
    if not isinstance(record, dict):
        raise RunError(f"{path} should hold a JSON object, not {type(record).__name__}; {RESTORE}")
    for key in counts + seconds:
        if key not in record:
            raise RunError(f"{path} lacks {key!r}; {RESTORE}")
        value = record[key]
        whole = isinstance(value, int) and not isinstance(value, bool)
        number = whole or (isinstance(value, float) and math.isfinite(value))
        if not (whole if key in counts else number) or value < 0:
            kind = "a whole number" if key in counts else "a number of seconds"
            raise RunError(f"{path}: {key!r} should be {kind} >= 0, got {json.dumps(value)}; {RESTORE}")
    return record


def _agree(run_dir: Path, steps: dict[str, int]) -> int | None:
    """The step every file of the checkpoint records; RunError naming them when they disagree."""
    if len(set(steps.values())) > 1:
        listed = ", ".join(f"{name} at step {step}" for name, step in steps.items())
        raise RunError(
            f"the checkpoint in {run_dir} mixes steps ({listed}): its files come from different checkpoints; {RESTORE}"
        )
    return next(iter(steps.values()), None)


def _checkpoint_steps(journal: _Journal, known: dict[str, int | None]) -> dict[str, int]:
    """file -> step of every file of the checkpoint that records one (``known``: those read already)."""
    steps = {}
    for name in CHECKPOINT_WEIGHTS:
        step = known[name] if name in known else _file_step(journal, name)
        if step is not None:
            steps[name] = step
    state = _read_state(journal)
    if state is not None:
        steps[STATE_FILE] = state["step"]
    return steps


def check_checkpoint_consistent(run_dir: str | Path) -> int | None:
    """The step of ``run_dir``'s last checkpoint, after checking that its files (model, EMA, optimizer: their
    safetensors headers; training_state/state.json) are whole and agree on it; None when none records a step.
    Read-only (a pending commit is read through its *.tmp files); RunError naming the files otherwise."""
    run_dir = Path(run_dir)
    return _read_consistently(run_dir, lambda journal: _agree(run_dir, _checkpoint_steps(journal, {})))


def _read_consistently(run_dir: Path, read: Callable[[_Journal], T]) -> T:
    """``read(journal)``; read again while a live writer changes the folder under it (a read that straddled
    two checkpoints, or a *.tmp the writer had moved on from), for up to READ_AGAIN_SECONDS."""
    deadline = time.monotonic() + READ_AGAIN_SECONDS
    while True:
        journal = _Journal.open(run_dir)
        try:
            result = read(journal)
        except RunError:
            if time.monotonic() > deadline or live_writer(run_dir) in (None, os.getpid()):
                raise
        else:
            if journal.unchanged():
                return result
            if time.monotonic() > deadline:
                raise RunError(f"{run_dir} kept changing while it was read; try again")
        time.sleep(0.05)


# --- tensors <-> bytes -------------------------------------------------------------------------
def tensors_to_bytes(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> bytes:
    """A flat dict of tensors -> safetensors bytes (tensors copied to contiguous CPU memory)."""
    return save_safetensors_bytes({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, metadata)


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


def run_owning(path: str | Path) -> Path | None:
    """The run folder of which ``path`` is one of its own files (OWN_FILES, or inside OWN_FOLDERS), or None:
    what no command's --out may overwrite."""
    path = Path(path).resolve()
    if path.name in OWN_FILES and (path.parent / CONFIG_FILE).is_file():
        return path.parent
    return next((f.parent for f in path.parents if f.name in OWN_FOLDERS and (f.parent / CONFIG_FILE).is_file()), None)


def read_run_config(run_dir: str | Path) -> dict[str, Any]:
    """config.json of a run folder as written (any format version), checked enough to rebuild the model.
    Read-only: a commit cut short is read through its journal, not finished (that is ``recover``'s job)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunError(f"run folder {run_dir} does not exist; train one with `aediff train FAMILY --out {run_dir}`")
    return _read_config(_Journal.open(run_dir))


def _read_config(journal: _Journal) -> dict[str, Any]:
    run_dir, path = journal.run_dir, journal.run_dir / CONFIG_FILE
    if not journal.exists(CONFIG_FILE):
        if (run_dir / "unet" / CONFIG_FILE).is_file():
            raise RunError(
                f"{run_dir} is a diffusers UNet2DModel folder, not an aediff run: it can be sampled and scored "
                f"(aediff sample / eval, compare --peer), not trained or reused as one of the family"
            )
        raise RunError(f"{run_dir} has no {CONFIG_FILE}: it is not an aediff run folder")
    path, data = journal.read(CONFIG_FILE)
    try:
        config = json.loads(data)
    except ValueError as exc:
        raise RunError(f"{path} is not valid JSON ({_why(exc)}); the run folder is damaged: {RESTORE}") from exc
    if not isinstance(config, dict):
        raise RunError(
            f"{path} should hold a JSON object, not {type(config).__name__}; the run folder is damaged: {RESTORE}"
        )
    _check_config_entries(config, path, run_dir)
    return config


def _check_config_entries(config: dict[str, Any], path: Path, run_dir: Path) -> None:
    """format_version, family and model: what choosing and rebuilding the model needs (the values of the
    model's fields are checked by its typed config)."""
    version = config.get("format_version", 1)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise RunError(f"{path}: format_version must be a whole number >= 1, got {json.dumps(version)}; {RESTORE}")
    if version > FORMAT_VERSION:
        raise RunError(f"{run_dir} was written by a newer aediff (format {version}); upgrade aediff")
    for key in ("family", "model"):
        if key not in config:
            raise RunError(f"{path} lacks the {key!r} entry; the run folder is incomplete: {RESTORE}")
    family = config["family"]
    if not isinstance(family, str):
        raise RunError(f"{path}: 'family' should be a model family name, got {json.dumps(family)}; {RESTORE}")
    if family not in MODELS:
        raise RunError(
            f"{path}: unknown model family {family!r} (this aediff knows {', '.join(sorted(MODELS))}): a run of "
            f"another tool or a newer aediff; upgrade aediff, or {RESTORE}"
        )
    if not isinstance(config["model"], dict):
        raise RunError(
            f"{path}: 'model' should be a JSON object of the model's settings, got {json.dumps(config['model'])}; "
            f"{RESTORE}"
        )


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
    training state, a snapshot record nor a log. RunError naming the file when the one it reads is damaged."""
    return _summary(_Journal.open(Path(run_dir)), batch_size)


def _summary(journal: _Journal, batch_size: int) -> TrainingSummary | None:
    counts, seconds = ("step", "images_seen"), ("train_seconds", "elapsed_seconds")
    state = _read_state(journal)
    if state is None and journal.exists(SNAPSHOT_FILE):  # a snapshot keeps no training state, only this
        state = _counters(*journal.read(SNAPSHOT_FILE), counts, seconds)
    if state is not None:
        return TrainingSummary(
            state["step"], state["images_seen"], float(state["train_seconds"]), float(state["elapsed_seconds"])
        )
    if not journal.exists(LOG_FILE):
        return None
    path, data = journal.read(LOG_FILE)
    lines = data.decode(errors="replace").strip().splitlines()
    if not lines:
        return None
    last = _counters(path, lines[-1].encode(), ("step",), ("train_seconds",))
    steps, train_seconds = last["step"], float(last["train_seconds"])
    return TrainingSummary(steps, steps * batch_size, train_seconds, train_seconds)


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
    """The typed ``cls`` config from config.json's entry; RunError naming the file when it is not valid."""
    try:
        return config_from_dict(cls, stored if stored is not None else {})
    except (AediffError, TypeError, ValueError) as exc:  # values of a damaged or hand-edited file
        raise RunError(f"{where}: the {what} config is not valid ({_why(exc)}); fix it, or {RESTORE}") from exc


def _build(stored: dict[str, Any], where: Path) -> tuple[type[Model], Any, Model]:
    """(class, typed config, model with fresh weights) from config.json's family and model entries."""
    cls = model_class(stored["family"])
    version = stored.get("format_version", 1)
    try:
        upgraded = cls.upgrade_config(stored["model"], version)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:  # an old format's fields, damaged
        raise RunError(
            f"{where}: the model config of format {version} cannot be read ({_why(exc)}); {RESTORE}"
        ) from exc
    model_config = _typed(cls.config_class, upgraded, where, "model")
    try:
        check_model_size(cls, model_config)  # before anything is allocated: config.json may ask for terabytes
        return cls, model_config, cls(model_config)
    except AediffError as exc:
        raise RunError(f"{where}: the model config is not valid ({_why(exc)}); fix it, or {RESTORE}") from exc


def _check_shapes(model: Model, tensors: dict[str, torch.Tensor], file: Path) -> None:
    """RunError naming the first tensor that the model config.json describes lacks, has not, or shapes otherwise."""
    expected = model.state_dict()
    missing, unexpected = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise RunError(
            f"{file} does not match the model in {CONFIG_FILE}: missing {missing[:5]}, unexpected {unexpected[:5]}; "
            f"the weights and {CONFIG_FILE} come from different runs: {RESTORE}"
        )
    for name, tensor in tensors.items():
        if tensor.shape != expected[name].shape:
            raise RunError(
                f"{file}: tensor {name!r} has shape {list(tensor.shape)} where the model in {CONFIG_FILE} has "
                f"{list(expected[name].shape)}; the weights and {CONFIG_FILE} come from different runs: {RESTORE}"
            )


def load(path: str | Path, weights: str = "ema", device: str | torch.device | None = None) -> Run:
    """Rebuild a run's model from its folder alone, in eval mode, and return it with its configs.

    path: a run folder, or ``hf://owner/name[@revision]``: a run on the Hugging Face Hub (fetched into, or
    offline found in, the local Hugging Face cache; ``aediff.export.hub_resolve``).
    weights: "ema" (the moving average, used for sampling; falls back to "model" when absent) or "model".

    Never writes to the folder: a read-only folder loads, and so does one a training is writing (a commit
    past its commit point is read through its journal). Refused with a RunError naming the file: a damaged
    or foreign config.json, weights that are cut short, not finite or do not fit the config, and checkpoint
    files that disagree on their step.
    """
    if weights not in ("ema", "model"):
        raise RunError(f"weights must be 'ema' or 'model', got {weights!r}")
    if str(path).startswith("hf:/"):
        from aediff.export.hub_resolve import resolve  # needs huggingface_hub only when used

        path = resolve(path)
    run_dir = Path(path)
    if (run_dir / "unet" / "config.json").is_file():  # a diffusers UNet2DModel + scheduler folder
        return _load_diffusers(run_dir, device)
    if not run_dir.is_dir():
        raise RunError(f"run folder {run_dir} does not exist; train one with `aediff train FAMILY --out {run_dir}`")
    run = _read_consistently(run_dir, lambda journal: _read_run(journal, weights))
    run.model = run.model.to(device or default_device()).eval()
    return run


def _read_run(journal: _Journal, weights: str) -> Run:
    """One read of the run folder behind ``journal`` (the model on the CPU)."""
    run_dir = journal.run_dir
    stored = _read_config(journal)
    where = run_dir / CONFIG_FILE
    cls, model_config, model = _build(stored, where)
    name = EMA_FILE if weights == "ema" else MODEL_FILE
    if weights == "ema" and not journal.exists(EMA_FILE):
        name, weights = MODEL_FILE, "model"
    file, tensors, step = _read_weights(journal, name)
    _check_shapes(model, tensors, file)
    model.load_state_dict(tensors)
    _agree(run_dir, _checkpoint_steps(journal, {name: step}))  # and the other weights file is whole
    training = _typed(TrainConfig, stored.get("training"), where, "training")
    data = _typed(DataConfig, stored["data"], where, "data") if stored.get("data") is not None else None
    return Run(
        model=model,
        path=run_dir,
        family=cls.family,
        config=model_config,
        training=training,
        data=data,
        summary=_summary(journal, training.batch_size),
        format_version=stored.get("format_version", 1),
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
