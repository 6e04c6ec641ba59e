"""What one request to the page may ask for, and how an uploaded file becomes a model's input.

Every cap is a constant here, stated on the page and in docs/app.md. An upload is checked before it is
decoded: its size in bytes, then its pixel count from the header alone (a decompression bomb is refused
before a single pixel is decoded), then its mode, which is converted (RGBA, LA, palette, 1-bit, 16-bit,
32-bit, float, CMYK, YCbCr, LAB, HSV) or refused with a message that names the problem and the fix. A model
is given the image in its own channels, and the page says so where that changes it (``channel_note``).
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from aediff.errors import ConfigError

MAX_UPLOAD_BYTES = 2 * 1024 * 1024  # an uploaded image file, bytes (Gradio itself refuses twice this)
MAX_UPLOAD_PIXELS = 4096 * 4096  # width * height of an uploaded image, read from its header
MAX_STEPS = 200  # sampling / denoising steps per request
MAX_COUNT = 64  # images generated per request
MAX_INTERPOLATION_FRAMES = 16  # images along an interpolation path
MAX_MAP_POINTS = 2000  # test-split images placed on the latent map
MAX_SEED = 2**31 - 1
CONCURRENCY = 2  # requests computed at once (Gradio's queue); the rest wait their turn
QUEUE_SIZE = 64  # requests that may wait; more are refused with "the queue is full"
DISPLAY_SIDE = 256  # images are shown enlarged to about this many pixels (nearest neighbour)


class InputError(ConfigError):
    """A request the page refuses: the message says what was wrong and what to do instead."""


def caps_text() -> str:
    """The caps as one sentence, for the page."""
    return (
        f"Uploads: at most {MAX_UPLOAD_BYTES // 1024 // 1024} MB and {MAX_UPLOAD_PIXELS // 1_000_000} megapixels; "
        f"at most {MAX_STEPS} steps and {MAX_COUNT} images per request; {CONCURRENCY} requests run at once, "
        f"up to {QUEUE_SIZE} wait in the queue."
    )


def check_whole(value: float | int | None, name: str, low: int, high: int) -> int:
    """``value`` as an int in [low, high], or InputError naming the field and its range."""
    if value is None or (isinstance(value, float) and not value.is_integer()):
        raise InputError(f"{name} must be a whole number from {low} to {high}, got {value!r}")
    number = int(value)
    if not low <= number <= high:
        raise InputError(f"{name} must be from {low} to {high} (a cap of this page), got {number}")
    return number


def read_upload(path: str | Path) -> Image.Image:
    """An uploaded file -> a PIL image in "L" or "RGB", checked against the caps (InputError otherwise)."""
    path = Path(path)
    size = path.stat().st_size
    if size > MAX_UPLOAD_BYTES:
        raise InputError(
            f"the file is {size / 1024 / 1024:.1f} MB; uploads are capped at {MAX_UPLOAD_BYTES // 1024 // 1024} MB "
            "- shrink or crop the image first"
        )
    return decode_image(path.read_bytes())


def decode_image(data: bytes) -> Image.Image:
    """Image file bytes -> a PIL image in "L" or "RGB" (InputError for a non-image, a bomb or an odd mode)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data))  # reads the header only
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise InputError(
                f"the image declares far more pixels than the cap of {MAX_UPLOAD_PIXELS // 1_000_000} megapixels "
                "(a decompression bomb is refused) - resize it first"
            ) from None
        except UnidentifiedImageError:
            raise InputError("the file is not an image this page can read; upload a PNG, JPEG, BMP or GIF") from None
        except OSError as exc:
            raise InputError(f"the image could not be read ({exc}); upload a PNG, JPEG, BMP or GIF") from None
        width, height = image.size
        if width * height > MAX_UPLOAD_PIXELS:
            raise InputError(
                f"the image is {width}x{height} pixels; uploads are capped at {MAX_UPLOAD_PIXELS // 1_000_000} "
                "megapixels (a decompression bomb is refused) - resize it first"
            )
        try:
            image.load()
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise InputError("the image file is damaged or truncated; upload it again or save it afresh") from None
    return normalize_mode(image)


def normalize_mode(image: Image.Image) -> Image.Image:
    """Any PIL mode -> "L" or "RGB": transparency composited over black (the digits' background), palettes
    expanded, 16/32-bit and float images scaled by their own range, CMYK / YCbCr / LAB / HSV converted."""
    mode = image.mode
    if mode in ("L", "RGB"):
        return image
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode in ("P", "1", "CMYK", "YCbCr", "LAB", "HSV"):
        return image.convert("RGB" if mode != "1" else "L")
    if mode.startswith(("I", "F")):  # I, I;16, I;16B, F: scale the image's own range to 0..255
        values = np.asarray(image, dtype=np.float64)
        low, high = float(values.min()), float(values.max())
        scaled = (values - low) / (high - low) * 255 if high > low else np.zeros_like(values)
        return Image.fromarray(scaled.round().astype(np.uint8))  # 2-D uint8: mode "L"
    raise InputError(f"images in mode {mode!r} are not supported; save it as an 8-bit RGB or grayscale PNG")


def image_to_tensor(image: Image.Image, shape: tuple[int, int, int]) -> torch.Tensor:
    """A PIL image ("L" or "RGB") -> [1, C, H, W] in [-1, 1] of a model's ``shape`` (C, H, W): converted to
    C channels (``channel_note`` says so to the user), resized with area averaging (box filter) to H x W."""
    channels, height, width = shape
    image = image.convert("L" if channels == 1 else "RGB").resize((width, height), Image.Resampling.BOX)
    array = np.asarray(image, dtype=np.float32).reshape(height, width, channels)
    return torch.from_numpy(array).permute(2, 0, 1)[None] / 127.5 - 1


def has_colour(image: Image.Image) -> bool:
    """Whether an "L" or "RGB" image holds colour: an RGB image whose channels differ at some pixel."""
    if image.mode == "L":
        return False
    array = np.asarray(image.convert("RGB"))
    return bool((array[..., 0] != array[..., 1]).any() or (array[..., 1] != array[..., 2]).any())


def channel_note(image: Image.Image, channels: dict[str, int]) -> str:
    """What ``image_to_tensor`` does to ``image`` ("L" or "RGB") for the models named in ``channels`` ({name:
    channels of its images}) whose channels it does not have, in a sentence per direction; "" when nothing
    changes. A colour image is given to 1-channel models as its luma (ITU-R 601; the colour is lost), a
    greyscale one to 3-channel models repeated on 3 channels (lossless)."""
    colour = has_colour(image)
    greyed = ", ".join(name for name, c in channels.items() if c == 1 and colour)
    repeated = ", ".join(name for name, c in channels.items() if c == 3 and image.mode == "L")
    notes = []
    if greyed:
        notes.append(f"Your image has colour; the greyscale model(s) {greyed} were given its luma (ITU-R 601), so "
                     "its colour is lost to them.")  # fmt: skip
    if repeated:
        notes.append(f"Your image is greyscale; the colour model(s) {repeated} were given it repeated on 3 "
                     "channels (nothing is lost).")  # fmt: skip
    return " ".join(notes)


def tensor_to_image(images: torch.Tensor, nrow: int | None = None, side: int = DISPLAY_SIDE) -> Image.Image:
    """Images [N, C, H, W] in [-1, 1] -> one PIL grid, enlarged (nearest neighbour) to about ``side`` pixels
    per row of images, so that 8x8 digits are visible."""
    from aediff.data.dataset import tile_images

    grid = tile_images(images.detach().float().cpu(), nrow, padding=1)
    array = grid.permute(1, 2, 0).numpy()
    image = Image.fromarray(array[..., 0] if grid.shape[0] == 1 else array)
    factor = max(1, min(side // max(images.shape[-1], 1), 2048 // max(image.width, 1)))
    return image.resize((image.width * factor, image.height * factor), Image.Resampling.NEAREST)
