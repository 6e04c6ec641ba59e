"""Typed configs <-> JSON.

Every component has a dataclass config; these functions are the only way configs are turned into JSON and
back, so a run folder's ``config.json`` rebuilds exactly the objects that wrote it. Configs nest (a
diffusion model's config holds its network's, its process's, its sampling defaults' and its conditioning's),
and an override names a field by its dotted path (``network.channels``) or, where the name is unique in the
tree, by its bare name (``channels``), which is what ``--set channels=16,32`` means.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
import re
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
        if not args or (len(args) == 2 and args[1] is Ellipsis):
            item = args[0] if args else Any
            return tuple(_coerce(v, item, where) for v in value)
        if len(value) != len(args):  # a fixed-length tuple, e.g. adam_betas: tuple[float, float]
            raise ConfigError(f"{where}: expected a list of {len(args)} values, got {value!r}")
        return tuple(_coerce(v, arg, where) for v, arg in zip(value, args, strict=True))
    if origin is typing.Literal:
        if value not in get_args(annotation):
            choices = ", ".join(repr(a) for a in get_args(annotation))
            raise ConfigError(f"{where}: {value!r} is not one of {choices}")
        return value
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if annotation in (int, float) and isinstance(value, bool):  # True is an int to Python, not to a config
        raise ConfigError(f"{where}: expected {annotation.__name__}, got {value!r}")
    if annotation is float and isinstance(value, int):
        try:
            return float(value)
        except OverflowError:
            raise ConfigError(f"{where}: {value!r} is too large for a float") from None
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
    values = {}
    for key, value in data.items():
        try:
            values[key] = _coerce(value, hints[key], f"{where}.{key}")
        except FieldRangeError as exc:  # a nested config refused a value: name it by its dotted path
            raise exc.under(key) from None
    return cls(**values)


# --- ranges: every numeric field declares its valid values next to its default ---------------------------


# Caps shared by the model configs. They are far above anything trainable here, and low enough that a model
# built from any in-range config can be sized on the meta device without a tensor's element count overflowing
# int64 (width^2 * 9, width * size^2 * bottleneck, (latent_channels * size^2)^2 all stay below 2^63); the
# size guard (aediff.models.sizes) then refuses what would not fit in memory.
MAX_WIDTH = 65_536  # channels of a stage, bottleneck and embedding widths
MAX_IMAGE_SIZE = 2048  # pixels per side
MAX_STAGES = 12  # resolution stages: 2048 halves to 1 in 11 steps
MAX_BLOCKS = 32  # residual blocks per stage
MAX_IMAGE_CHANNELS = 16  # channels of the images (1 grey, 3 RGB; a little room for npz arrays)
MAX_LATENT_CHANNELS = 256  # channels of a spatial latent
# Class labels of a conditioned or classifying model: generous, because an unconditional model records the
# data's count without using it; the size guard refuses a class embedding too large to allocate.
MAX_CLASSES = 2**31 - 1
# Sampling steps of a diffusion model's default and of any request (command line, page, Python API): far above
# any useful count, low enough that a typo does not start a day of sampling.
MAX_SAMPLING_STEPS = 10_000


class FieldRangeError(ConfigError):
    """A field's value is outside its declared range. ``path`` is the field's dotted name."""

    def __init__(self, path: str, rule: str, value: Any):
        self.path, self.rule, self.value = path, rule, value
        shown = list(value) if isinstance(value, tuple) else value
        super().__init__(f"{path} must be {rule}, got {shown!r}")

    def __reduce__(self) -> tuple:  # picklable across processes despite the custom signature
        return (FieldRangeError, (self.path, self.rule, self.value))

    def under(self, prefix: str) -> FieldRangeError:
        """The same error for a config nested under ``prefix`` (``channels`` -> ``network.channels``)."""
        return FieldRangeError(f"{prefix}.{self.path}", self.rule, self.value)


def _number(x: float) -> str:
    if isinstance(x, int):
        return str(x)
    return str(int(x)) if x.is_integer() and abs(x) < 1e16 else f"{x:g}"


@dataclasses.dataclass(frozen=True)
class Range:
    """The valid values of a numeric field: low/high bounds (None: unbounded; ``*_open``: excluded), finite
    unless ``allow_inf``. With ``items`` the field is a list whose elements each obey the bounds, and whose
    length lies in [min_items, max_items]. With ``pair`` the field is one number or a (height, width) pair of
    them, each obeying the bounds. Whole numbers or not follows the field's annotation."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    allow_inf: bool = False
    items: bool = False
    min_items: int = 0
    max_items: int | None = None
    pair: bool = False

    def interval(self) -> str:
        low, high = self.low, self.high
        if low is not None and high is not None:
            left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
            return f" in {left}{_number(low)}, {_number(high)}{right}"
        if low is not None:
            return f" {'>' if self.low_open else '>='} {_number(low)}"
        if high is not None:
            return f" {'<' if self.high_open else '<='} {_number(high)}"
        return ""

    def describe(self, whole: bool, optional: bool) -> str:
        """The rule in words, e.g. "a whole number >= 1" or "a non-empty list of numbers in [0, 1)"."""
        noun = "whole number" if whole else "number" if self.allow_inf else "finite number"
        if not self.items:
            pair = " or two of them, [height, width]" if self.pair else ""
            return f"a {noun}{self.interval()}" + (" (or none)" if optional else "") + pair
        if self.max_items is not None and self.min_items == self.max_items:
            head = f"a list of {self.min_items}"
        else:
            most = f" (at most {self.max_items})" if self.max_items is not None else ""
            head = ("a non-empty list" if self.min_items else "a list") + most + " of"
        return f"{head} {noun}s{self.interval()}"

    def admits(self, value: Any, whole: bool) -> bool:
        """Whether one scalar obeys the bounds (bools and NaN never do)."""
        if isinstance(value, bool) or not isinstance(value, numbers.Integral if whole else numbers.Real):
            return False
        if not isinstance(value, numbers.Integral) and (math.isnan(value) or math.isinf(value) and not self.allow_inf):
            return False  # (an int is finite, and may be too large for math.isnan's float)
        if self.low is not None and not (value > self.low if self.low_open else value >= self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def check(self, value: Any, path: str, whole: bool, optional: bool) -> None:
        """FieldRangeError naming ``path``, the rule and ``value`` unless ``value`` is valid."""
        if value is None and optional:
            return
        if self.pair and isinstance(value, (tuple, list)):
            ok = len(value) == 2 and all(self.admits(v, whole) for v in value)
        elif self.items:
            ok = isinstance(value, (tuple, list)) and self.min_items <= len(value)
            ok = ok and (self.max_items is None or len(value) <= self.max_items)
            ok = ok and all(self.admits(v, whole) for v in value)
        else:
            ok = self.admits(value, whole)
        if not ok:
            raise FieldRangeError(path, self.describe(whole, optional), value)


def bounded(
    default: Any,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
    allow_inf: bool = False,
    pair: bool = False,
) -> Any:
    """A dataclass field holding a number (or None where the annotation allows it) in [low, high]; the
    ``*_open`` flags exclude the bound. ``check_ranges`` enforces it; NaN never passes, inf only with
    ``allow_inf``. E.g. ``batch_size: int = bounded(64, 1)``. With ``pair`` a (height, width) pair of such
    numbers is valid too (annotate the field ``int | tuple[int, int]``)."""
    rule = Range(low, high, low_open, high_open, allow_inf, pair=pair)
    return dataclasses.field(default=default, metadata={"range": rule})


def bounded_items(
    default: tuple,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
    min_items: int = 1,
    max_items: int | None = None,
) -> Any:
    """Like ``bounded`` for a tuple field: each element in the range, and min_items..max_items elements
    (non-empty unless ``min_items=0``). E.g. ``channels: tuple[int, ...] = bounded_items((16, 32), 1, 4096)``."""
    rule = Range(low, high, low_open, high_open, items=True, min_items=min_items, max_items=max_items)
    return dataclasses.field(default=default, metadata={"range": rule})


@functools.cache
def _checked_fields(cls: type) -> tuple[tuple[str, Range | None, bool, bool, bool], ...]:
    """Per field of ``cls``: (name, range, whole numbers?, None allowed?, nested config?)."""
    hints = typing.get_type_hints(cls)
    table = []
    for f in dataclasses.fields(cls):
        annotation = hints[f.name]
        args = get_args(annotation)
        optional = get_origin(annotation) in (typing.Union, types.UnionType) and type(None) in args
        scalar = [a for a in args if a is not type(None)][0] if optional else annotation
        if get_origin(scalar) is tuple:
            scalar = get_args(scalar)[0]
        table.append((f.name, f.metadata.get("range"), scalar is int, optional, dataclasses.is_dataclass(annotation)))
    return tuple(table)


class ImageShape:
    """Mixin for a config dataclass with ``image_size`` (height, pixels) and ``image_width`` (None = square)
    fields. It declares no fields itself, so the dataclass's fields (and its JSON) are its own."""

    @property
    def image_hw(self) -> tuple[int, int]:
        """(height, width) of the images."""
        return self.image_size, self.image_width or self.image_size  # type: ignore[attr-defined]


def check_ranges(config: Any, prefix: str = "") -> None:
    """Check every field of a (nested) dataclass config against the range declared with ``bounded`` /
    ``bounded_items``; the first bad one raises FieldRangeError (a ConfigError) naming its dotted path
    (under ``prefix``), its range and its value. Each config calls this from ``__post_init__``."""
    for name, rule, whole, optional, nested in _checked_fields(type(config)):
        path = f"{prefix}.{name}" if prefix else name
        value = getattr(config, name)
        if nested and dataclasses.is_dataclass(value):
            check_ranges(value, path)
        elif rule is not None:
            rule.check(value, path, whole, optional)


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


def parse_duration(text: str, option: str = "a duration", other: str = "") -> float:
    """'90s', '10m', '1.5h' or a bare number of minutes -> minutes (finite, positive). ``other`` names the
    other forms the option takes, for the error of a text that is not a duration."""
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
        also = f", or {other}" if other else ""
        raise ConfigError(f"{option} {text!r} is not a duration: write e.g. 90s, 10m or 1.5h{also}") from None
    if not 0 < minutes < float("inf"):
        raise ConfigError(f"{option} must be a positive, finite duration, got {text!r}")
    return minutes


@dataclasses.dataclass(frozen=True)
class Budget:
    """How long each model of a comparison trains: wall-clock ``minutes`` or optimizer ``steps``, exactly one
    of them. A step budget trains the same models on machines of any speed; a time budget trains each model
    as far as this machine gets in that time."""

    minutes: float | None = bounded(None, 0, low_open=True)  # wall clock, finite, > 0
    steps: int | None = bounded(None, 1)  # optimizer steps, >= 1

    def __post_init__(self) -> None:
        check_ranges(self, "budget")
        if (self.minutes is None) == (self.steps is None):
            raise ConfigError(f"a budget is a duration or a step count, exactly one; got {self}")

    def describe(self) -> str:
        """The budget as given, per model: "400 steps per model", "30 s of training per model"."""
        if self.steps is not None:
            return f"{self.steps} step{'s' if self.steps != 1 else ''} per model"
        seconds = self.minutes * 60  # type: ignore[operator]
        return (f"{seconds:g} s" if seconds < 120 else f"{self.minutes:g} min") + " of training per model"


STEPS = re.compile(r"(.*?)\s*steps?")  # "400steps", "400 steps", "1 step"


def parse_steps(text: str, option: str) -> int:
    """A whole number of optimizer steps >= 1: '400', '400steps' or '400 steps' -> 400."""
    text = str(text).strip().lower()
    match = STEPS.fullmatch(text)
    number = match[1] if match else text
    try:
        steps = int(number)
    except ValueError:
        raise ConfigError(f"{option} {text!r} is not a whole number of steps: write e.g. 400steps") from None
    if steps < 1:
        raise ConfigError(f"{option} must be at least 1 step, got {text!r}: write e.g. 400steps")
    return steps


def parse_budget(text: str, option: str = "--budget") -> Budget:
    """A training budget per model: a duration ('90s', '10m', '1.5h', a bare number of minutes) or a step
    count ('400steps', '400 steps') -> Budget. ConfigError naming ``option`` and the forms it takes."""
    if STEPS.fullmatch(str(text).strip().lower()):
        return Budget(steps=parse_steps(text, option))
    return Budget(minutes=parse_duration(text, option, other="a step count such as 400steps"))


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
