"""The crash-safe journal: checkpoints are written so that a crash or Ctrl-C at any moment leaves the last
good checkpoint intact, and read so that a reader never writes and never sees half a checkpoint.

Every file is first written in full beside its target (``*.tmp``, fsync'd), then ``pending.json`` is written
atomically as the commit record, then the files are moved into place and the record removed. A writer
(``recover``, under ``writer_lock``) rolls an interrupted commit forward (record present) or discards it (record
absent). Readers never write: they read a commit past its commit point through its ``*.tmp`` files
(``Journal``), and read again when a live writer moved on while they read (``read_consistently``).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from aediff.errors import RunError
from aediff.runs.format import PENDING_FILE, RESTORE, STATE_DIR, one_line
from aediff.runs.lock import live_writer, refuse_other_writer

READ_AGAIN_SECONDS = 10.0  # how long a reader keeps re-reading a folder that a live writer changes under it
T = TypeVar("T")


# --- atomic, journaled writes ----------------------------------------------------------------
def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def fsync_dir(path: Path) -> None:
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
    refuse_other_writer(run_dir)
    for name, data in files.items():
        target = run_dir / name
        target.parent.mkdir(parents=True, exist_ok=True)
        _write_synced(target.with_name(target.name + ".tmp"), data)
    pending = run_dir / PENDING_FILE
    _write_synced(pending.with_name(PENDING_FILE + ".tmp"), json.dumps(sorted(files)).encode())
    os.replace(pending.with_name(PENDING_FILE + ".tmp"), pending)  # the commit point
    fsync_dir(run_dir)
    _finish_commit(run_dir, sorted(files))


def _finish_commit(run_dir: Path, names: list[str]) -> None:
    for name in names:
        tmp = run_dir / (name + ".tmp")
        if tmp.exists():
            os.replace(tmp, run_dir / name)
    for folder in {(run_dir / name).parent for name in names}:
        fsync_dir(folder)
    (run_dir / PENDING_FILE).unlink(missing_ok=True)
    fsync_dir(run_dir)


def recover(run_dir: str | Path) -> None:
    """Finish a commit that was interrupted after its commit point, or drop one that was not (writers only).

    Readers never call this (``load`` reads through the journal instead). It refuses while another live
    process holds the folder's ``writer_lock`` (its ``*.tmp`` files are a write in progress, not debris), and
    when there is something to repair in a folder this process cannot write."""
    run_dir = Path(run_dir)
    refuse_other_writer(run_dir)
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
        names = Journal.open(run_dir).pending
        _finish_commit(run_dir, sorted(names))
    for tmp in debris:
        tmp.unlink(missing_ok=True)


# --- reading, never writing ------------------------------------------------------------------------
@dataclass
class Journal:
    """A read-only view of a run folder: the files of a commit past its commit point (``pending.json``) are
    read from their ``*.tmp`` until the writer has moved them into place; ``*.tmp`` files without a commit
    record are a write in progress (or debris) and are ignored. Nothing is written or deleted."""

    run_dir: Path
    pending: frozenset[str]
    stamp: tuple[int, int, int] | None  # pending.json's identity when opened: a later commit replaces it

    @classmethod
    def open(cls, run_dir: Path) -> Journal:
        path = run_dir / PENDING_FILE
        try:
            stamp, text = _stamp(path), path.read_text()
        except FileNotFoundError:  # no commit under way (or it was finished just now)
            return cls(run_dir, frozenset(), None)
        except (OSError, ValueError) as exc:
            raise RunError(f"{path} cannot be read ({one_line(exc)}); {RESTORE}") from exc
        try:
            names = json.loads(text)
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise ValueError("not a list of file names")
            if any(Path(n).is_absolute() or ".." in Path(n).parts for n in names):
                raise ValueError("it names files outside the run folder")
        except ValueError as exc:
            raise RunError(
                f"{path}, the record of a checkpoint being committed, is damaged ({one_line(exc)}), so which "
                f"checkpoint is the last cannot be told; {RESTORE}"
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
                return path, read_bytes(path)
        raise RunError(f"{self.run_dir / name} does not exist: is this a finished aediff run folder?")


def _stamp(path: Path) -> tuple[int, int, int]:
    stat = path.stat()
    return stat.st_ino, stat.st_mtime_ns, stat.st_ctime_ns


def read_bytes(path: Path) -> bytes:
    """A file's bytes; FileNotFoundError passes, anything else unreadable is a RunError."""
    if path.is_dir():
        raise RunError(f"{path} is a folder, not a file; {RESTORE}")
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise RunError(f"{path} cannot be read ({one_line(exc)}); check its permissions, or {RESTORE}") from exc


def read_consistently(run_dir: Path, read: Callable[[Journal], T]) -> T:
    """``read(journal)``; read again while a live writer changes the folder under it (a read that straddled
    two checkpoints, or a *.tmp the writer had moved on from), for up to READ_AGAIN_SECONDS."""
    deadline = time.monotonic() + READ_AGAIN_SECONDS
    while True:
        journal = Journal.open(run_dir)
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
