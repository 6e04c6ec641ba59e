"""The registry of built-in datasets: one ``DatasetSource`` per dataset, declared next to its loader (one
module per loader family: ``bundled``, ``mnist``, ``cifar``, ``twemoji``, each with its ``SOURCES``) and
registered in order by ``sources.py``, and what a loader returns (``RawDataset``). ``load_dataset`` and
``list_datasets`` both read it."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
from PIL import Image

from .files import ImageArrays

DIGIT_CLASSES = [str(d) for d in range(10)]

#: What a dataset carries besides images: integer class ``labels`` (with class names), per-image text
#: ``captions``, or ``none``.
DatasetTargets = Literal["labels", "captions", "none"]
DATASET_TARGETS: tuple[str, ...] = get_args(DatasetTargets)


@dataclass
class DatasetInfo:
    """One row of ``aediff datasets``: whether a built-in dataset can be loaded right now without internet."""

    name: str
    description: str
    offline_available: bool
    how_to_get: str
    license: str = ""  # credit the data needs when images or models made from it are shared
    targets: DatasetTargets = "none"  # "labels", "captions" or "none"


@dataclass
class RawDataset(ImageArrays):
    """A whole dataset before splitting (``ImageArrays``) and how to split and resize it."""

    test_mask: np.ndarray | None = None  # official split: True for test examples; None -> split by seed
    skipped: int = 0
    prepared: bool = False  # resolution/channels already applied while decoding (folders)
    native_channels: np.ndarray | None = None  # prepared: [N] each image's own channels (else images.shape[-1])
    resample: Image.Resampling = Image.Resampling.BICUBIC  # filter for the resize to `resolution`


def official_split(train: tuple, test: tuple, class_names: list[str] | None) -> RawDataset:
    """(images, labels) of the official train and test splits -> one RawDataset with ``test_mask``."""
    images = np.concatenate([train[0], test[0]])
    labels = np.concatenate([train[1], test[1]]).astype(np.int64)
    mask = np.zeros(len(images), dtype=bool)
    mask[len(train[0]) :] = True
    return RawDataset(images, labels, class_names=class_names, test_mask=mask)


@dataclass(frozen=True)
class LoadRequest:
    """What a built-in dataset's loader gets from ``load_dataset`` besides the name."""

    data_dir: str | os.PathLike | None = None  # searched first for files (--data-dir); None: $AEDIFF_DATA only
    skip_bad: bool = False  # skip unreadable image files (counted in ``RawDataset.skipped``) instead of raising


@dataclass(frozen=True, kw_only=True)
class DatasetSource:
    """One built-in dataset: how it loads, whether it loads offline, and how ``aediff datasets`` describes it.

    ``load(request)`` returns the whole set before splitting and resizing: a ``RawDataset`` with uint8 images
    ``[N, H, W, C]`` (0..255, C in 1, 3) and the labels or captions that ``targets`` promises; it raises
    :class:`DataError` saying how to get the data when it is missing. ``offline(data_dir)`` says from local
    files only (fast, no import of the data's package, no network) whether ``load`` would work right now
    without internet. Names and aliases are lowercase and match case-insensitively.
    """

    name: str  # e.g. "mnist5k"
    description: str  # one line: contents, size, resolution, classes
    load: Callable[[LoadRequest], RawDataset]
    offline: Callable[[str | os.PathLike | None], bool]
    how_to_get: str  # what to install or where to put files; shown in a table, so no [..] (rich markup)
    targets: DatasetTargets
    license: str = ""  # credit the data needs when images or models made from it are shared
    aliases: tuple[str, ...] = ()  # other accepted spellings, e.g. "mnist_5k"


#: Built-in datasets by name, in the order ``aediff datasets`` lists them; filled by :func:`register_dataset`.
DATASETS: dict[str, DatasetSource] = {}


def register_dataset(source: DatasetSource) -> DatasetSource:
    """Add ``source`` to :data:`DATASETS` and return it.

    Raises:
        ValueError: the name or an alias is already taken (as a name or an alias), is not a lowercase
            non-empty string without ':' (``kind:PATH`` is reserved for formats such as ``folder:``), or
            ``targets`` is not one of :data:`DATASET_TARGETS`.
    """
    spellings = (source.name, *source.aliases)
    for s in spellings:
        if not isinstance(s, str) or not s or s != s.strip().lower() or ":" in s:
            raise ValueError(f"dataset name/alias {s!r} must be a non-empty lowercase string without ':'")
    if len(set(spellings)) != len(spellings):
        raise ValueError(f"dataset {source.name!r} lists the same spelling twice: {spellings}")
    taken = {s: other.name for other in DATASETS.values() for s in (other.name, *other.aliases)}
    clashes = [f"{s!r} (used by {taken[s]!r})" for s in spellings if s in taken]
    if clashes:
        raise ValueError(f"cannot register dataset {source.name!r}: {', '.join(clashes)} already registered")
    if source.targets not in DATASET_TARGETS:
        raise ValueError(f"dataset {source.name!r}: targets must be one of {DATASET_TARGETS}, got {source.targets!r}")
    DATASETS[source.name] = source
    return source


def find_dataset(name: str) -> DatasetSource | None:
    """The registered dataset called ``name`` or having it as an alias (case-insensitive), or None."""
    key = name.strip().lower()
    if key in DATASETS:
        return DATASETS[key]
    return next((s for s in DATASETS.values() if key in s.aliases), None)
