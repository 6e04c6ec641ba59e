"""Family name -> model class. Each model file registers itself; nothing here knows the families.

A registered class subclasses ``aediff.models.interface.Model``: it has ``family``, ``config_class`` (a
dataclass), ``declared`` capabilities and ``__init__(config, **components)``.
"""

from __future__ import annotations

from typing import Any

from aediff.config import update_config
from aediff.errors import ConfigError
from aediff.models.interface import Model
from aediff.models.sizes import check_model_size

MODELS: dict[str, type[Model]] = {}


def register_model(cls: type[Model]) -> type[Model]:
    """Class decorator: make ``cls`` buildable by its ``family`` name (``aediff train FAMILY``)."""
    if not issubclass(cls, Model):
        raise TypeError(f"{cls.__name__} must subclass aediff.models.interface.Model to be registered")
    if cls.family in MODELS and MODELS[cls.family] is not cls:
        raise ValueError(f"model family {cls.family!r} registered twice")
    MODELS[cls.family] = cls
    return cls


def model_class(family: str) -> type[Model]:
    """The class registered under ``family``; a clear error lists the valid names."""
    try:
        return MODELS[family]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown model family {family!r}; choose one of: {', '.join(sorted(MODELS))}") from None


def build_model(family: str, config: Any, **components: Any) -> Model:
    """Build a model of ``family`` from its config dataclass, or from overrides of its default config (a dict
    keyed by dotted paths or unique field names, see ``aediff.config.update_config``); ``components`` are
    parts it is given rather than builds (latent diffusion's trained autoencoder). A model too large for memory
    is refused before anything is allocated (``aediff.models.sizes.check_model_size``; $AEDIFF_MAX_MODEL_GB)."""
    cls = model_class(family)
    if isinstance(config, dict):
        config = update_config(cls.config_class(), config)
    check_model_size(cls, config, **components)
    return cls(config, **components)
