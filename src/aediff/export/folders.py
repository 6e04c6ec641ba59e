"""The folder an export writes into: refused when it holds anything, unless --overwrite; then only the
export's own earlier files are removed."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

from aediff.errors import ConfigError


def prepare_out(out: str | Path, overwrite: bool, owned: Sequence[str]) -> Path:
    """The folder ``out``, ready for an export: ConfigError if it is a file, or holds anything and not
    ``overwrite``; with ``overwrite`` the paths matching the glob patterns ``owned`` (what this kind of
    export writes: files or folders) are removed first, and nothing else is touched."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; name a folder to export into")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise ConfigError(
                f"--out {out} exists and is not empty; pass --overwrite to replace it, or choose another --out"
            )
        for pattern in owned:
            for old in out.glob(pattern):
                shutil.rmtree(old) if old.is_dir() else old.unlink()
    return out
