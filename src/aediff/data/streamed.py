"""Datasets too large for memory: images read and decoded from disk as training asks for them.

Three kinds of storage, one interface (``ItemReader``: a count, labels / captions known up front, and
``open_image(i)``), and one dataset class over any of them (``StreamedImageDataset``, an ``ImageDataset`` whose
pixels are decoded per batch):

- ``folder:PATH``: an image folder, as in memory (class sub-folders, metadata.jsonl / .csv captions).
- ``wds:PATH/{000..099}.tar``: WebDataset shards. Each sample is the members sharing a key (the file name up to
  its first dot): an image (.png, .jpg, .jpeg, .webp), optionally a class index (.cls) and a caption (.txt).
  The shards are indexed once when opened (every member's offset, labels and captions read then), after which
  any sample is read by position: training's order stays a seeded permutation per epoch, so a resumed run
  sees the same batches, as with data in memory.
- ``hf:PATH`` or ``hf:NAME``: a Hugging Face dataset saved with ``save_to_disk``, or, with ``--no-stream``, any
  other (a Hub id, a local folder of data files), prepared by ``datasets.load_dataset`` in the local cache
  (downloaded once). Arrow files are memory-mapped, so they are read by position too. Its image column is the
  one of type ``Image``; labels come from a ``ClassLabel`` column (or ``label`` / ``labels``); captions from
  ``text`` / ``caption``. A dataset with "train" and "test" splits keeps them as its official split. Without
  ``--no-stream`` a Hub id or a folder of data files opens in Hugging Face streaming mode instead: read in
  order, never downloaded whole (``aediff.data.hfstream``).

Decoding follows the in-memory readers exactly (``transforms.pil_to_array``), so a folder streamed and the
same folder in memory give identical batches.
"""

from __future__ import annotations

import glob
import io
import logging
import os
import re
import tarfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xxhash
from PIL import Image
from torch import Tensor

from aediff.errors import DataError

from .dataset import ImageDataset, named_classes
from .files import _decode_image, index_image_folder
from .transforms import Resolution, image_channels, pil_to_array

log = logging.getLogger(__name__)

# Folders larger than this once decoded are streamed unless told otherwise ($AEDIFF_STREAM_ABOVE_GB overrides).
STREAM_ABOVE_GB = 2.0


class ItemReader:
    """Random access to a stored image set. ``labels``: int64 [N] or None; ``class_names``; ``captions``:
    N strings or None; ``test_mask``: bool [N] marking an official test split, or None."""

    name: str
    labels: np.ndarray | None = None
    class_names: list[str] | None = None
    captions: list[str] | None = None
    test_mask: np.ndarray | None = None

    def __len__(self) -> int:
        raise NotImplementedError

    def decode(self, i: int, channels: int | None, resolution: Resolution | None) -> tuple[np.ndarray, int]:
        """Item i as uint8 [H, W, C] (``channels`` / ``resolution`` as in memory) and its native channel count;
        ValueError with the reason when it cannot be decoded."""
        raise NotImplementedError

    def where(self, i: int) -> str:
        """Item i's location, for messages (a file, or a shard and key)."""
        raise NotImplementedError

    def manifest(self) -> str:
        """What identifies the stored items without decoding them (their locations; readers add sizes), for
        ``fingerprint``."""
        return "\n".join(self.where(i) for i in range(len(self)))

    def parts(self) -> dict[str, int]:
        """Items per stored part (a shard's samples), or {} for a reader without parts."""
        return {}


def decode_pil(img: Image.Image, channels: int | None, resolution: Resolution | None) -> tuple[np.ndarray, int]:
    native = image_channels(img)
    return pil_to_array(img, channels or native, resolution), native


class FolderReader(ItemReader):
    def __init__(self, root: str | os.PathLike):
        found = index_image_folder(root)
        self.root, self.files, self.name = found.root, found.files, f"folder:{root}"
        if found.class_names is not None:
            self.labels, self.class_names = found.labels_of(found.files), found.class_names
        if found.caption_map is not None:
            self.captions = [found.caption_map[f] for f in found.files]

    def __len__(self) -> int:
        return len(self.files)

    def decode(self, i, channels, resolution):
        return _decode_image(self.root / self.files[i], channels, resolution)

    def where(self, i):
        return str(self.root / self.files[i])

    def manifest(self) -> str:
        return "\n".join(f"{f}\t{(self.root / f).stat().st_size}" for f in self.files)


def expand_braces(pattern: str) -> list[str]:
    """WebDataset's shard notation: ``a/{000..012}.tar`` (zero-padded ranges) and ``{x,y}`` alternatives,
    expanded left to right; a pattern without braces is returned as is."""
    match = re.search(r"\{([^{}]*)\}", pattern)
    if match is None:
        return [pattern]
    head, body, tail = pattern[: match.start()], match.group(1), pattern[match.end() :]
    span = re.fullmatch(r"(\d+)\.\.(\d+)", body)
    if span:
        lo, hi = span.groups()
        if int(hi) < int(lo):
            raise DataError(f"shard range {{{body}}} in {pattern!r} runs backwards; write {{{hi}..{lo}}}")
        parts = [str(n).zfill(len(lo)) for n in range(int(lo), int(hi) + 1)]
    else:
        parts = body.split(",")
    return [p for part in parts for p in expand_braces(head + part + tail)]


def shard_paths(spec: str) -> list[Path]:
    """The shard files a ``wds:`` spec names: a brace pattern, a glob, or a folder of .tar files."""
    path = Path(spec).expanduser()
    if path.is_dir():
        paths = sorted(path.glob("*.tar"))
    elif any(c in spec for c in "*?["):
        paths = sorted(Path(p) for p in glob.glob(os.path.expanduser(spec)))
    else:
        paths = [Path(p).expanduser() for p in expand_braces(spec)]
    if not paths:
        raise DataError(
            f"wds:{spec} names no .tar shards; give a folder of shards or a pattern like DIR/{{000..009}}.tar"
        )
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise DataError(f"{len(missing)} shard(s) of wds:{spec} do not exist, e.g. {missing[0]}; check the pattern")
    return paths


class TarShardReader(ItemReader):
    """WebDataset shards, indexed by member offset (module docstring)."""

    def __init__(self, spec: str):
        self.name, self.paths = f"wds:{spec}", shard_paths(spec)
        self.entries: list[tuple[int, int, int, str]] = []  # (shard, offset, size, key) of each sample's image
        labels: list[int | None] = []
        captions: list[str | None] = []
        for shard, path in enumerate(self.paths):
            for key, members in self._samples(path):
                image = next((members[e] for e in ("png", "jpg", "jpeg", "webp") if e in members), None)
                if image is None:
                    raise DataError(
                        f"{path}: sample {key!r} has no image (.png, .jpg, .jpeg, .webp); remove it or add one"
                    )
                self.entries.append((shard, image[0], image[1], key))
                labels.append(self._label(path, key, members.get("cls")))
                captions.append(self._text(path, members["txt"]) if "txt" in members else None)
        if not self.entries:
            raise DataError(f"the shards of {self.name} hold no samples")
        self.labels = self._all_or_none(labels, "a class (.cls)")
        self.captions = self._all_or_none(captions, "a caption (.txt)")
        self._files: dict[int, int] = {}  # shard -> file descriptor, per process (see _fd)
        self._pid = os.getpid()

    @staticmethod
    def _samples(path: Path) -> list[tuple[str, dict[str, tuple[int, int]]]]:
        """(key, {extension: (offset, size)}) per sample, in the shard's order."""
        samples: dict[str, dict[str, tuple[int, int]]] = {}
        try:
            size = path.stat().st_size
            with tarfile.open(path) as tar:
                for member in tar:
                    if member.offset_data + member.size > size:
                        raise DataError(
                            f"{path} is truncated: its member {member.name!r} at byte {member.offset} is cut short "
                            f"({size - member.offset_data} of {member.size} bytes); copy the shard again"
                        )
                    if not member.isfile():
                        continue
                    folder, _, base = member.name.rpartition("/")
                    stem, dot, ext = base.partition(".")
                    if dot:
                        key = f"{folder}/{stem}" if folder else stem
                        samples.setdefault(key, {})[ext.lower()] = (member.offset_data, member.size)
                end = tar.offset  # where the end-of-archive marker (512-byte zero blocks) must begin
            TarShardReader._check_end_marker(path, end, size)
        except (tarfile.TarError, OSError) as e:
            raise DataError(f"{path} is not a readable tar shard ({e}); replace or remove it") from None
        return list(samples.items())

    @staticmethod
    def _check_end_marker(path: Path, end: int, size: int) -> None:
        """DataError unless a zero block follows the last member: a shard cut at a sample boundary still reads
        as a tar, one with fewer samples, and would train on them without a word."""
        with open(path, "rb") as f:
            f.seek(end)
            block = f.read(512)
        if len(block) < 512 or any(block):
            raise DataError(
                f"{path} is truncated: no end-of-archive marker after its last whole member, at byte {end} of "
                f"{size}; copy the shard again (or write it with tar or webdataset, which end it properly)"
            )

    def _read(self, shard: int, offset: int, size: int) -> bytes:
        return os.pread(self._fd(shard), size, offset)

    def _fd(self, shard: int) -> int:
        # positionless reads (pread) on descriptors opened per process: DataLoader workers never share a position
        if self._pid != os.getpid():
            self._files, self._pid = {}, os.getpid()
        if shard not in self._files:
            self._files[shard] = os.open(self.paths[shard], os.O_RDONLY)
        return self._files[shard]

    def _label(self, path: Path, key: str, member: tuple[int, int] | None) -> int | None:
        if member is None:
            return None
        text = self._text(path, member).strip()
        if not re.fullmatch(r"\d+", text):
            raise DataError(f"{path}: {key}.cls holds {text[:20]!r}, not a class index (a non-negative integer)")
        return int(text)

    @staticmethod
    def _text(path: Path, member: tuple[int, int]) -> str:
        with open(path, "rb") as f:
            f.seek(member[0])
            raw = f.read(member[1])
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise DataError(f"{path}: a text member at byte {member[0]} is not UTF-8 ({e}); save it as UTF-8") from None

    def _all_or_none(self, values: list, what: str) -> Any:
        present = sum(v is not None for v in values)
        if present == 0:
            return None
        if present < len(values):
            raise DataError(
                f"{present} of the {len(values)} samples of {self.name} have {what}; give every sample one or none"
            )
        return np.array(values, dtype=np.int64) if isinstance(values[0], int) else values

    def __len__(self) -> int:
        return len(self.entries)

    def decode(self, i, channels, resolution):
        shard, offset, size, _ = self.entries[i]
        try:
            with Image.open(io.BytesIO(self._read(shard, offset, size))) as img:
                img.load()
                return decode_pil(img, channels, resolution)
        except Exception as e:  # noqa: BLE001 -- any decoder failure means "unusable image" (files._decode_image)
            raise ValueError(str(e) or type(e).__name__) from e

    def where(self, i):
        shard, _, _, key = self.entries[i]
        return f"{self.paths[shard]} (sample {key!r})"

    def manifest(self) -> str:
        return "\n".join(
            f"{self.paths[shard].name}\t{key}\t{offset}\t{size}" for shard, offset, size, key in self.entries
        )

    def parts(self) -> dict[str, int]:
        counts = dict.fromkeys((str(p) for p in self.paths), 0)
        for shard, *_ in self.entries:
            counts[str(self.paths[shard])] += 1
        return counts

    def __getstate__(self) -> dict:  # descriptors do not travel to other processes
        return {**self.__dict__, "_files": {}}


def saved_to_disk(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder written by ``save_to_disk`` (a Dataset's or a DatasetDict's), as
    ``datasets.load_from_disk`` tells them."""
    folder = Path(path).expanduser()
    return (folder / "dataset_dict.json").is_file() or all(
        (folder / name).is_file() for name in ("dataset_info.json", "state.json")
    )


class HFReader(ItemReader):
    """A Hugging Face ``datasets`` dataset read by position (module docstring)."""

    def __init__(self, spec: str):
        try:
            import datasets
        except ImportError:
            raise DataError("hf: datasets need the `datasets` package: pip install 'aediff[hub]'") from None
        self.name = f"hf:{spec}"
        data = self._open(datasets, spec)
        if isinstance(data, datasets.DatasetDict):
            names = [s for s in ("train", "test") if s in data] or list(data)
            parts = [data[name] for name in names]
            sizes = [(len(part), name == "test") for name, part in zip(names, parts, strict=True)]
            self.test_mask = np.concatenate([np.full(size, is_test) for size, is_test in sizes])
            if not self.test_mask.any():
                self.test_mask = None
            data = datasets.concatenate_datasets(parts)
        self.data = data
        features = data.features
        images = [c for c, f in features.items() if isinstance(f, datasets.Image)]
        if not images:
            raise DataError(
                f"{self.name} has no column of type Image (columns: {', '.join(features)}); "
                "cast one with ds.cast_column(name, datasets.Image())"
            )
        self.image_column = images[0]
        label = next((c for c, f in features.items() if isinstance(f, datasets.ClassLabel)), None)
        label = label or next((c for c in ("label", "labels") if c in features), None)
        if label is not None:
            self.labels = np.asarray(data[label], dtype=np.int64)
            names = getattr(features[label], "names", None)
            self.class_names = list(names) if names else None
        caption = next((c for c in ("text", "caption") if c in features), None)
        if caption is not None:
            self.captions = [str(c) for c in data[caption]]

    @staticmethod
    def _open(datasets: Any, spec: str) -> Any:
        path = Path(spec).expanduser()
        try:
            if saved_to_disk(path):
                return datasets.load_from_disk(str(path))
            # --no-stream: prepared in the local cache (downloaded once; HF_DATASETS_OFFLINE=1 keeps it offline)
            return datasets.load_dataset(str(path) if path.exists() else spec)
        except (FileNotFoundError, ValueError, ConnectionError, OSError) as e:
            raise DataError(
                f"could not open hf:{spec} ({e}); give a folder written by save_to_disk, a local folder of data "
                "files, or a dataset id on the Hugging Face Hub"
            ) from None

    def __len__(self) -> int:
        return len(self.data)

    def decode(self, i, channels, resolution):
        try:
            img = self.data[int(i)][self.image_column]
            img.load()
            return decode_pil(img, channels, resolution)
        except Exception as e:  # noqa: BLE001 -- as TarShardReader.decode
            raise ValueError(str(e) or type(e).__name__) from e

    def where(self, i):
        return f"{self.name} row {i}"


def open_reader(kind: str, rest: str) -> ItemReader:
    """The reader of a ``folder:`` / ``wds:`` / ``hf:`` spec's path part."""
    if not rest:
        raise DataError(f"'{kind}:' needs a path after the colon, e.g. '{kind}:/data/images'")
    return {"folder": FolderReader, "wds": TarShardReader, "hf": HFReader}[kind](rest)


def shape_channels(shape: tuple[int, int, int]) -> int:
    """Channels of an (H, W, C) image shape: what a dataset whose first image fixed its shape reports."""
    return int(shape[2])


def shape_resolution(shape: tuple[int, int, int]) -> tuple[int, int]:
    """(height, width) of an (H, W, C) image shape."""
    return int(shape[0]), int(shape[1])


class StreamedImageDataset(ImageDataset):
    """An ImageDataset whose examples ``items`` of ``reader`` are decoded when a batch asks for them.

    The first item fixes the channels (unless ``channels`` is given) and the size (unless ``resolution`` is);
    an image that differs later is a DataError naming it and the option that fixes it. ``skip_bad``: an
    unreadable image is replaced by the next readable one (the same one every time), and logged."""

    def __init__(
        self,
        reader: ItemReader,
        items: Sequence[int] | np.ndarray,
        *,
        channels: int | None,
        resolution: Resolution | None,
        skip_bad: bool = False,
        label_captions: bool = False,
        caption_seed: int | None = None,
        shape: tuple[int, int, int] | None = None,
    ):
        self.reader, self.items = reader, np.asarray(items, dtype=np.int64)
        self.wanted_channels, self.wanted_resolution, self.skip_bad = channels, resolution, skip_bad
        self.labels = torch.from_numpy(reader.labels[self.items]) if reader.labels is not None else None
        self.captions = [reader.captions[i] for i in self.items.tolist()] if reader.captions is not None else None
        self.class_names, self.classes_named_by_index = named_classes(reader.labels, reader.class_names)
        self.name, self.skipped = reader.name, 0
        self.label_captions, self.caption_seed, self._caption_generator = False, None, None
        self._shape = shape or self._decode(0)[1].shape  # (H, W, C) of every image
        if label_captions:
            self._enable_label_captions(caption_seed)

    @property
    def images(self) -> Tensor:
        raise DataError(f"{self.name} is streamed from disk, not held in memory; read it with .batch(indices)")

    def fingerprint(self) -> dict[str, Any]:
        """As ``ImageDataset.fingerprint``, from what the reader stores (file names and sizes, shard members)
        instead of the decoded pixels; ``parts``: samples per shard, so that a shard read short is named."""
        digest = xxhash.xxh3_64(self.reader.manifest().encode("utf-8", "surrogatepass"))
        digest.update(self.items.data)
        record: dict[str, Any] = {"images": len(self), "digest": digest.hexdigest()}
        return record | ({"parts": parts} if (parts := self.reader.parts()) else {})

    channels = property(lambda self: shape_channels(self._shape))
    resolution = property(lambda self: shape_resolution(self._shape))

    def __len__(self) -> int:
        return len(self.items)

    def __repr__(self) -> str:
        return f"StreamedImageDataset({self.describe()})"

    def _decode(self, position: int) -> tuple[int, np.ndarray]:
        """(the reader's index, uint8 [H, W, C]) of example ``position``, or of the next readable one."""
        for attempt in range(len(self.items)):
            i = int(self.items[(position + attempt) % len(self.items)])
            try:
                arr, native = self.reader.decode(i, self.wanted_channels, self.wanted_resolution)
            except ValueError as e:
                if not self.skip_bad:
                    raise DataError(
                        f"Could not read image {self.reader.where(i)}: {e}. Remove or replace it, "
                        "or pass --skip-bad to skip unreadable images."
                    ) from None
                log.warning("skipping unreadable image %s: %s", self.reader.where(i), e)
                continue
            self._check(i, arr, native)
            return i, arr
        raise DataError(f"none of the {len(self.items)} images of {self.name} could be read")

    def _check(self, i: int, arr: np.ndarray, native: int) -> None:
        shape = getattr(self, "_shape", None)
        if shape is None or arr.shape == tuple(shape):
            return
        if self.wanted_channels is None and native != shape[2]:
            raise DataError(
                f"{self.name} mixes grayscale and colour images ({self.reader.where(i)} has {native} channel(s), "
                f"the first {shape[2]}); pass --image-channels 1 or 3 to convert them all"
            )
        raise DataError(
            f"{self.name} mixes image sizes (height x width: {self.reader.where(i)} is {arr.shape[0]}x{arr.shape[1]}, "
            f"the first {shape[0]}x{shape[1]}); pass --resolution N for squares or --resolution HxW"
        )

    def pixels(self, idx: Tensor) -> Tensor:
        arrays = [self._decode(int(p))[1] for p in idx.tolist()]
        return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()

    def _rebuild(self, idx: Tensor | None, *, label_captions: bool, caption_seed: int | None) -> ImageDataset:
        items = self.items if idx is None else self.items[idx.numpy()]
        return StreamedImageDataset(
            self.reader, items, channels=self.wanted_channels, resolution=self.wanted_resolution,
            skip_bad=self.skip_bad, label_captions=label_captions, caption_seed=caption_seed, shape=tuple(self._shape),
        )  # fmt: skip

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "streamed": True}


def stream_above_bytes() -> float:
    value = os.environ.get("AEDIFF_STREAM_ABOVE_GB", "")
    try:
        return float(value) * 1024**3 if value else STREAM_ABOVE_GB * 1024**3
    except ValueError:
        raise DataError(
            f"AEDIFF_STREAM_ABOVE_GB={value!r} is not a number of gigabytes; unset it or give e.g. 4"
        ) from None


def folder_is_large(reader: FolderReader, channels: int | None, resolution: Resolution | None) -> bool:
    """Whether the folder, decoded, would pass stream_above_bytes() (its first readable image's size times its
    count; with none of the first few readable, no: the in-memory reader then names the files, or skips them)."""
    for i in range(min(len(reader), 8)):
        try:
            arr, _ = reader.decode(i, channels, resolution)
        except ValueError:
            continue
        return arr.nbytes * len(reader) > stream_above_bytes()
    return False


def open_streamed(
    spec: str, stream: bool | None, channels: int | None, resolution: Resolution | None
) -> ItemReader | None:
    """The reader for ``spec`` when it is to be read from disk per batch, else None (read it into memory).
    ``stream``: True forces it (folder:, wds:, hf: only), False forbids it for a folder, None reads a folder so
    when it is large (``folder_is_large``); wds: is always read per batch (so --no-stream is refused), and so
    is hf: data that is not in Hugging Face streaming mode (``hfstream.streaming_name`` decides that first)."""
    kind, sep, rest = spec.strip().partition(":")
    kind = kind.lower() if sep else ""
    if kind == "wds" and stream is False:
        raise DataError("wds: data is always streamed from disk; drop --no-stream")
    if kind in ("wds", "hf"):
        return open_reader(kind, rest)
    if kind == "folder" and stream is not False:
        reader = open_reader(kind, rest)
        return reader if stream or folder_is_large(reader, channels, resolution) else None
    if stream:
        raise DataError(f"--stream applies to folder:, wds: and hf: data; {spec!r} is read into memory, drop --stream")
    return None
