"""One writer at a time: a run folder's ``writer.lock`` ({"pid", "host", "started"}), taken by a training
before it writes anything and checked by every other writer (and by readers that wait out a live one)."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from aediff.errors import RunError
from aediff.runs.format import LOCK_FILE


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


def refuse_other_writer(run_dir: Path) -> None:
    """RunError naming the other live process that holds ``run_dir``'s lock, if one does."""
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
