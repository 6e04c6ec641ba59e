"""Pixel-level conversions shared by all readers (Pillow + numpy, no torchvision).

Arrays here are channels-last uint8 ``[H, W, C]`` / ``[N, H, W, C]`` with values 0..255.
The order is always: composite alpha on white -> convert channels -> resize to cover the target -> center-crop,
so that transparent borders never bleed dark pixels into the resampled image.

A target ``resolution`` is the side of a square (an int) or a (height, width) pair.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

Resolution = int | tuple[int, int]  # pixels: the side of a square, or (height, width)

_GRAY_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}


def image_channels(img: Image.Image) -> int:
    """Native channel count of a Pillow image: 1 for grayscale modes (with or without alpha), else 3."""
    return 1 if img.mode in _GRAY_MODES else 3


def _int_gray(img: Image.Image) -> np.ndarray:
    """16-bit ("I;16*") or 32-bit ("I") grayscale -> uint8 ``[H, W, 1]``, scaled by the bit depth.

    PNG stores 16-bit grayscale as 0..65535 (Pillow opens it as "I;16" or "I"), so 65535 is white and 255 is
    nearly black. Scaling by the observed maximum instead would make a dark image (all values <= 255) 256x
    too bright, and the brightness of each image would depend on its own content.
    """
    a = np.asarray(img).astype(np.int64)
    if a.size and (a.min() < 0 or a.max() > 65535):
        raise ValueError(
            f"its {img.mode!r} pixels range over {a.min()}..{a.max()}, outside the 16-bit range 0..65535 "
            "that is mapped to black..white; save it as an 8- or 16-bit image"
        )
    return ((a * 255 + 32767) // 65535).astype(np.uint8)[..., None]


def _float_gray(img: Image.Image) -> np.ndarray:
    """32-bit float ("F") grayscale -> uint8 ``[H, W, 1]``: values in [0, 1] (the convention of npz float
    images) map to 0..255; anything else is refused, since its scale (0..1, 0..255, HDR) cannot be known."""
    a = np.asarray(img, dtype=np.float64)
    if a.size and not (np.isfinite(a).all() and a.min() >= 0.0 and a.max() <= 1.0):
        raise ValueError(
            f"its float pixels range over {np.nanmin(a):g}..{np.nanmax(a):g}, not [0, 1]; rescale them to [0, 1] "
            "or save an 8-bit image"
        )
    return np.rint(a * 255.0).astype(np.uint8)[..., None]


def _native_array(img: Image.Image) -> np.ndarray:
    """Pillow image -> uint8 ``[H, W, C]`` with C = 1 (gray), 3 (RGB) or 4 (RGBA, alpha not yet applied).

    Modes: 1, L (gray); I;16*, I (16-bit gray, by bit depth); F (float gray in [0, 1]); LA, La, PA, RGBA,
    RGBa and any mode with a "transparency" entry (P, L, RGB with tRNS) -> RGBA; P, CMYK, YCbCr, RGBX, ...
    -> RGB by Pillow's conversion. A mode Pillow cannot convert raises ValueError.
    """
    mode = img.mode
    if mode.startswith("I;16") or mode == "I":
        return _int_gray(img)
    if mode == "F":
        return _float_gray(img)
    try:
        if mode == "La":  # premultiplied alpha: Pillow converts it to RGBA only by way of LA
            img = img.convert("LA")
        if mode in ("LA", "La", "PA", "RGBA", "RGBa") or "transparency" in img.info:
            return np.asarray(img.convert("RGBA"))
        if image_channels(img) == 1:
            return np.asarray(img.convert("L"))[..., None]
        return np.asarray(img.convert("RGB"))
    except (ValueError, OSError) as e:  # Pillow has no conversion for this mode
        raise ValueError(f"its pixel mode {mode!r} cannot be converted to RGB ({e})") from e


def composite_on_white(rgba: np.ndarray) -> np.ndarray:
    """uint8 ``[..., 4]`` RGBA -> uint8 ``[..., 3]`` RGB over a white background (alpha 0 -> white)."""
    rgb = rgba[..., :3].astype(np.uint32)
    a = rgba[..., 3:4].astype(np.uint32)
    return ((rgb * a + 255 * (255 - a) + 127) // 255).astype(np.uint8)


def to_gray(rgb: np.ndarray) -> np.ndarray:
    """uint8 ``[..., 3]`` -> uint8 ``[..., 1]`` with Pillow's ITU-R 601-2 luma (as convert("L"))."""
    r, g, b = (rgb[..., i].astype(np.uint32) for i in range(3))
    return ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).astype(np.uint8)[..., None]


def convert_channels(images: np.ndarray, channels: int) -> np.ndarray:
    """uint8 ``[..., C]`` (C in 1, 3, 4) -> uint8 ``[..., channels]`` (1 or 3); RGBA is put on white."""
    if images.shape[-1] == 4:
        images = composite_on_white(images)
    c = images.shape[-1]
    if c == channels:
        return images
    if channels == 3:
        return np.repeat(images, 3, axis=-1)
    return to_gray(images)


def channel_conversion(native: np.ndarray, channels: int | None) -> str:
    """What converting images whose own channel counts are ``native`` [N] (1: greyscale; 3, 4: colour, RGBA) to
    ``channels`` does, in one sentence; "" when it changes none (``channels`` None keeps each image's own)."""
    native = np.asarray(native)
    if channels is None or native.size == 0:
        return ""
    if channels == 1:
        colour = int((native != 1).sum())
        lost = "converted to greyscale (ITU-R 601 luma): their colour is lost"
        return f"{colour} of {native.size} images are colour, {lost}" if colour else ""
    grey = int((native == 1).sum())
    return f"{grey} of {native.size} images are greyscale, repeated on 3 channels (nothing is lost)" if grey else ""


def target_size(resolution: Resolution) -> tuple[int, int]:
    """(height, width) that ``resolution`` asks for: an int is the side of a square."""
    if isinstance(resolution, int):
        return resolution, resolution
    height, width = resolution
    return int(height), int(width)


def resize_center_crop(
    arr: np.ndarray, resolution: Resolution, resample: Image.Resampling = Image.Resampling.BICUBIC
) -> np.ndarray:
    """uint8 ``[H, W, C]`` -> uint8 ``[h, w, C]`` with (h, w) = ``target_size(resolution)``: a resize that keeps
    the aspect ratio and just covers h x w (the shorter side, for a square target), with ``resample`` (bicubic
    by default; Pillow antialiases when shrinking), then a center crop of what overhangs."""
    h, w, c = arr.shape
    th, tw = target_size(resolution)
    if (h, w) == (th, tw):
        return arr
    scale = max(th / h, tw / w)  # the smallest scale at which both sides cover the target
    nw, nh = max(tw, round(w * scale)), max(th, round(h * scale))
    img = Image.fromarray(np.ascontiguousarray(arr[..., 0]) if c == 1 else arr)  # uint8 -> "L" / "RGB"
    if (nw, nh) != (w, h):
        img = img.resize((nw, nh), resample)
    left, top = (nw - tw) // 2, (nh - th) // 2
    out = np.asarray(img.crop((left, top, left + tw, top + th)))
    return out[..., None] if c == 1 else out


def pil_to_array(img: Image.Image, channels: int, resolution: Resolution | None) -> np.ndarray:
    """Decoded Pillow image -> uint8 ``[H, W, channels]`` (resized and cropped to ``resolution`` if given)."""
    arr = convert_channels(_native_array(img), channels)
    return resize_center_crop(arr, resolution) if resolution else arr


def prepare_array(
    images: np.ndarray,
    channels: int | None,
    resolution: Resolution | None,
    resample: Image.Resampling = Image.Resampling.BICUBIC,
) -> np.ndarray:
    """uint8 ``[N, H, W, C]`` (C in 1, 3, 4) -> uint8 ``[N, h, w, channels]`` with (h, w) =
    ``target_size(resolution)``; None keeps size/channels.

    RGBA always becomes RGB on white, because the dataset only holds 1- or 3-channel images.
    ``resample``: the Pillow filter for the resize (see :func:`resize_center_crop`).
    """
    if channels is None:
        channels = 1 if images.shape[-1] == 1 else 3
    images = convert_channels(images, channels)
    if resolution and images.shape[1:3] != target_size(resolution):
        images = np.stack([resize_center_crop(a, resolution, resample) for a in images])
    return np.ascontiguousarray(images)
