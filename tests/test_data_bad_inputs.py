"""Bad data inputs (a fault campaign's findings): every reader refuses them with one DataError naming the file,
never another exception type, never a silently mangled dataset.

Each case builds its input in a temporary folder: metadata entries leading outside the dataset, non-UTF-8
metadata, a .npy renamed .npz, garbage bytes, truncated files, empty sets, mixed shapes. A third of them also
run through the CLI as a user types them. Symlink loops and 16-bit / float / palette / CMYK images must load
with the right contents; hypothesis feeds arbitrary bytes to each reader.
"""

from __future__ import annotations

import codecs
import io
import json
import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from aediff.data import ImageDataset, check_captions_available, load_dataset
from aediff.errors import DataError


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path, monkeypatch):
    """No test may see the user's data folders or write into ~/.cache."""
    monkeypatch.delenv("AEDIFF_DATA", raising=False)
    monkeypatch.setenv("AEDIFF_CACHE", str(tmp_path / "cache"))


def png(path: Path, value: int = 0, size: tuple[int, int] = (4, 4), mode: str = "L") -> Path:
    """A small solid image at ``path`` (parents made); ``value`` is an int for L, a tuple for colour modes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value).save(path)
    return path


def png_bytes(value: int = 0, size: tuple[int, int] = (4, 4), mode: str = "L") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, value).save(buf, format="PNG")
    return buf.getvalue()


def npz_bytes(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------------------
# the table of bad inputs: each maker builds one in ``d`` and returns (spec, the path the message must name)
# ---------------------------------------------------------------------------------------------------------


def _folder_with_metadata(d: Path, name: str, content: bytes | str) -> tuple[str, Path]:
    root = d / "set"
    png(root / "a.png")
    png(d / "outside.png", 200)  # a real image next to the dataset, which an entry must not reach
    meta = root / name
    meta.write_bytes(content.encode() if isinstance(content, str) else content)
    return f"folder:{root}", meta


def _jsonl(entry: str) -> Callable[[Path], tuple[str, Path]]:
    return lambda d: _folder_with_metadata(
        d, "metadata.jsonl", json.dumps({"file_name": "a.png", "text": "ok"}) + "\n" + entry + "\n"
    )


def _symlink_out(d: Path) -> tuple[str, Path]:
    spec, meta = _folder_with_metadata(d, "metadata.jsonl", json.dumps({"file_name": "b.png", "text": "x"}) + "\n")
    os.symlink(d / "outside.png", d / "set" / "b.png")  # inside by name, outside once the link is resolved
    return spec, meta


def _latin1(name: str, head: str) -> Callable[[Path], tuple[str, Path]]:
    return lambda d: _folder_with_metadata(d, name, (head + "a.png,café crème\n").encode("latin-1"))


def _npz_file(content: bytes) -> Callable[[Path], tuple[str, Path]]:
    def make(d: Path) -> tuple[str, Path]:
        (d / "data.npz").write_bytes(content)
        return f"npz:{d / 'data.npz'}", d / "data.npz"

    return make


def _npy_as_npz(d: Path) -> tuple[str, Path]:
    np.save(d / "data.npy", np.zeros((3, 4, 4), np.uint8))
    os.rename(d / "data.npy", d / "data.npz")
    return f"npz:{d / 'data.npz'}", d / "data.npz"


def _damaged_member(d: Path) -> tuple[str, Path]:
    with zipfile.ZipFile(d / "data.npz", "w") as z:  # a real zip whose images.npy is not an array
        z.writestr("images.npy", b"\x93NUMPY\x01\x00garbage")
    return f"npz:{d / 'data.npz'}", d / "data.npz"


def _image_file(name: str, content: Callable[[], bytes]) -> Callable[[Path], tuple[str, Path]]:
    def make(d: Path) -> tuple[str, Path]:
        png(d / "set" / "ok.png")
        (d / "set" / name).write_bytes(content())
        return f"folder:{d / 'set'}", d / "set" / name

    return make


def _tiff_as_png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="TIFF")  # int32 -> mode "I", float32 -> mode "F"
    return buf.getvalue()


def _empty_folder(d: Path) -> tuple[str, Path]:
    (d / "set" / "sub").mkdir(parents=True)
    (d / "set" / "notes.txt").write_text("no images here")
    return f"folder:{d / 'set'}", d / "set"


def _mixed(second: dict) -> Callable[[Path], tuple[str, Path]]:
    def make(d: Path) -> tuple[str, Path]:
        png(d / "set" / "a.png")
        png(d / "set" / "b.png", **second)
        return f"folder:{d / 'set'}", d / "set"

    return make


# Three through the CLI here: tests/test_bad_inputs.py runs every kind of bad data through it as a user types it.
CLI_CASES = ("jsonl-traversal-etc-passwd", "jsonl-symlink-out", "csv-traversal")


@dataclass(frozen=True)
class Bad:
    """One bad input: how to make it, a regex its message must match, and whether to try it via the CLI."""

    make: Callable[[Path], tuple[str, Path]]
    match: str
    cli: bool = False


BAD = {
    "jsonl-traversal-etc-passwd": Bad(_jsonl('{"file_name": "../../../../etc/passwd", "text": "x"}'), "outside", True),
    "jsonl-traversal-sibling": Bad(_jsonl('{"file_name": "../outside.png", "text": "x"}'), "line 2.*outside"),
    "jsonl-absolute-path": Bad(_jsonl('{"file_name": "/etc/passwd", "text": "x"}'), "outside"),
    "jsonl-symlink-out": Bad(_symlink_out, "'b.png'.*outside", True),
    "csv-traversal": Bad(
        lambda d: _folder_with_metadata(d, "metadata.csv", "file_name,text\na.png,x\n../outside.png,y\n"),
        "line 3.*outside",
        True,
    ),
    "jsonl-nul-in-name": Bad(_jsonl('{"file_name": "a\\u0000.png", "text": "x"}'), "line 2"),
    "jsonl-missing-file": Bad(_jsonl('{"file_name": "nope.png", "text": "x"}'), "does not exist"),
    "jsonl-not-json": Bad(_jsonl("{not json"), "line 2 is not valid JSON"),
    # once read as the caption "{'en': 'a red circle'}": a JSON object, list or number is not a caption
    "jsonl-caption-object": Bad(_jsonl('{"file_name": "a.png", "text": {"en": "a red circle"}}'), "line 2.*object"),
    "jsonl-caption-list": Bad(_jsonl('{"file_name": "a.png", "text": ["a", "b"]}'), "line 2.*array"),
    "jsonl-caption-number": Bad(_jsonl('{"file_name": "a.png", "caption": 7}'), "line 2.*number, not a string"),
    "jsonl-file-name-number": Bad(_jsonl('{"file_name": 3, "text": "x"}'), "line 2: file_name is a JSON number"),
    "jsonl-latin1": Bad(_latin1("metadata.jsonl", '{"file_name": "a.png", "text": "caf\u00e9"}\n'), "UTF-8", True),
    "csv-latin1": Bad(_latin1("metadata.csv", "file_name,text\n"), "line 2.*save it as UTF-8"),
    "csv-huge-field": Bad(
        lambda d: _folder_with_metadata(d, "metadata.csv", 'file_name,text\na.png,"' + "x" * 200_000 + '"\n'),
        "line 2 is not valid CSV",
    ),
    "npy-renamed-npz": Bad(_npy_as_npz, r"is a \.npy array, not an \.npz archive; save with numpy\.savez", True),
    "npz-garbage-bytes": Bad(_npz_file(bytes(range(256)) * 4), "not an .npz archive"),
    "npz-pickle": Bad(_npz_file(b"\x80\x04\x95" + bytes(40)), "not an .npz archive"),
    "npz-truncated": Bad(_npz_file(npz_bytes(images=np.zeros((2, 4, 4), np.uint8))[:60]), "npz"),
    "npz-damaged-member": Bad(_damaged_member, "images"),
    "npz-zero-rows": Bad(_npz_file(npz_bytes(images=np.zeros((0, 4, 4), np.uint8))), "empty", True),
    "npz-zero-width": Bad(_npz_file(npz_bytes(images=np.zeros((2, 4, 0), np.uint8))), "zero height or width"),
    "npz-object-array": Bad(_npz_file(npz_bytes(images=np.array([None, 1], dtype=object))), "Python-object"),
    "image-garbage-bytes": Bad(_image_file("bad.png", lambda: os.urandom(64)), "Could not read image", True),
    "image-truncated-png": Bad(_image_file("cut.png", lambda: png_bytes(7, (32, 32))[:50]), "Could not read image"),
    "image-zero-bytes": Bad(_image_file("empty.jpg", lambda: b""), "Could not read image"),
    "image-int32-beyond-16-bit": Bad(
        _image_file("wide.png", lambda: _tiff_as_png(np.full((4, 4), 70000, np.int32))), "0..65535"
    ),
    "image-float-outside-0-1": Bad(
        _image_file("hdr.png", lambda: _tiff_as_png(np.full((4, 4), 3.5, np.float32))), r"not \[0, 1\]"
    ),
    "folder-empty": Bad(_empty_folder, "No images", True),
    "folder-mixed-sizes": Bad(_mixed({"size": (5, 4)}), "mixes image sizes", True),
    "folder-mixed-modes": Bad(_mixed({"mode": "RGB", "value": (1, 2, 3)}), "mixes grayscale and colour"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_one_data_error_naming_the_file(case, tmp_path):
    spec, named = BAD[case].make(tmp_path)
    with pytest.raises(DataError, match=BAD[case].match) as info:
        load_dataset(spec, "all")
    assert str(named) in str(info.value)
    assert "\n" not in str(info.value)


@pytest.fixture(scope="module")
def cli_results(tmp_path_factory) -> dict[str, tuple[str, subprocess.CompletedProcess]]:
    """Every CLI case run at once (each `aediff train` takes seconds to import torch): case -> (file, result)."""
    exe = str(Path(sys.executable).with_name("aediff"))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "AEDIFF_CACHE": str(tmp_path_factory.mktemp("cache"))}
    env.pop("AEDIFF_DATA", None)
    running = {}
    for case in CLI_CASES:
        d = tmp_path_factory.mktemp(case)
        spec, named = BAD[case].make(d)
        cmd = [exe, "train", "ae", "--data", spec, "--out", str(d / "out"), "--max-steps", "1"]
        running[case] = (str(named), subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    results = {}
    for case, (named, proc) in running.items():
        out, err = proc.communicate(timeout=120)
        results[case] = (named, subprocess.CompletedProcess(proc.args, proc.returncode, out.decode(), err.decode()))
    return results


@pytest.mark.parametrize("case", CLI_CASES)
def test_bad_input_through_the_cli(case, cli_results):
    named, result = cli_results[case]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 1, result.stderr
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert named in lines[0]
    assert "Traceback" not in result.stderr + result.stdout and "internal error" not in result.stderr


def test_the_table_is_large_and_some_go_through_the_cli():
    assert len(BAD) >= 20 and all(BAD[case].cli for case in CLI_CASES)


# ---------------------------------------------------------------------------------------------------------
# inputs that must load, with the right contents
# ---------------------------------------------------------------------------------------------------------


def test_symlink_loops_load_each_real_image_once_and_never_in_both_splits(tmp_path, caplog):
    root = tmp_path / "set"
    for i in range(20):  # 2 classes x 10 images, each with its own grey level so every image is identifiable
        png(root / ("cat" if i % 2 else "dog") / f"{i:02d}.png", 10 * i + 5)
    os.symlink(root, root / "cat" / "loop")  # back to the top: cat/loop/cat/loop/... without end
    os.symlink("..", root / "dog" / "up")  # a relative loop
    os.symlink(root / "cat", root / "dog" / "cats")  # a second path to a folder walked anyway
    os.symlink(root / "cat" / "01.png", root / "dog" / "copy.png")  # a second path to one file
    with caplog.at_level(logging.WARNING, logger="aediff.data"):
        everything = load_dataset(f"folder:{root}", "all")
    assert sorted(everything.images[:, 0, 0, 0].tolist()) == [10 * i + 5 for i in range(20)]
    assert everything.class_names == ["cat", "dog"]
    assert "each real image is used once" in caplog.text
    train, test = (load_dataset(f"folder:{root}", split) for split in ("train", "test"))
    train_values, test_values = set(train.images[:, 0, 0, 0].tolist()), set(test.images[:, 0, 0, 0].tolist())
    assert len(train) + len(test) == 20 and not train_values & test_values


def _image_of(make: Callable[[], Image.Image]) -> Callable[[Path], Path]:
    def save(path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        img = make()
        img.save(path, format="TIFF" if img.mode in ("I", "F") else "JPEG" if img.mode == "CMYK" else "PNG")
        return path

    return save


def _palette_with_transparency() -> Image.Image:
    img = Image.new("P", (4, 4), 1)
    img.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)  # index 0 red, index 1 blue
    img.info["transparency"] = 1  # the blue index is transparent: must come out white, not blue
    return img


# mode -> (image maker, expected uint8 pixel [C] after loading with native channels)
MODES = {
    "I;16 65535 is white": (lambda: Image.fromarray(np.full((4, 4), 65535, np.uint16)), [255]),
    "I;16 255 is nearly black": (lambda: Image.fromarray(np.full((4, 4), 255, np.uint16)), [1]),
    "I;16 32768 is mid-grey": (lambda: Image.fromarray(np.full((4, 4), 32768, np.uint16)), [128]),
    "I 65535 is white": (lambda: Image.fromarray(np.full((4, 4), 65535, np.int32)), [255]),
    "I 255 is nearly black": (lambda: Image.fromarray(np.full((4, 4), 255, np.int32)), [1]),
    "F 0.5 is mid-grey": (lambda: Image.fromarray(np.full((4, 4), 0.5, np.float32)), [128]),
    "L": (lambda: Image.new("L", (4, 4), 77), [77]),
    "1": (lambda: Image.new("1", (4, 4), 1), [255]),
    "LA half transparent black": (lambda: Image.new("LA", (4, 4), (0, 128)), [127]),
    "P with transparency": (_palette_with_transparency, [255, 255, 255]),
    "RGBA transparent red": (lambda: Image.new("RGBA", (4, 4), (255, 0, 0, 0)), [255, 255, 255]),
    "RGBA opaque red": (lambda: Image.new("RGBA", (4, 4), (255, 0, 0, 255)), [255, 0, 0]),
    "CMYK cyan": (lambda: Image.new("CMYK", (4, 4), (255, 0, 0, 0)), [0, 255, 255]),
    "CMYK black": (lambda: Image.new("CMYK", (4, 4), (0, 0, 0, 255)), [0, 0, 0]),
}


@pytest.mark.parametrize("case", sorted(MODES))
def test_every_pillow_mode_loads_at_the_right_brightness(case, tmp_path):
    make, expected = MODES[case]
    path = _image_of(make)(tmp_path / "set" / "a.png")
    ds = load_dataset(f"folder:{tmp_path / 'set'}", "all")
    pixel = ds.images[0, :, 1, 1].tolist()
    assert pixel == pytest.approx(expected, abs=2 if "CMYK" in case else 0), (Image.open(path).mode, pixel)


def test_16_bit_values_map_by_bit_depth_not_by_observed_range(tmp_path):
    """A dark 16-bit image (every value <= 255) stays dark; 65535 is 1.0 white whatever else is there."""
    png_16 = _image_of(lambda: Image.fromarray(np.array([[0, 255], [255, 255]], np.uint16)))
    png_16(tmp_path / "dark" / "a.png")
    with Image.open(tmp_path / "dark" / "a.png") as img:
        assert img.mode == "I;16"
    x = (load_dataset(f"folder:{tmp_path / 'dark'}", "all").batch([0])["images"] + 1) / 2  # in [0, 1]
    assert x[0, 0, 0, 0].item() == 0.0 and x[0, 0, 0, 1].item() == pytest.approx(255 / 65535, abs=1e-3)
    _image_of(lambda: Image.fromarray(np.array([[65535, 255]], np.uint16)))(tmp_path / "white" / "a.png")
    x = (load_dataset(f"folder:{tmp_path / 'white'}", "all").batch([0])["images"] + 1) / 2
    assert x[0, 0, 0].tolist() == pytest.approx([1.0, 0.004], abs=1e-3)


def test_metadata_with_a_bom_loads_and_latin1_names_line_and_byte(tmp_path):
    """Excel saves CSV as UTF-8 with a byte-order mark: accepted. latin-1 is refused at the exact byte."""
    png(tmp_path / "a.png")
    meta = tmp_path / "metadata.csv"
    meta.write_bytes(codecs.BOM_UTF8 + "file_name,text\na.png,café\n".encode())
    assert load_dataset(f"folder:{tmp_path}", "all").captions == ["café"]
    meta.write_bytes(codecs.BOM_UTF8 + "file_name,text\na.png,café\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"line 2, byte offset 27: byte 0xe9\); save it as UTF-8"):
        load_dataset(f"folder:{tmp_path}", "all")


# ---------------------------------------------------------------------------------------------------------
# captions a plan needs, checked before the first model trains
# ---------------------------------------------------------------------------------------------------------


def test_check_captions_available():
    images = torch.zeros(2, 1, 2, 2, dtype=torch.uint8)
    check_captions_available(ImageDataset(images, captions=["a", "b"]))
    check_captions_available(ImageDataset(images, torch.tensor([0, 1]), class_names=["cat", "dog"]))
    check_captions_available(ImageDataset(images, torch.tensor([0, 1])))  # labels without names: "class 0", ...
    with pytest.raises(DataError, match="latent-diffusion needs captions.*neither captions nor labels"):
        check_captions_available(ImageDataset(images, name="npz:x.npz"), "latent-diffusion")


# ---------------------------------------------------------------------------------------------------------
# arbitrary bytes: a DataError or a valid dataset, nothing else
# ---------------------------------------------------------------------------------------------------------

FUZZ = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
VALID_PNG = png_bytes(9, (4, 4))
VALID_NPZ = npz_bytes(
    images=np.zeros((3, 4, 4), np.uint8), labels=np.array([0, 1, 0]), class_names=np.array(["a", "b"])
)


def _mutated(valid: bytes) -> st.SearchStrategy[bytes]:
    """``valid`` with a few bytes overwritten, or cut short: damage a decoder gets past its header with."""
    flips = st.lists(st.tuples(st.integers(0, len(valid) - 1), st.integers(0, 255)), min_size=1, max_size=4)
    mutate = flips.map(lambda fs: bytes(b if i not in dict(fs) else dict(fs)[i] for i, b in enumerate(valid)))
    return st.one_of(mutate, st.integers(0, len(valid)).map(lambda n: valid[:n]))


def _loads_or_data_error(spec: str) -> None:
    """Load ``spec``: a DataError is fine, any other exception fails the test; a dataset must be valid."""
    try:
        ds = load_dataset(spec, "all")
    except DataError as e:
        assert str(e) and "\n" not in str(e)
        return
    assert len(ds) >= 1 and ds.images.dtype == torch.uint8 and ds.channels in (1, 3)
    assert ds.captions is None or len(ds.captions) == len(ds)


@FUZZ
@given(content=st.one_of(st.binary(max_size=300), _mutated(VALID_PNG)))
def test_arbitrary_bytes_as_an_image_file(content):
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "x.png").write_bytes(content)
        _loads_or_data_error(f"folder:{d}")


_ENTRY = st.dictionaries(
    st.sampled_from(["file_name", "text", "caption", "other"]),
    st.one_of(
        st.sampled_from(["a.png", "./a.png", "sub/../a.png", "../a.png", "/etc/passwd", "a.png/..", ".", ""]),
        st.text(max_size=12),
        st.integers(),
        st.none(),
        st.lists(st.integers(), max_size=2),
    ),
)
_JSONL = st.lists(_ENTRY, max_size=3).map(lambda recs: "\n".join(json.dumps(r) for r in recs).encode())


def _metadata_case(name: str, content: bytes) -> None:
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "a.png").write_bytes(VALID_PNG)
        (Path(d) / name).write_bytes(content)
        _loads_or_data_error(f"folder:{d}")


@FUZZ
@given(content=st.one_of(st.binary(max_size=300), st.text(max_size=200).map(str.encode), _JSONL))
def test_arbitrary_bytes_as_metadata_jsonl(content):
    _metadata_case("metadata.jsonl", content)


_CSV_ROWS = st.lists(
    st.lists(
        st.one_of(st.sampled_from(["a.png", "../a.png", "/etc/passwd", '"', ""]), st.text(max_size=8)), max_size=3
    ),
    max_size=3,
).map(lambda rows: ("file_name,text\n" + "\n".join(",".join(r) for r in rows)).encode())


@FUZZ
@given(content=st.one_of(st.binary(max_size=300), st.text(max_size=200).map(str.encode), _CSV_ROWS))
def test_arbitrary_bytes_as_metadata_csv(content):
    _metadata_case("metadata.csv", content)


@FUZZ
@given(
    content=st.one_of(st.binary(max_size=300), st.binary(max_size=200).map(b"PK\x03\x04".__add__), _mutated(VALID_NPZ))
)
def test_arbitrary_bytes_as_an_npz_file(content):
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "x.npz").write_bytes(content)
        _loads_or_data_error(f"npz:{Path(d) / 'x.npz'}")
