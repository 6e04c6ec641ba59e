"""Defaults that follow the data, as a run records them: the training recipe's part of each size rule
(``TRAINING_DEFAULTS``; the network's part is declared by each family, ``aediff.models.defaults``), and
``DataDefaults``: what a new run's data chose, written to config.json as ``"data_defaults"``.

The user's own options win over the data's defaults, and a resumed run never derives them again (it goes on with
its config.json). A config.json from before the record reads as None: it was built from the fixed defaults.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aediff.config import resolve_field
from aediff.models import model_class
from aediff.models.defaults import DataShape, network_defaults
from aediff.runs.training_config import TrainConfig

# Size rule -> family -> TrainConfig overrides (greyscale up to 32 px: TrainConfig's defaults for every family).
# Reasoned, not searched (docs/scale.md). Wider networks (aediff.models.defaults) take a smaller peak learning rate; an
# EMA decay above 0.999 only tells in runs of many thousand steps (the warm-up min(decay, (1 + t) / (10 + t))
# holds it below 0.999 for the first 9,000), which larger images need anyway; at over 64 px a batch of 32 keeps
# a step's memory and time near a 32 px step's.
_DIFFUSION_MEDIUM = {"lr": 3e-4, "ema_decay": 0.9995}
_DIFFUSION_LARGE = {"batch_size": 32, "lr": 2e-4, "ema_decay": 0.9999}
TRAINING_DEFAULTS: dict[str, dict[str, dict[str, Any]]] = {
    "colour-small": {"diffusion": {"lr": 5e-4}, "latent-diffusion": {"lr": 5e-4}},
    "medium": {"diffusion": _DIFFUSION_MEDIUM, "latent-diffusion": _DIFFUSION_MEDIUM},
    "large": {"diffusion": _DIFFUSION_LARGE, "latent-diffusion": _DIFFUSION_LARGE},
}

# How ``DataDefaults.describe`` names a field (by its last dotted part); others go by their own name.
_LABELS = {
    "channels": "channels",
    "attention_resolutions": "attention at",
    "blocks_per_stage": "blocks per stage",
    "bottleneck_dim": "bottleneck",
    "latent_channels": "latent channels",
    "batch_size": "batch",
    "lr": "lr",
    "ema_decay": "ema",
}


@dataclass(frozen=True)
class DataDefaults:
    """What the data's shape changed in a new run's configs: the size ``rule`` that ``shape`` fell under, and
    the model (dotted paths of the family's config) and training (TrainConfig fields) values it set; values the
    user chose are not among them."""

    rule: str
    shape: DataShape
    model: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        """As config.json keeps it: {"rule", "shape": [C, H, W], "model", "training"}."""
        shape = [self.shape.channels, self.shape.height, self.shape.width]
        return {"rule": self.rule, "shape": shape, "model": dict(self.model), "training": dict(self.training)}

    @classmethod
    def from_record(cls, stored: Any) -> DataDefaults:
        """The inverse of ``record``; ValueError naming what is wrong in a damaged record."""
        if not isinstance(stored, dict) or not isinstance(stored.get("rule"), str):
            raise ValueError(f"data_defaults should be an object with a 'rule' name, got {stored!r}")
        shape, model, training = stored.get("shape"), stored.get("model", {}), stored.get("training", {})
        if not (isinstance(shape, list) and len(shape) == 3 and all(isinstance(n, int) for n in shape)):
            raise ValueError(f"data_defaults.shape should be [channels, height, width], got {shape!r}")
        if not isinstance(model, dict) or not isinstance(training, dict):
            raise ValueError("data_defaults.model and .training should be objects of settings")
        return cls(stored["rule"], DataShape(*shape), model, training)

    def changes(self) -> str:
        """What the rule set, in words: "channels 48,96,96, attention at 8, lr 5e-4" ("" for nothing)."""
        return ", ".join(_setting(path, value) for path, value in {**self.model, **self.training}.items())

    def describe(self) -> str:
        """One line: "defaults for 32x32 RGB (rule colour-small): channels 48,96,96, attention at 8, lr 5e-4"."""
        said = self.changes() or "no change from the built-in defaults"
        return f"defaults for {self.shape.describe()} (rule {self.rule}): {said}"


def _setting(path: str, value: Any) -> str:
    name = path.rsplit(".", 1)[-1]
    if isinstance(value, (list, tuple)):
        shown = ",".join(str(v) for v in value) if value else "none"
    else:
        shown = _number(value) if isinstance(value, float) else str(value)
    return f"{_LABELS.get(name, name)} {shown}"


def _number(value: float) -> str:
    """0.0005 -> "5e-4" (learning rates read so), 0.9995 -> "0.9995"."""
    if value == 0 or abs(value) >= 1e-3:
        return f"{value:g}"
    mantissa, exponent = f"{value:e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def resolve_data_defaults(
    family: str, shape: DataShape, model: Mapping[str, Any] | None = None, training: Mapping[str, Any] | None = None
) -> DataDefaults:
    """The data defaults of a new ``family`` run on images of ``shape``, less what the user's own ``model`` and
    ``training`` overrides set (their keys: bare field names or dotted paths, as ``update_config`` takes them;
    an unknown one is a ConfigError here, as it would be there)."""
    cls = model_class(family)
    rule, network = network_defaults(cls.size_defaults, shape)
    unread = cls.unread_settings(model or {})
    read = {key: value for key, value in network.items() if resolve_field(cls.config_class, key) not in unread}
    chosen = _unchosen(cls.config_class, read, model or {})
    recipe = _unchosen(TrainConfig, TRAINING_DEFAULTS.get(rule.name, {}).get(family, {}), training or {})
    return DataDefaults(rule.name, shape, chosen, recipe)


def _unchosen(config_class: type, defaults: Mapping[str, Any], user: Mapping[str, Any]) -> dict[str, Any]:
    """``defaults`` by dotted path, without the fields ``user`` sets (a field, or a nested config above it)."""
    chosen = [resolve_field(config_class, key) for key in user]
    found = {}
    for key, value in defaults.items():
        path = resolve_field(config_class, key)
        if not any(path == c or path.startswith(c + ".") for c in chosen):
            found[path] = list(value) if isinstance(value, tuple) else value
    return found
