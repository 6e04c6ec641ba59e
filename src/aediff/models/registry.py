"""Family name -> model class. Each model file registers itself; nothing here knows the families.

A registered class has ``family: str``, ``config_class`` (a dataclass) and ``__init__(config)``.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from aediff.config import config_from_dict
from aediff.errors import ConfigError

MODELS: dict[str, type[nn.Module]] = {}


def register_model(cls: type[nn.Module]) -> type[nn.Module]:
    """Class decorator: make ``cls`` buildable by its ``family`` name (``aediff train FAMILY``)."""
    family = cls.family  # type: ignore[attr-defined]
    if family in MODELS and MODELS[family] is not cls:
        raise ValueError(f"model family {family!r} registered twice")
    MODELS[family] = cls
    return cls


def model_class(family: str) -> type[nn.Module]:
    """The class registered under ``family``; a clear error lists the valid names."""
    try:
        return MODELS[family]
    except KeyError:
        raise ConfigError(
            f"unknown model family {family!r}; choose one of: {', '.join(sorted(MODELS))}"
        ) from None


def build_model(family: str, config: Any | dict[str, Any]) -> nn.Module:
    """Build a model of ``family`` from its config dataclass or a dict of its fields."""
    cls = model_class(family)
    if isinstance(config, dict):
        config = config_from_dict(cls.config_class, config)  # type: ignore[attr-defined]
    return cls(config)
