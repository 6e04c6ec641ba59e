"""How big a model a config asks for, known before anything is allocated, and a guard against absurd ones.

A config that passes every range (``aediff.config.check_ranges``) can still describe a model that does not fit
in memory: ``channels=(60000,)`` is a 3x3 convolution of 60000 x 60000 channels (130 GB of weights), and a
spatial latent of 4 x 256 x 256 gives the autoencoder's latent Gaussian a 262144 x 262144 covariance buffer.
``check_model_size`` builds the model on PyTorch's meta device (shapes only, no storage), counts its
parameters and buffers, and refuses a model whose fp32 size exceeds the limit, naming the field that makes it
large. Activations are not estimated: they scale with the batch size, which the model config does not know.

The limit is 8 GB of fp32 parameters and buffers (about 2 billion numbers; training needs roughly four times
that for the gradients, Adam's two moments and the EMA copy). Override it with the environment variable
``AEDIFF_MAX_MODEL_GB`` (a positive number of GB, e.g. ``AEDIFF_MAX_MODEL_GB=40``) or per call.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any

import torch

from aediff.config import field_paths, update_config
from aediff.errors import ConfigError

LIMIT_ENV = "AEDIFF_MAX_MODEL_GB"
DEFAULT_LIMIT_GB = 8.0
BYTES_PER_NUMBER = 4  # fp32
GB = 1e9


def default_limit_bytes() -> float:
    """The size limit in bytes: ``$AEDIFF_MAX_MODEL_GB`` GB when set, else 8 GB."""
    raw = os.environ.get(LIMIT_ENV, "").strip()
    if not raw:
        return DEFAULT_LIMIT_GB * GB
    try:
        gb = float(raw)
    except ValueError:
        gb = math.nan
    if not 0 < gb < math.inf:
        raise ConfigError(f"{LIMIT_ENV} must be a positive number of GB, e.g. {LIMIT_ENV}=40; got {raw!r}")
    return gb * GB


def _sizing_config(config: Any) -> Any:
    """``config`` with a frozen pretrained text encoder swapped for a learned one of a typical width: building
    on meta must not load (or download) pretrained weights, and a frozen encoder's weights are not the model's
    own parameters anyway. The U-Net's cross-attention inputs then have width 768 (CLIP's is 512 or 768)."""
    conditioning = getattr(config, "conditioning", None)
    if conditioning is None or conditioning.kind != "text" or conditioning.text_encoder == "learned":
        return config
    learned = dataclasses.replace(conditioning, text_encoder="learned", text_width=768, text_layers=1)
    return dataclasses.replace(config, conditioning=learned)


def count_numbers(cls: type, config: Any, **components: Any) -> int:
    """Parameters plus buffers of ``cls(config, **components)``, counted on the meta device (nothing is
    allocated; given components, e.g. latent diffusion's trained autoencoder, are counted as they are)."""
    with torch.device("meta"):
        model = cls(_sizing_config(config), **components)
    return sum(t.numel() for t in model.parameters()) + sum(t.numel() for t in model.buffers())


def _culprit(cls: type, config: Any, numbers: int, **components: Any) -> tuple[str, Any, Any, int] | None:
    """The size field whose default (or 1) shrinks the model most: (dotted path, its value, the smaller one, the
    number count with it)."""
    defaults = update_config(cls.config_class(), {})
    best, best_numbers = None, numbers
    for path in field_paths(type(config)):
        value, default = _get(config, path), _get(defaults, path)
        if value == default or not _is_size(value):
            continue
        # The default, or 1 where the default does not fit this config (num_classes 0 with class labels).
        for smaller_value in (default, 1):
            try:
                smaller = count_numbers(cls, update_config(config, {path: smaller_value}), **components)
            except ConfigError:
                continue
            if smaller < best_numbers:
                best, best_numbers = (path, value, smaller_value, smaller), smaller
            break
    return best


def _get(config: Any, path: str) -> Any:
    for part in path.split("."):
        config = getattr(config, part)
    return config


def _shown(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _is_size(value: Any) -> bool:
    """Whole numbers (and lists of them) are what make a model large."""
    items = value if isinstance(value, (tuple, list)) else (value,)
    return bool(items) and all(isinstance(v, int) and not isinstance(v, bool) for v in items)


def check_model_size(cls: type, config: Any, limit_bytes: float | None = None, **components: Any) -> int:
    """ConfigError when the model ``cls(config, **components)`` would hold more than ``limit_bytes`` of fp32
    parameters and buffers (default: ``default_limit_bytes()``, 8 GB unless ``$AEDIFF_MAX_MODEL_GB`` says so);
    the message names the field that makes it large and how to raise the limit. Returns the number count."""
    limit = default_limit_bytes() if limit_bytes is None else limit_bytes
    numbers = count_numbers(cls, config, **components)
    size = numbers * BYTES_PER_NUMBER
    if size <= limit:
        return numbers
    message = (
        f"this {cls.family} model would hold {numbers:.3g} parameters and buffers ({size / GB:.1f} GB in fp32; "
        f"training needs about 4x that), above the limit of {limit / GB:g} GB"
    )
    culprit = _culprit(cls, config, numbers, **components)
    if culprit is not None:
        path, value, smaller_value, smaller = culprit
        with_smaller = f"{smaller * BYTES_PER_NUMBER / GB:.2g} GB with {_shown(smaller_value)}"
        message += f": {path}={_shown(value)} makes it large ({with_smaller})"
        if path.endswith("num_classes"):
            message += "; num_classes is set from the data's labels (the largest + 1): check them"
    needed = math.ceil(size / GB * 1.1)
    raise ConfigError(
        f"{message}. Choose smaller sizes, or if the memory is there raise the limit: {LIMIT_ENV}={needed}"
    )
