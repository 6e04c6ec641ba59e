"""Readers for on-disk image collections: idx files (MNIST format), image folders and .npz archives.

Every reader returns images as a channels-last uint8 numpy array ``[N, H, W, C]`` with values 0..255,
because that is what Pillow and numpy produce; :class:`~aediff.data.dataset.ImageDataset` turns it
into the channels-first torch tensor. Problems a user can fix raise :class:`aediff.errors.DataError`
naming the file and the fix.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import json
import logging
import os
import posixpath
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from aediff.errors import DataError

from .transforms import Resolution, image_channels, pil_to_array, prepare_array

log = logging.getLogger("aediff.data")

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")

# ---------------------------------------------------------------------------------------------------------
# idx (MNIST) files
# ---------------------------------------------------------------------------------------------------------

# Magic number = 0x00 0x00 <type code> <number of dimensions>; the type code picks the element type.
_IDX_TYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
IDX_IMAGES_MAGIC = 2051  # uint8, 3 dimensions [N, H, W]
IDX_LABELS_MAGIC = 2049  # uint8, 1 dimension [N]


def _open_maybe_gz(path: Path, mode: str = "rb"):
    return gzip.open(path, mode) if path.suffix == ".gz" else open(path, mode)


def read_idx(path: str | os.PathLike, expected_magic: int | None = None) -> np.ndarray:
    """Read an idx file (optionally ``.gz``) into a numpy array with the shape stored in its header.

    ``expected_magic`` (2051 for MNIST images, 2049 for labels) is checked when given.
    Raises DataError for a missing file, a bad magic number or a data size that disagrees with the header.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"idx file {path} does not exist.")
    try:
        with _open_maybe_gz(path) as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as e:  # gzip: BadGzipFile (an OSError), EOFError, zlib.error
        raise DataError(f"Could not read idx file {path}: {e}. Re-download it or remove it.") from e
    if len(raw) < 4:
        raise DataError(f"idx file {path} is too short to hold a header ({len(raw)} bytes); re-download it.")
    magic = struct.unpack(">I", raw[:4])[0]
    zero, type_code, ndim = magic >> 16, (magic >> 8) & 0xFF, magic & 0xFF
    if expected_magic is not None and magic != expected_magic:
        raise DataError(
            f"idx file {path} has magic number {magic}, expected {expected_magic} "
            f"({'images' if expected_magic == IDX_IMAGES_MAGIC else 'labels'}). "
            "Is it the right file (images vs labels) and not corrupted?"
        )
    if zero != 0 or type_code not in _IDX_TYPES or ndim == 0:
        raise DataError(f"{path} is not an idx file (magic number {magic:#010x}).")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"idx file {path} is truncated inside its header; re-download it.")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = _IDX_TYPES[type_code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DataError(
            f"idx file {path} holds {len(raw) - header} data bytes but its header {list(shape)} says "
            f"{expected}; the file is truncated or corrupted, re-download it."
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def write_idx(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write ``array`` as an idx file (gzip-compressed when ``path`` ends with ``.gz``).

    uint8 arrays get the MNIST magic numbers (2049 for 1-D labels, 2051 for 3-D images).
    """
    array = np.asarray(array)
    codes = {v.newbyteorder("="): k for k, v in _IDX_TYPES.items()}
    dt = array.dtype.newbyteorder("=")
    if dt not in codes:
        raise ValueError(f"idx cannot store dtype {array.dtype}")
    code = codes[dt]
    header = struct.pack(">I", (code << 8) | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data = array.astype(_IDX_TYPES[code], copy=False).tobytes()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _open_maybe_gz(path, "wb") as f:
        f.write(header + data)


def read_idx_pair(images_path: str | os.PathLike, labels_path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read an MNIST-style images/labels pair.

    Returns ``images`` uint8 ``[N, H, W, 1]`` (0..255) and ``labels`` int64 ``[N]``.
    Raises DataError on bad magic numbers or when the two files disagree on N.
    """
    images = read_idx(images_path, IDX_IMAGES_MAGIC)
    labels = read_idx(labels_path, IDX_LABELS_MAGIC)
    if len(images) != len(labels):
        raise DataError(
            f"{images_path} holds {len(images)} images but {labels_path} holds {len(labels)} labels; "
            "the files belong to different sets (train vs t10k) or one is corrupted."
        )
    return images[..., None], labels.astype(np.int64)


def find_idx_files(directory: str | os.PathLike) -> dict[str, tuple[Path, Path]] | None:
    """Locate ``train-*`` and ``t10k-*`` idx pairs (plain or ``.gz``) in ``directory``.

    Returns ``{"train": (images, labels), "test": (images, labels)}`` or None if any of the four is missing.
    Accepts both ``train-images-idx3-ubyte`` and ``train-images.idx3-ubyte`` spellings.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return None

    def find(prefix: str, kind: str, dims: int) -> Path | None:
        for sep in ("-", "."):
            for ext in ("", ".gz"):
                p = directory / f"{prefix}-{kind}{sep}idx{dims}-ubyte{ext}"
                if p.is_file():
                    return p
        return None

    found = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images, labels = find(prefix, "images", 3), find(prefix, "labels", 1)
        if images is None or labels is None:
            return None
        found[split] = (images, labels)
    return found


# ---------------------------------------------------------------------------------------------------------
# image folders
# ---------------------------------------------------------------------------------------------------------


@dataclass
class ImageArrays:
    """Images and what goes with them, as read from a file or folder: ``images`` uint8 ``[N, H, W, C]``
    (C in 1, 3), values 0..255; ``labels`` ``[N]`` integers >= 0; one caption per image; the names of the
    classes. The fields every reader's result (and ``registry.RawDataset``) shares."""

    images: np.ndarray
    labels: np.ndarray | None = None
    captions: list[str] | None = None
    class_names: list[str] | None = None


@dataclass
class FolderData(ImageArrays):
    """Decoded contents of an image folder (``ImageArrays``) and what was left out."""

    skipped: int = 0
    files: list[str] = field(default_factory=list)  # paths relative to the root, "/"-separated
    native_channels: np.ndarray | None = None  # [N] each image's own channels before conversion (1 or 3)


def list_image_files(root: Path) -> list[str]:
    """All PNG/JPEG/WebP files under ``root`` (recursive, case-insensitive extensions), as sorted
    "/"-separated paths relative to ``root``. Hidden files and folders (".name") are ignored.

    Folder symlinks are followed, but each real folder is walked once and each real file listed once (the
    first in sorted order): a symlink loop would otherwise list the same files dozens of times, and the
    copies would land on both sides of the train/test split. Dropped duplicates are logged.
    """
    seen_dirs = {os.path.realpath(root)}
    skipped_dirs = 0
    found: list[tuple[str, str]] = []  # (path relative to root, real path)
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        kept = []
        for d in sorted(dirnames):  # sorted: which alias of a folder is walked never depends on the filesystem
            if d.startswith("."):  # .ipynb_checkpoints, .git, ...
                continue
            real = os.path.realpath(os.path.join(dirpath, d))
            if real in seen_dirs:  # a loop back to an ancestor, or a second path to a folder already walked
                skipped_dirs += 1
                continue
            seen_dirs.add(real)
            kept.append(d)
        dirnames[:] = kept
        rel, real_dir = Path(dirpath).relative_to(root), os.path.realpath(dirpath)
        for name in filenames:
            if not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS):
                full = os.path.join(dirpath, name)  # one realpath per folder, not per file: big sets stay fast
                real = os.path.realpath(full) if os.path.islink(full) else os.path.join(real_dir, name)
                found.append(((rel / name).as_posix(), real))
    out, seen_files = [], set()
    for rel, real in sorted(found):  # sorted so that the order (and hence every split) never depends on the OS
        if real not in seen_files:
            seen_files.add(real)
            out.append(rel)
    if skipped_dirs or len(out) < len(found):
        log.warning(
            "%s: %d image path(s) led to a file already listed (symlinks) and %d folder symlink(s) to a folder "
            "already walked were skipped; each real image is used once.",
            root,
            len(found) - len(out),
            skipped_dirs,
        )
    return out


def _read_utf8(path: Path) -> str:
    """The text of ``path`` decoded as UTF-8 (a leading byte-order mark, as Excel writes, is dropped).

    Other encodings are refused rather than guessed: latin-1 decodes any bytes at all, so a wrong guess would
    silently turn captions (the training targets) into mojibake, while the fix -- re-saving as UTF-8 -- is
    one click in any editor.
    """
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"Could not read {path}: {e}.") from e
    bom = len(codecs.BOM_UTF8) if raw.startswith(codecs.BOM_UTF8) else 0
    try:
        return raw[bom:].decode("utf-8")
    except UnicodeDecodeError as e:
        start = bom + e.start  # an offset into the file as saved, BOM included
        line = raw.count(b"\n", 0, start) + 1
        raise DataError(
            f"{path} is not valid UTF-8 (line {line}, byte offset {start}: byte {raw[start]:#04x}); save it as UTF-8."
        ) from e


def _jsonl_records(path: Path) -> list[tuple[str, dict]]:
    """``(where, record)`` for each non-blank line of a metadata.jsonl; DataError for a line that is not a
    JSON object."""
    records = []
    for n, line in enumerate(_read_utf8(path).split("\n"), 1):  # only "\n": JSON strings may hold U+2028
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except (json.JSONDecodeError, RecursionError) as e:  # RecursionError: absurdly nested brackets
            raise DataError(f"{path} line {n} is not valid JSON ({e}); fix or remove that line.") from e
        if not isinstance(rec, dict):
            raise DataError(f'{path} line {n} must be a JSON object like {{"file_name": "a.png", "text": "..."}}.')
        records.append((f"{path} line {n}", rec))
    return records


def _csv_records(path: Path) -> list[tuple[str, dict]]:
    """``(where, record)`` for each non-blank row of a metadata.csv; DataError without a file_name/text header.

    A row with fewer fields than the header lacks the missing keys; one with more has its extra fields ignored.
    """
    rows = csv.reader(io.StringIO(_read_utf8(path), newline=""))
    records, start = [], 1  # start: the line the row being read begins on (a quoted field may span lines)
    try:
        cols = next(rows, [])
        if "file_name" not in cols or not ({"text", "caption"} & set(cols)):
            raise DataError(f"{path} needs a header with columns file_name and text (or caption); found {cols}.")
        start = rows.line_num + 1
        for row in rows:
            if row:
                records.append((f"{path} line {start}", dict(zip(cols, row, strict=False))))
            start = rows.line_num + 1
    except csv.Error as e:  # a field over csv's size limit, ...
        raise DataError(f"{path} line {start} is not valid CSV ({e}); fix or remove that line.") from e
    return records


def _entry_path(root: Path, real_root: Path, where: str, file_name: object) -> str:
    """A metadata entry's ``file_name`` as a normalised "/"-separated path relative to ``root``.

    DataError unless it names an existing file inside ``root`` once ``..`` and symlinks are resolved: an
    entry like ``../../etc/passwd`` must never make the reader open (or train on) a file outside the dataset.
    ``real_root``: ``root`` with its symlinks resolved (passed in: resolving costs a stat per component).
    """
    name = str(file_name).replace("\\", "/")
    rel = posixpath.normpath(name)
    try:
        real = (root / rel).resolve()
        inside = not posixpath.isabs(rel) and real.is_relative_to(real_root)
        exists = inside and real.is_file()
    except (OSError, ValueError) as e:  # NUL characters, names too long for the filesystem, ...
        raise DataError(f"{where} names {file_name!r}, which is not a usable file name ({e}).") from e
    if not inside:
        raise DataError(
            f"{where} names {file_name!r}, which lies outside the dataset folder {root}; give a path relative "
            "to that folder that stays inside it (no '..', absolute paths or symlinks leading out)."
        )
    if not exists:
        raise DataError(
            f"{where} names {file_name!r}, which does not exist (as a file) in {root}; "
            "fix the path (relative to that folder) or remove the entry."
        )
    return rel


def _json_kind(value: object) -> str:
    """The JSON name of a parsed value's type ("object", "array", "number", ...)."""
    kinds = {dict: "object", list: "array", bool: "true/false", int: "number", float: "number"}
    return kinds.get(type(value), type(value).__name__)


def read_metadata(root: Path) -> dict[str, str] | None:
    """Captions from ``metadata.jsonl`` or ``metadata.csv`` in ``root`` (Hugging Face imagefolder convention).

    Each record names ``file_name`` (relative to ``root``, and inside it) and ``text`` or ``caption``.
    Returns ``{relative posix path: caption}`` or None if there is no metadata file. The file must be UTF-8.
    """
    jsonl, csv_path = root / "metadata.jsonl", root / "metadata.csv"
    if jsonl.is_file():
        if csv_path.is_file():
            log.warning("%s has both metadata.jsonl and metadata.csv; using metadata.jsonl", root)
        records = _jsonl_records(jsonl)
    elif csv_path.is_file():
        records = _csv_records(csv_path)
    else:
        return None

    captions: dict[str, str] = {}
    real_root = root.resolve()
    for where, rec in records:
        file_name = rec.get("file_name")
        text = rec.get("text", rec.get("caption"))
        if not file_name or text is None:
            keys = sorted(str(k) for k in rec)
            raise DataError(f"{where} needs keys file_name and text (or caption); found {keys}.")
        if not isinstance(text, str):  # a JSON object, list or number would become its Python repr
            raise DataError(
                f"{where}: the caption is a JSON {_json_kind(text)}, not a string; write it as text in quotes, "
                '"text": "a red circle".'
            )
        if not isinstance(file_name, str):
            raise DataError(f"{where}: file_name is a JSON {_json_kind(file_name)}, not a string; give the path.")
        try:
            text.encode("utf-8")  # JSON escapes can hold lone surrogates, which no tokenizer can encode
        except UnicodeEncodeError as e:
            raise DataError(f"{where}: the caption is not valid Unicode ({e}); fix the text.") from e
        captions[_entry_path(root, real_root, where, file_name)] = text
    return captions


def _decode_image(path: Path, channels: int | None, resolution: Resolution | None) -> tuple[np.ndarray, int]:
    """One image file -> (uint8 ``[H, W, C]``, its native channel count). ValueError (with the reason) for a
    file that cannot be decoded or converted.

    Pillow's decoders raise many exception types on damaged or foreign files (OSError, SyntaxError, but also
    struct.error, IndexError, EOFError, ...); all mean the same -- this file is not a usable image -- so they
    are turned into one ValueError here, and from there into DataError (or a skip with skip_bad).
    """
    try:
        with Image.open(path) as img:
            img.load()  # decode now: truncated files only fail here, not in open()
            native = image_channels(img)
            return pil_to_array(img, channels or native, resolution), native
    except Image.DecompressionBombError as e:
        raise ValueError(str(e)) from e
    except MemoryError as e:  # a damaged header can claim a huge size
        raise ValueError("it claims a size too large to decode") from e
    except Exception as e:  # noqa: BLE001 -- see the docstring: any decoder failure means "unusable file"
        raise ValueError(str(e) or type(e).__name__) from e


def _folder_class_names(root: Path, files: list[str]) -> list[str] | None:
    """First-level sub-folder names (sorted) when every image lives in a sub-folder, else None."""
    in_subfolder = ["/" in f for f in files]
    if all(in_subfolder):
        return sorted({f.split("/", 1)[0] for f in files})
    if any(in_subfolder):
        log.warning(
            "%s: some images are in sub-folders and some at the top level, so no class labels "
            "are used; put every image in a class sub-folder to get labels.",
            root,
        )
    return None


def _check_same_shape(root: Path, first: tuple[str, int, tuple], rel: str, native: int, size: tuple, channels):
    """DataError when image ``rel`` differs from the first image in channels (with channels=None) or size."""
    if channels is None and native != first[1]:
        raise DataError(
            f"{root} mixes grayscale and colour images ({first[0]} has {first[1]} channel(s), {rel} has "
            f"{native}); pass channels=1 or channels=3 (--image-channels 1|3) to convert them all."
        )
    if size != first[2]:  # only possible with resolution=None
        raise DataError(
            f"{root} mixes image sizes (height x width: {first[0]} is {first[2][0]}x{first[2][1]}, {rel} is "
            f"{size[0]}x{size[1]}); pass resolution=N or (H, W) (--resolution N for squares or --resolution HxW) "
            "to resize and center-crop them."
        )


def _decode_all(root: Path, files: list[str], channels, resolution, skip_bad, progress) -> tuple[list, list, list, int]:
    """Decode ``files`` (relative to ``root``): (arrays, the files kept, their own channel counts, how many were
    skipped)."""
    arrays: list[np.ndarray] = []
    kept: list[str] = []
    natives: list[int] = []
    bad = 0
    first: tuple[str, int, tuple[int, int]] | None = None  # (file, native channels, size) of the first image
    for n, rel in enumerate(files):
        path = root / rel
        try:
            arr, native = _decode_image(path, channels, resolution)
        except ValueError as e:
            if not skip_bad:
                raise DataError(
                    f"Could not read image {path}: {e}. Remove or replace the file, or pass skip_bad=True "
                    "(--skip-bad) to skip unreadable images."
                ) from e
            log.warning("skipping unreadable image %s: %s", path, e)
            bad += 1
            continue
        if first is None:
            first = (rel, native, arr.shape[:2])
        else:
            _check_same_shape(root, first, rel, native, arr.shape[:2], channels)
        arrays.append(arr)
        kept.append(rel)
        natives.append(native)
        if progress is not None:
            progress(n + 1, len(files))
    if not arrays:
        raise DataError(f"None of the {len(files)} image files under {root} could be read (all were skipped).")
    if bad:
        log.warning("%s: skipped %d unreadable image(s)", root, bad)
    return arrays, kept, natives, bad


def read_image_folder(
    root: str | os.PathLike,
    *,
    resolution: Resolution | None = None,
    channels: int | None = None,
    skip_bad: bool = False,
    labels: bool = True,
    captions: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> FolderData:
    """Decode every PNG/JPEG/WebP under ``root`` into uint8 ``[N, H, W, C]``.

    - ``resolution``: a square's side or (height, width): resize to cover it (keeping the aspect ratio),
      then center-crop; None keeps native size (a mix of sizes then raises DataError asking for a resolution).
    - ``channels``: 1 or 3; None keeps the native channels (grayscale and colour mixed -> DataError).
    - labels: first-level sub-folder names (sorted) when every image lives in a sub-folder.
    - captions: from metadata.jsonl / metadata.csv in ``root``; every image must then have one.
    - ``skip_bad``: skip unreadable/truncated files (counted in ``skipped``) instead of raising.

    Folder symlinks are followed but every real image is read once (see :func:`list_image_files`).
    """
    found = index_image_folder(root, labels=labels, captions=captions)
    arrays, kept, natives, bad = _decode_all(found.root, found.files, channels, resolution, skip_bad, progress)
    data = FolderData(images=np.stack(arrays), skipped=bad, files=kept, native_channels=np.array(natives))
    if found.class_names is not None:
        data.labels = found.labels_of(kept)
        data.class_names = found.class_names
    if found.caption_map is not None:
        data.captions = [found.caption_map[f] for f in kept]
    return data


@dataclass
class FolderIndex:
    """What an image folder holds, before any image is decoded: its files (sorted, relative, "/"-separated),
    their class names (first-level sub-folders, or None) and captions (metadata file, or None)."""

    root: Path
    files: list[str]
    class_names: list[str] | None
    caption_map: dict[str, str] | None

    def labels_of(self, files: list[str]) -> np.ndarray:
        """int64 [len(files)]: each file's class index (its first-level sub-folder among ``class_names``)."""
        index = {c: i for i, c in enumerate(self.class_names or [])}
        return np.array([index[f.split("/", 1)[0]] for f in files], dtype=np.int64)


def index_image_folder(root: str | os.PathLike, *, labels: bool = True, captions: bool = True) -> FolderIndex:
    """List an image folder (see :func:`read_image_folder`); DataError when it is missing, empty, or has
    images without captions in its metadata file."""
    root = Path(root).expanduser()
    if not root.exists():
        raise DataError(f"Image folder {root} does not exist; check the path.")
    if not root.is_dir():
        raise DataError(f"{root} is not a folder; folder:PATH needs a directory of PNG/JPEG/WebP images.")
    files = list_image_files(root)
    if not files:
        raise DataError(
            f"No images (.png, .jpg, .jpeg, .webp) found under {root} (searched recursively); "
            "point to the folder that contains the images."
        )
    class_names = _folder_class_names(root, files) if labels else None
    caption_map = read_metadata(root) if captions else None
    if caption_map is not None:
        missing = [f for f in files if f not in caption_map]
        if missing:
            raise DataError(
                f"{len(missing)} image(s) under {root} have no caption in the metadata file, e.g. "
                f"{', '.join(missing[:3])}; add a line for each (file_name relative to {root}) "
                "or remove those images."
            )
    return FolderIndex(root, files, class_names, caption_map)


# ---------------------------------------------------------------------------------------------------------
# .npz archives
# ---------------------------------------------------------------------------------------------------------


def _open_npz(path: Path):
    """``np.load(path)`` as an open NpzFile; DataError for anything else (a .npy, a pickle, other bytes)."""
    try:
        with open(path, "rb") as f:
            magic = f.read(6)
    except OSError as e:
        raise DataError(f"Could not read {path}: {e}.") from e
    if not magic.startswith((b"PK", b"\x93NUMPY")):  # zip (.npz) and .npy signatures; else np.load tries pickle
        raise DataError(f"{path} is not an .npz archive (no zip signature at its start); save it with numpy.savez.")
    try:
        npz = np.load(path, allow_pickle=False)
    except Exception as e:  # noqa: BLE001 -- BadZipFile, ValueError (pickle), OSError, EOFError: not an npz
        raise DataError(f"Could not read {path} as an .npz archive ({e}); save it with numpy.savez.") from e
    if isinstance(npz, np.ndarray):  # np.load reads .npy files whatever their name
        raise DataError(
            f"{path} is a .npy array, not an .npz archive; save with numpy.savez({path.name!r}, images=array) "
            "(plus labels=..., captions=... if you have them)."
        )
    return npz


def _npz_array(npz, path: Path, key: str) -> np.ndarray:
    """Array ``key`` of an open .npz; DataError for a pickled (object) array or a damaged member."""
    try:
        return npz[key]
    except ValueError as e:  # object arrays need pickle, which we refuse for safety
        raise DataError(
            f"{path}: key {key!r} is stored as a Python-object array (or is damaged: {e}); store it as a "
            "plain numpy array (e.g. np.array(list_of_str) for captions)."
        ) from e
    except Exception as e:  # noqa: BLE001 -- zlib.error, BadZipFile, EOFError, MemoryError: a damaged archive
        raise DataError(f"{path}: could not read array {key!r} ({type(e).__name__}: {e}); save it again.") from e


def _npz_strings(path: Path, key: str, arr: np.ndarray) -> list[str]:
    """A numpy string array (unicode or bytes, the latter UTF-8) as Python strings."""
    try:
        return [c.decode("utf-8") if isinstance(c, bytes) else str(c) for c in arr.tolist()]
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: {key!r} holds bytes that are not UTF-8 ({e}); store them as str.") from e


def read_npz(path: str | os.PathLike) -> ImageArrays:
    """Read ``images`` (+ optional ``labels``, ``captions``, ``class_names``) from an .npz file.

    ``images``: ``[N, H, W]`` or ``[N, H, W, C]`` with C in 1, 3, 4 (RGBA is composited on white); uint8
    (or any integer type within 0..255), or float in [0, 1] (quantised to uint8).
    ``labels``: ``[N]`` non-negative integers. ``captions``: ``[N]`` strings.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"npz file {path} does not exist; check the path.")
    with _open_npz(path) as npz:
        keys = set(npz.files)
        if "images" not in keys:
            raise DataError(
                f"{path} has no 'images' array (found keys {sorted(keys)}); save the images under "
                "the key 'images' as [N, H, W] or [N, H, W, C]."
            )
        out = ImageArrays(images=_validate_npz_images(path, _npz_array(npz, path, "images")))
        n = len(out.images)
        if "labels" in keys:
            out.labels = _validate_npz_labels(path, _npz_array(npz, path, "labels"), n)
        if "captions" in keys:
            caps = _npz_array(npz, path, "captions")
            if caps.shape != (n,):
                raise DataError(
                    f"{path}: 'captions' has shape {caps.shape}, expected ({n},) (one caption per image in 'images')."
                )
            if caps.dtype.kind not in "US":
                raise DataError(f"{path}: 'captions' has dtype {caps.dtype}, expected strings.")
            out.captions = _npz_strings(path, "captions", caps)
        if "class_names" in keys:
            names = _npz_array(npz, path, "class_names")
            if names.ndim != 1 or names.dtype.kind not in "US":
                raise DataError(
                    f"{path}: 'class_names' must be a 1-D array of strings, found {names.dtype} {names.shape}."
                )
            out.class_names = _npz_strings(path, "class_names", names)
            if out.labels is not None and n and out.labels.max() >= len(out.class_names):
                raise DataError(
                    f"{path}: 'labels' go up to {out.labels.max()} but 'class_names' has only "
                    f"{len(out.class_names)} entries."
                )
    return out


def _validate_npz_labels(path: Path, labels: np.ndarray, n: int) -> np.ndarray:
    """Check an npz ``labels`` array (one non-negative integer per image) and return it as int64."""
    if labels.shape != (n,):
        raise DataError(
            f"{path}: 'labels' has shape {labels.shape}, expected ({n},) (one label per image in 'images')."
        )
    if not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == bool):
        raise DataError(f"{path}: 'labels' has dtype {labels.dtype}, expected integers.")
    if n and (labels.min() < 0 or int(labels.max()) > np.iinfo(np.int64).max):
        raise DataError(f"{path}: 'labels' contains negative or huge values; use class indices 0..K-1.")
    return labels.astype(np.int64)


def _validate_npz_images(path: Path, images: np.ndarray) -> np.ndarray:
    """Check shape/dtype/range of an npz ``images`` array and return uint8 ``[N, H, W, C]`` with C in 1, 3."""
    shape = images.shape
    if images.ndim == 3:
        images = images[..., None]
    elif images.ndim != 4 or shape[-1] not in (1, 3, 4):
        raise DataError(
            f"{path}: 'images' has shape {shape}, expected [N, H, W] or [N, H, W, C] with C in 1, 3, 4 "
            "(channels last; transpose channels-first data with images.transpose(0, 2, 3, 1))."
        )
    if len(images) == 0:
        raise DataError(f"{path}: 'images' is empty (shape {shape}); expected at least one image.")
    if images.shape[1] == 0 or images.shape[2] == 0:
        raise DataError(f"{path}: 'images' has shape {shape}: images of zero height or width.")
    if images.dtype == np.uint8:
        pass
    elif np.issubdtype(images.dtype, np.floating):
        lo, hi = float(images.min()), float(images.max())
        if not (np.isfinite(lo) and np.isfinite(hi)) or lo < 0.0 or hi > 1.0:
            raise DataError(
                f"{path}: float 'images' must lie in [0, 1], found values in [{lo:g}, {hi:g}]; rescale them "
                "(e.g. (x + 1) / 2 for [-1, 1] data, x / 255 for 0..255) or store uint8."
            )
        images = np.rint(images * 255.0).astype(np.uint8)
    elif np.issubdtype(images.dtype, np.integer):
        lo, hi = int(images.min()), int(images.max())
        if lo < 0 or hi > 255:
            raise DataError(f"{path}: integer 'images' must lie in 0..255, found {lo}..{hi}; store uint8.")
        images = images.astype(np.uint8)
    else:
        raise DataError(f"{path}: 'images' has dtype {images.dtype}; expected uint8 or float in [0, 1].")
    if images.shape[-1] == 4:
        images = prepare_array(images, channels=3, resolution=None)  # composite RGBA on white
    return np.ascontiguousarray(images)
