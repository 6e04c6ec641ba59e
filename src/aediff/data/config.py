"""Which data a run trains on, as a typed config (saved in the run's config.json)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from aediff.config import MAX_IMAGE_SIZE, FieldRangeError, bounded, check_ranges

from .dataset import ImageDataset
from .hfstream import HEAD_IMAGES, ImageStream
from .loader import Augmentation
from .sources import load_dataset
from .streamed import StreamedImageDataset


@dataclass
class DataConfig:
    """Ranges are declared with each field (``aediff.config.bounded``) and checked when the config is built."""

    spec: str = "mnist5k"  # a name from `aediff datasets`, folder:PATH, npz:PATH, wds:DIR/{000..009}.tar or hf:NAME
    # pixels: a square's side or (height, width); resize to cover it, keeping the aspect ratio, then
    # center-crop; None = native (non-square images keep their shape)
    resolution: int | tuple[int, int] | None = bounded(None, 1, MAX_IMAGE_SIZE, pair=True)
    channels: int | None = bounded(None, 1, 3)  # 1 or 3; None = native
    seed: int = bounded(0, 0, 2**63 - 1)  # seed of the train/test split (numpy takes non-negative seeds)
    # held-out share for datasets without an official split
    test_fraction: float = bounded(0.2, 0, 1, low_open=True, high_open=True)
    skip_bad: bool = False  # skip unreadable images instead of stopping
    # read images from disk per batch: None = wds:/hf: data and folders over 2 GB decoded; True / False force it;
    # hf:NAME (not a save_to_disk folder) is in Hugging Face streaming mode unless False (then read by position)
    stream: bool | None = None
    # processes decoding training batches ahead; None = none in memory, 1-4 when streaming; hf: streaming mode:
    # one background thread unless 0 (its order is one sequence)
    workers: int | None = bounded(None, 0, 64)
    flip: bool = False  # training augmentation: mirror left-right with probability 1/2 (off: digits must not be)
    crop: float = bounded(1.0, 0, 1, low_open=True)  # training augmentation: random window of this share of each side
    data_dir: str | None = None  # where local copies live (else $AEDIFF_DATA)

    def __post_init__(self) -> None:
        check_ranges(self, "data")
        if isinstance(self.resolution, list):  # a pair given as a list (as JSON has it): one type downstream
            self.resolution = (self.resolution[0], self.resolution[1])
        if self.channels == 2:
            raise FieldRangeError("data.channels", "1 (grayscale), 3 (RGB) or none (native)", self.channels)

    def load(self, split: str = "train") -> ImageDataset | ImageStream:
        """The ``split`` ("train", "test" or "all") of the dataset this config names."""
        return load_dataset(
            self.spec,
            split,
            resolution=self.resolution,
            channels=self.channels,
            seed=self.seed,
            test_fraction=self.test_fraction,
            stream=self.stream,
            skip_bad=self.skip_bad,
            data_dir=self.data_dir,
        )

    def load_by_position(self, split: str = "test", limit: int = HEAD_IMAGES) -> ImageDataset:
        """The ``split`` as a dataset read by position (evaluation): a split in Hugging Face streaming mode, which
        has no positions, gives its first ``limit`` images, held in memory (``ImageStream.head``)."""
        data = self.load(split)
        return data.head(limit) if isinstance(data, ImageStream) else data

    @property
    def augmentation(self) -> Augmentation:
        """The training augmentation these settings ask for (none by default)."""
        return Augmentation(flip=self.flip, crop=self.crop)

    def loader_workers(self, dataset: ImageDataset | ImageStream) -> int:
        """Processes that build training batches ahead: ``workers`` when set; else none for data in memory
        (a batch is one tensor index) and, for a streamed dataset, one per spare core (1 to 4). A stream in
        Hugging Face streaming mode is loaded ahead by one thread, unless ``workers`` is 0."""
        if isinstance(dataset, ImageStream):
            return 0 if self.workers == 0 else 1
        if self.workers is not None:
            return self.workers
        if not isinstance(dataset, StreamedImageDataset):
            return 0
        return max(1, min(4, (os.cpu_count() or 2) - 1))
