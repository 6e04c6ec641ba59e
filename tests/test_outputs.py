"""Files written where the user names them: the extension chooses the format (any case), an extension aediff
cannot write is refused before any work, and a failure while writing leaves the old file or none."""

from __future__ import annotations

import errno

import numpy as np
import pytest
import torch

from aediff.data import save_image_grid
from aediff.errors import ConfigError
from aediff.outputs import output_suffix, write_bytes_whole, written_whole


@pytest.mark.parametrize(("name", "suffix"), [("s.png", ".png"), ("s.PNG", ".png"), ("z.NpZ", ".npz")])
def test_the_extension_chooses_the_format_in_any_case(tmp_path, name, suffix):
    assert output_suffix(tmp_path / name, (".png", ".npz")) == suffix


@pytest.mark.parametrize(("name", "said"), [("o.txt", "'.txt'"), ("noext", "no extension"), ("z.npz", "'.npz'")])
def test_an_extension_aediff_cannot_write_is_refused_naming_the_ones_it_can(tmp_path, name, said):
    with pytest.raises(ConfigError, match="aediff writes .png \\(a PNG image\\) here") as caught:
        output_suffix(tmp_path / name, (".png",))
    assert said in str(caught.value)


class DiskFull(OSError):
    def __init__(self):
        super().__init__(errno.ENOSPC, "No space left on device")


def test_a_failure_while_writing_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "metrics.json"
    path.write_bytes(b"old")
    with pytest.raises(OSError) as caught, written_whole(path) as f:
        f.write(b"half of the new")
        raise DiskFull()
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(path)  # the CLI's line names it
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_a_failure_on_a_new_name_leaves_nothing(tmp_path, monkeypatch):
    """A full disk during `aediff encode` once left a 0-byte z.npz."""

    def full(file, **arrays):
        file.write(b"PK")
        raise DiskFull()

    monkeypatch.setattr(np, "savez_compressed", full)
    with pytest.raises(OSError, match="No space left"), written_whole(tmp_path / "z.npz") as f:
        np.savez_compressed(f, latents=np.zeros(3))
    assert list(tmp_path.iterdir()) == []


def test_a_whole_write_replaces_the_file_with_the_users_permissions(tmp_path):
    path = tmp_path / "out.json"
    path.write_bytes(b"old")
    write_bytes_whole(path, b"new")
    assert path.read_bytes() == b"new" and path.stat().st_mode & 0o044  # readable by others, as write_text makes it


def test_an_image_grid_is_written_whole(tmp_path, monkeypatch):
    from PIL import Image

    path = tmp_path / "grid.png"
    save_image_grid(torch.zeros(4, 1, 8, 8), path)
    first = path.read_bytes()

    def broken(self, fp, format=None, **params):
        fp.write(b"\x89PNG")
        raise DiskFull()

    monkeypatch.setattr(Image.Image, "save", broken)
    with pytest.raises(OSError, match="No space left"):
        save_image_grid(torch.ones(4, 1, 8, 8), path)
    assert path.read_bytes() == first and [p.name for p in tmp_path.iterdir()] == ["grid.png"]


@pytest.mark.parametrize("existing", [False, True])
def test_a_full_disk_during_encode_leaves_the_old_file_or_none_and_says_which(tmp_path, existing):
    """As a user meets it: `aediff encode` when the disk fills (here a file-size limit: the write fails with
    EFBIG, as with ENOSPC). Once it left a 0-byte z.npz; now one error line names the file, and what was there
    before is still there."""
    import resource
    import subprocess
    import sys
    from pathlib import Path

    out = tmp_path / "z.npz"
    if existing:
        out.write_bytes(b"an earlier result")

    def limit_file_size():
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

    run = Path(__file__).parent / "fixtures" / "v1-runs" / "ae"
    args = ["encode", str(run), "--data", "digits", "--out", str(out), *(["--overwrite"] if existing else [])]
    aediff = str(Path(sys.executable).with_name("aediff"))
    done = subprocess.run([aediff, *args], capture_output=True, text=True, preexec_fn=limit_file_size, timeout=300)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [f"error: File too large ({out})"]
    assert sorted(p.name for p in tmp_path.iterdir()) == (["z.npz"] if existing else [])
    assert not existing or out.read_bytes() == b"an earlier result"
