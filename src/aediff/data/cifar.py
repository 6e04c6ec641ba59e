"""CIFAR-10 from a JPEG folder (train/<class>/*.jpg, test/<class>/*.jpg) or its archive, extracted once
into the cache; else downloaded with Hugging Face ``datasets``."""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
from pathlib import Path

import numpy as np

from aediff.errors import DataError

from . import cache
from .files import read_image_folder
from .registry import DatasetSource, RawDataset, official_split

CIFAR_ARCHIVES = ("cifar10-jpeg.tar.gz", "cifar10.tar.gz")


def _is_archive(p: Path) -> bool:
    return p.is_file() and p.name.lower().endswith((".tar.gz", ".tgz", ".tar"))


def _has_split_dirs(p: Path) -> bool:
    return (p / "train").is_dir() and (p / "test").is_dir()


def _find_cifar10(data_dir: str | os.PathLike | None) -> tuple[Path | None, list[str]]:
    """A folder with train/ and test/ sub-folders, or a .tar.gz of one; returns (path or None, searched)."""
    candidates = cache.data_roots("cifar10", data_dir)
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
    return cache.cache_dir() / f"{archive.name.split('.')[0]}-{key}"


def _extract_archive(archive: Path) -> Path:
    """Extract ``archive`` once into the cache folder; returns the folder that holds train/ and test/."""
    target = _extraction_dir(archive)
    if not (target / ".complete").is_file():
        cache.log.info("extracting %s into %s (once)", archive, cache.CACHE_DESCRIPTION)
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
            reason = cache.hide_machine_paths(str(e), {tmp: f"<contents of {archive}>"})
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
        f"(extracted into {cache.CACHE_DESCRIPTION}); use the cifar10-jpeg.tar.gz layout."
    )


def _decode_cifar_archive(archive: Path, skip_bad: bool) -> dict[str, np.ndarray]:
    """Extract (once) and decode a CIFAR-10 archive; messages name the archive, not its cache folder."""
    root = _extract_archive(archive)
    with cache.paths_described({_extraction_dir(archive): f"<contents of {archive}>"}):
        return _decode_cifar_folder(root, skip_bad)


def _decode_cifar_folder(root: Path, skip_bad: bool) -> dict[str, np.ndarray]:
    cache.log.info("decoding CIFAR-10 images under %s (cached as .npz for next time)", root)
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


def _load_cifar10(data_dir: str | os.PathLike | None, skip_bad: bool) -> RawDataset:
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
        d = cache.cached("cifar10", key, build, valid=lambda d: skip_bad or int(d.get("skipped", 0)) == 0)
        raw = official_split(
            (d["train_images"], d["train_labels"]),
            (d["test_images"], d["test_labels"]),
            [str(c) for c in d["class_names"].tolist()],
        )
        raw.skipped = int(d.get("skipped", 0))
        return raw

    hub_note = "the Hugging Face `datasets` package is not installed"
    if cache.hub_available():
        try:
            d = cache.load_from_hub("cifar10")
            names = [str(c) for c in d["class_names"].tolist()] if "class_names" in d else None
            return official_split((d["train_images"], d["train_labels"]), (d["test_images"], d["test_labels"]), names)
        except Exception as e:  # offline etc.: fall through to the explanation
            hub_note = (
                "downloading uoft-cs/cifar10 with Hugging Face `datasets` failed "
                f"({type(e).__name__}: {cache.hide_machine_paths(str(e))})"
            )
    raise DataError(
        f"CIFAR-10 is not available: no local copy found (searched: {'; '.join(searched) or 'nothing'}) and "
        f"{hub_note}. To fix, either:\n"
        "  - set AEDIFF_DATA=FOLDER (every command; `aediff train` also takes --data-dir, Python data_dir=), where "
        "FOLDER holds a cifar10/ folder laid out as train/<class>/*.jpg and test/<class>/*.jpg, or the "
        f"cifar10-jpeg.tar.gz archive of that layout (extracted once into {cache.CACHE_DESCRIPTION})\n"
        "  - when online, `pip install datasets` to download uoft-cs/cifar10 from Hugging Face"
    )


CIFAR10 = DatasetSource(
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


SOURCES = (CIFAR10,)  # in the order ``aediff datasets`` lists them
