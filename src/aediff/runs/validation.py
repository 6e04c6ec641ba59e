"""Reading a run folder's files, each checked: safetensors headers against their sizes, weights finite and of
the shapes the model has, config.json's entries, the training counters, and every file of a checkpoint on the
same step. A damaged file is a RunError naming it and what to do (never a traceback from deep inside a reader).
Every file of a checkpoint records its step (safetensors metadata, state.json), and a checkpoint whose files
disagree on it is refused."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors_bytes

from aediff.errors import RunError
from aediff.models import MODELS, Model
from aediff.runs.format import (
    CHECKPOINT_WEIGHTS,
    CONFIG_FILE,
    DIGEST_KEY,
    FORMAT_VERSION,
    LOG_FILE,
    RESTORE,
    SNAPSHOT_FILE,
    STATE_FILE,
    content_digest,
    one_line,
)
from aediff.runs.journal import Journal, read_consistently, write_files_atomically

# Trained weights and buffers of every family stay within a few units (the largest seen: ~4, an AE's latent
# Gaussian); a flipped exponent bit makes 1e19..1e38 or inf. 1e6 leaves ample room and catches those.
MAX_ABS_WEIGHT = 1e6
# What to do about weights whose bytes changed after they were written (a disk, a copy, a transfer):
CHECKSUM_FIX = "copy or download the run again, resume from a kept checkpoint (RUN/checkpoints) or retrain"


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
        raise damaged(f"its header is not JSON: {one_line(exc)}") from exc
    if not isinstance(header, dict):
        raise damaged("its header is not a JSON object")
    try:
        ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
    except (KeyError, TypeError, IndexError, ValueError) as exc:
        raise damaged(f"its header lacks tensor offsets: {one_line(exc)}") from exc
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


def weights_in(journal: Journal, name: str) -> tuple[Path, dict[str, torch.Tensor], int | None]:
    """(the file read, its tensors checked finite, its step) of the safetensors file ``name``."""
    path, tensors, step = _read_weights_unchecked(journal, name)
    check_finite_weights(tensors, str(path))
    return path, tensors, step


def _file_step(journal: Journal, name: str) -> int | None:
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
            raise RunError(f"{path} cannot be read ({one_line(exc)}); check its permissions, or {RESTORE}") from exc
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
    check_shapes(model, tensors, path)
    check_finite_weights(tensors, str(path), fix)
    model.load_state_dict(tensors)


def read_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """safetensors file -> dict of CPU tensors, with a clear error for a missing, unreadable or damaged file
    (its header is checked against its size). The values are not checked: see ``check_finite_weights``."""
    path = Path(path)
    journal = Journal(path.parent, frozenset(), None)
    return _read_weights_unchecked(journal, path.name)[1]


def _read_weights_unchecked(journal: Journal, name: str) -> tuple[Path, dict[str, torch.Tensor], int | None]:
    """(the file read, its tensors, its step): whole, and equal to the checksum it was written with, if any
    (``has_checksum`` tells a file written before checksums); the values themselves are not checked."""
    path, data = journal.read(name)
    header = _header(path, data, len(data))
    step = _step(header, path)
    recorded = (header.get("__metadata__") or {}).get(DIGEST_KEY)
    if recorded is not None and recorded != content_digest(data):
        raise RunError(f"{path}: its bytes differ from the checksum they were written with (damaged); {CHECKSUM_FIX}")
    try:
        return path, load_safetensors_bytes(data), step
    except (SafetensorError, ValueError) as exc:
        raise RunError(f"{path} is not a valid safetensors file ({one_line(exc)}); {RESTORE}") from exc


def has_checksum(path: Path) -> bool:
    """Whether the weights file ``path`` records its checksum (every file aediff writes since issue 29 does;
    one from before loads unverified). Reads the header alone."""
    with open(path, "rb") as f:
        length = int.from_bytes(f.read(8), "little")
        head = f.read(min(length, 100 << 20))
    try:
        meta = json.loads(head).get("__metadata__") or {}
    except (ValueError, UnicodeDecodeError, AttributeError):
        return False
    return DIGEST_KEY in meta


def _read_state(journal: Journal) -> dict[str, Any] | None:
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
        raise RunError(f"{path} is not valid JSON ({one_line(exc)}); {RESTORE}") from exc
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


def agreed_step(run_dir: Path, steps: dict[str, int]) -> int | None:
    """The step every file of the checkpoint records; RunError naming them when they disagree."""
    if len(set(steps.values())) > 1:
        listed = ", ".join(f"{name} at step {step}" for name, step in steps.items())
        raise RunError(
            f"the checkpoint in {run_dir} mixes steps ({listed}): its files come from different checkpoints; {RESTORE}"
        )
    return next(iter(steps.values()), None)


def checkpoint_steps(journal: Journal, known: dict[str, int | None]) -> dict[str, int]:
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
    return read_consistently(run_dir, lambda journal: agreed_step(run_dir, checkpoint_steps(journal, {})))


# --- config.json ---------------------------------------------------------------------------------
def write_run_config(run_dir: str | Path, config: dict[str, Any]) -> None:
    """Write config.json atomically (``config`` holds family, model, training, data)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    payload = {"format_version": FORMAT_VERSION, **config}
    write_files_atomically(run_dir, {CONFIG_FILE: json.dumps(payload, indent=2).encode()})


def read_run_config(run_dir: str | Path) -> dict[str, Any]:
    """config.json of a run folder as written (any format version), checked enough to rebuild the model.
    Read-only: a commit cut short is read through its journal, not finished (that is ``recover``'s job)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunError(f"run folder {run_dir} does not exist; train one with `aediff train FAMILY --out {run_dir}`")
    return config_in(Journal.open(run_dir))


def config_in(journal: Journal) -> dict[str, Any]:
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
        raise RunError(f"{path} is not valid JSON ({one_line(exc)}); the run folder is damaged: {RESTORE}") from exc
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
    return summary_in(Journal.open(Path(run_dir)), batch_size)


def summary_in(journal: Journal, batch_size: int) -> TrainingSummary | None:
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


def check_shapes(model: Model, tensors: dict[str, torch.Tensor], file: Path) -> None:
    """RunError naming the first tensor that the model config.json describes lacks, has not, or shapes otherwise."""
    expected = model.state_dict()
    missing, unexpected = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise RunError(
            f"{file} does not match the model in {CONFIG_FILE}: missing {missing[:5]}, unexpected {unexpected[:5]}; "
            f"the weights and {CONFIG_FILE} come from different runs: {RESTORE}"
        )
    for name, tensor in tensors.items():
        if tensor.is_floating_point() != expected[name].is_floating_point():  # int32 bits read as floats
            raise RunError(
                f"{file}: tensor {name!r} is stored as {str(tensor.dtype).removeprefix('torch.')} where the model "
                f"has {str(expected[name].dtype).removeprefix('torch.')}; the file was not written by this model: "
                f"{RESTORE}"
            )
        if tensor.shape != expected[name].shape:
            raise RunError(
                f"{file}: tensor {name!r} has shape {list(tensor.shape)} where the model in {CONFIG_FILE} has "
                f"{list(expected[name].shape)}; the weights and {CONFIG_FILE} come from different runs: {RESTORE}"
            )
