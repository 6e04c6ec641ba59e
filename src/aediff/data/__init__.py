"""Datasets for aediff: in-memory uint8 image sets with deterministic splits.

>>> ds = load_dataset("mnist5k", "train", resolution=32)       # doctest: +SKIP
>>> ds.batch([0, 1])["images"].shape                           # float32 in [-1, 1]   # doctest: +SKIP
torch.Size([2, 1, 32, 32])

Specs: ``digits``, ``mnist5k``, ``mnist``, ``fashion-mnist``, ``cifar10``, ``emoji`` (the registry
``DATASETS``, one :class:`DatasetSource` each, added with :func:`register_dataset`), ``folder:PATH``,
``npz:PATH``, ``wds:DIR/{000..099}.tar`` and ``hf:NAME``; the last two, and large folders, are read from disk
per batch (:class:`StreamedImageDataset`, ``stream=`` in :func:`load_dataset`); an ``hf:`` Hub id or folder of
data files is read in order in Hugging Face streaming mode (:class:`ImageStream`).

Captions: ``emoji``, folders with a metadata.jsonl/csv and npz files with a ``captions`` array have real
captions; labelled sets get captions made from their class names (labels without names: "class 0", "class 1",
..., and ``ds.classes_named_by_index``) with
``ds.with_label_captions()`` (or ``load_dataset(..., label_captions=True)``):

>>> load_dataset("mnist5k", label_captions=True).batch([0, 1])["captions"]   # doctest: +SKIP
['the digit five', 'a drawing of the digit 0']

All user-facing problems raise :class:`aediff.errors.DataError`.
"""

from .cache import cache_dir
from .captions import caption_templates, fill_template, index_class_names, label_caption, label_captions
from .config import DataConfig
from .dataset import ImageDataset, check_captions_available, save_image_grid, split_indices, tile_images, to_uint8
from .files import read_idx, read_image_folder, read_npz, write_idx
from .hfstream import ImageStream
from .registry import DATASETS, DatasetInfo, DatasetSource, LoadRequest, find_dataset, register_dataset
from .sources import list_datasets, load_dataset
from .streamed import StreamedImageDataset
from .twemoji import EMOJI_CREDIT, emoji_caption

__all__ = [
    "DATASETS",
    "EMOJI_CREDIT",
    "DataConfig",
    "DatasetInfo",
    "DatasetSource",
    "LoadRequest",
    "ImageDataset",
    "ImageStream",
    "StreamedImageDataset",
    "cache_dir",
    "check_captions_available",
    "caption_templates",
    "emoji_caption",
    "fill_template",
    "index_class_names",
    "find_dataset",
    "label_caption",
    "label_captions",
    "list_datasets",
    "load_dataset",
    "read_idx",
    "read_image_folder",
    "read_npz",
    "register_dataset",
    "save_image_grid",
    "tile_images",
    "split_indices",
    "to_uint8",
    "write_idx",
]
