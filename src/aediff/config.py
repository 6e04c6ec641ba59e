"""Typed configs <-> JSON.

Every component has a dataclass config; these functions are the only way configs are turned into JSON and
back, so a run folder's ``config.json`` rebuilds exactly the objects that wrote it. Configs nest (a
diffusion model's config holds its network's, its process's, its sampling defaults' and its conditioning's),
and an override names a field by its dotted path (``network.channels``) or, where the name is unique in the
tree, by its bare name (``channels``), which is what ``--set channels=16,32`` means.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, TypeVar, get_args, get_origin

from aediff.errors import ConfigError

C = TypeVar("C")


def config_to_dict(config: Any) -> dict[str, Any]:
    """A dataclass -> a JSON-able dict (tuples become lists)."""
    if not dataclasses.is_dataclass(config):
        raise TypeError(f"expected a dataclass config, got {type(config).__name__}")
    return dataclasses.asdict(config)


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    """Turn a JSON value back into the annotated type (lists -> tuples, ints -> floats, dicts -> nested
    dataclass configs)."""
    if dataclasses.is_dataclass(annotation):
        if dataclasses.is_dataclass(value) and isinstance(value, annotation):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping of {annotation.__name__} fields, got {value!r}")
        return config_from_dict(annotation, value, where)
    origin = get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in get_args(annotation):
            return None
        for arg in get_args(annotation):
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: {value!r} does not fit {annotation}")
    if origin is tuple:
        if isinstance(value, (int, float, str)) and not isinstance(value, bool):
            value = [value]  # `--set widths=32` means a one-element list
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        args = get_args(annotation)
        item = args[0] if args else Any
        return tuple(_coerce(v, item, where) for v in value)
    if origin is typing.Literal:
        if value not in get_args(annotation):
            choices = ", ".join(repr(a) for a in get_args(annotation))
            raise ConfigError(f"{where}: {value!r} is not one of {choices}")
        return value
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation in (int, float, str, bool) and not isinstance(value, annotation):
        raise ConfigError(f"{where}: expected {annotation.__name__}, got {value!r}")
    return value


def config_from_dict(cls: type[C], data: dict[str, Any], where: str | None = None) -> C:
    """Rebuild a dataclass config from a dict; unknown keys are an error, missing keys take defaults."""
    where = where or cls.__name__
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of fields, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where} has no field(s) {', '.join(unknown)}; valid fields: {', '.join(sorted(names))}")
    values = {k: _coerce(v, hints[k], f"{where}.{k}") for k, v in data.items()}
    return cls(**values)


def field_paths(cls: type) -> list[str]:
    """Every leaf field of a (nested) dataclass config as a dotted path, in declaration order."""
    hints = typing.get_type_hints(cls)
    paths = []
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            paths += [f"{f.name}.{sub}" for sub in field_paths(hints[f.name])]
        else:
            paths.append(f.name)
    return paths


def resolve_field(cls: type, key: str) -> str:
    """The dotted path that ``key`` names in ``cls``: itself when it is a path, else the one leaf whose last
    part is ``key``. A clear error for an unknown or ambiguous name."""
    paths = field_paths(cls)
    groups = {p.rsplit(".", 1)[0] for p in paths if "." in p}  # a whole nested config may be replaced too
    if key in paths or key in groups:
        return key
    matches = [p for p in paths if p.rsplit(".", 1)[-1] == key]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise ConfigError(f"{cls.__name__}: {key!r} is ambiguous; name one of {', '.join(matches)}")
    leaves = sorted({p.rsplit(".", 1)[-1] for p in paths})
    raise ConfigError(f"{cls.__name__} has no field {key!r}; valid fields: {', '.join(leaves)}")


def update_config(config: C, overrides: dict[str, Any]) -> C:
    """A copy of ``config`` with fields replaced, type-checked like ``config_from_dict``. Keys are dotted
    paths or unique bare field names (see ``resolve_field``)."""
    merged = config_to_dict(config)
    for key, value in overrides.items():
        *parents, leaf = resolve_field(type(config), key).split(".")
        target = merged
        for part in parents:
            target = target[part]
        target[leaf] = value
    return config_from_dict(type(config), merged)


def parse_duration(text: str, option: str = "a duration") -> float:
    """'90s', '10m', '1.5h' or a bare number of minutes -> minutes (finite, positive)."""
    text = str(text).strip().lower()
    units = {"s": 1 / 60, "m": 1.0, "min": 1.0, "h": 60.0}
    for unit in sorted(units, key=len, reverse=True):
        if text.endswith(unit):
            number, scale = text[: -len(unit)], units[unit]
            break
    else:
        number, scale = text, 1.0
    try:
        minutes = float(number) * scale
    except ValueError:
        raise ConfigError(f"{option} {text!r} is not a duration: write e.g. 90s, 10m or 1.5h") from None
    if not 0 < minutes < float("inf"):
        raise ConfigError(f"{option} must be a positive, finite duration, got {text!r}")
    return minutes


def parse_assignment(text: str) -> tuple[str, Any]:
    """``key=value`` from the command line -> (key, JSON-ish value): numbers, true/false, a,b lists."""
    if "=" not in text:
        raise ConfigError(f"--set expects key=value, got {text!r}")
    key, raw = text.split("=", 1)
    return key.strip(), _parse_scalar_or_list(raw.strip())


def _parse_scalar_or_list(raw: str) -> Any:
    if "," in raw:
        return [_parse_scalar_or_list(part) for part in raw.split(",") if part]
    lowered = raw.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    for kind in (int, float):
        try:
            return kind(raw)
        except ValueError:
            pass
    return raw
