"""Which data a run trains on, as a typed config (saved in the run's config.json)."""

from __future__ import annotations

from dataclasses import dataclass

from aediff.config import MAX_IMAGE_SIZE, FieldRangeError, bounded, check_ranges

from .dataset import ImageDataset
from .sources import load_dataset


@dataclass
class DataConfig:
    """Ranges are declared with each field (``aediff.config.bounded``) and checked when the config is built."""

    spec: str = "mnist5k"  # a name from `aediff datasets`, folder:PATH or npz:PATH
    # resize + center-crop to this side (pixels); None = native
    resolution: int | None = bounded(None, 1, MAX_IMAGE_SIZE)
    channels: int | None = bounded(None, 1, 3)  # 1 or 3; None = native
    seed: int = bounded(0, 0, 2**63 - 1)  # seed of the train/test split (numpy takes non-negative seeds)
    # held-out share for datasets without an official split
    test_fraction: float = bounded(0.2, 0, 1, low_open=True, high_open=True)
    skip_bad: bool = False  # skip unreadable images instead of stopping
    data_dir: str | None = None  # where local copies live (else $AEDIFF_DATA)

    def __post_init__(self) -> None:
        check_ranges(self, "data")
        if self.channels == 2:
            raise FieldRangeError("data.channels", "1 (grayscale), 3 (RGB) or none (native)", self.channels)

    def load(self, split: str = "train") -> ImageDataset:
        """The ``split`` ("train", "test" or "all") of the dataset this config names."""
        return load_dataset(
            self.spec,
            split,
            resolution=self.resolution,
            channels=self.channels,
            seed=self.seed,
            test_fraction=self.test_fraction,
            skip_bad=self.skip_bad,
            data_dir=self.data_dir,
        )
