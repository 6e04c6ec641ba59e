"""Datasets for aediff: in-memory uint8 image sets with deterministic splits.

>>> ds = load_dataset("mnist5k", "train", resolution=32)       # doctest: +SKIP
>>> ds.batch([0, 1])["images"].shape                           # float32 in [-1, 1]   # doctest: +SKIP
torch.Size([2, 1, 32, 32])

Specs: ``digits``, ``mnist5k``, ``mnist``, ``fashion-mnist``, ``cifar10``, ``folder:PATH``, ``npz:PATH``.
All user-facing problems raise :class:`aediff.errors.DataError`.
"""

from .dataset import ImageDataset, save_image_grid, split_indices, to_uint8
from .files import read_idx, read_image_folder, read_npz, write_idx
from .sources import DatasetInfo, cache_dir, list_datasets, load_dataset

__all__ = [
    "DatasetInfo",
    "ImageDataset",
    "cache_dir",
    "list_datasets",
    "load_dataset",
    "read_idx",
    "read_image_folder",
    "read_npz",
    "save_image_grid",
    "split_indices",
    "to_uint8",
    "write_idx",
]
