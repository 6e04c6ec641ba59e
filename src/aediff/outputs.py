"""The files aediff writes where a user names them (--out): the format the name asks for, and each file written
whole or not at all.

A name's extension chooses its format, in any case (``z.NPZ`` is NumPy arrays), and an extension aediff cannot
write there is refused before any work, naming the ones it can. Every such file is written to a temporary file
beside it, flushed to disk, then renamed over the name: a failure (a full disk, a crash) leaves the old file or
nothing, never a short one.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from aediff.errors import ConfigError

FORMATS = {".png": "a PNG image", ".npz": "NumPy arrays", ".json": "JSON", ".html": "an HTML page"}


def output_suffix(path: Path, accepted: tuple[str, ...], option: str = "--out") -> str:
    """The format ``path`` asks for: its extension, lower-cased, when it is one of ``accepted`` (".png", ...);
    otherwise a ConfigError naming the ones accepted."""
    suffix = path.suffix.lower()
    if suffix in accepted:
        return suffix
    can = " or ".join(f"{s} ({FORMATS[s]})" for s in accepted)
    named = f"has the extension {path.suffix!r}" if path.suffix else "has no extension"
    raise ConfigError(f"{option} {path} {named}; aediff writes {can} here: end the name with {' or '.join(accepted)}")


@contextlib.contextmanager
def written_whole(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """A binary file to write ``path``'s bytes to: on leaving the block without an error they are flushed to
    disk and renamed over ``path`` (atomic on POSIX); on an error the temporary file is removed and ``path`` is
    as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.filename is None:  # a write to the open file: name the file it was for
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
        raise


def write_bytes_whole(path: str | os.PathLike, data: bytes) -> None:
    """``path.write_bytes(data)``, written whole or not at all."""
    with written_whole(path) as f:
        f.write(data)


def _read_umask() -> int:
    """The process's umask (mkstemp makes files 0600; what the user gets should follow their umask). Read once:
    reading it means setting it, which would race with another thread creating a file."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()
