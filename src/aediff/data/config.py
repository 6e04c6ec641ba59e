"""Which data a run trains on, as a typed config (saved in the run's config.json)."""

from __future__ import annotations

from dataclasses import dataclass

from .dataset import ImageDataset
from .sources import load_dataset


@dataclass
class DataConfig:
    spec: str = "mnist5k"  # a name from `aediff datasets`, folder:PATH or npz:PATH
    resolution: int | None = None  # resize + center-crop to this side (pixels); None = native
    channels: int | None = None  # 1 or 3; None = native
    seed: int = 0  # seed of the train/test split
    test_fraction: float = 0.2  # held-out share for datasets without an official split
    skip_bad: bool = False  # skip unreadable images instead of stopping
    data_dir: str | None = None  # where local copies live (else $AEDIFF_DATA)

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
