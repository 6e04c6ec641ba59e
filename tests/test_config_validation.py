"""Every config field's range, checked where configs are built; the size guard; the CLI's one-line errors."""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import subprocess
import sys
import typing
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aediff.config import (
    MAX_IMAGE_SIZE,
    MAX_WIDTH,
    check_ranges,
    config_from_dict,
    config_to_dict,
    update_config,
)
from aediff.data import DataConfig
from aediff.errors import AediffError, ConfigError
from aediff.models import (
    MODELS,
    AEConfig,
    ClassifierConfig,
    DAEConfig,
    DiffusionConfig,
    KLAEConfig,
    LatentDiffusionConfig,
    UNetConfig,
    VAEConfig,
    build_model,
)
from aediff.models.diffusion import ConditioningConfig, NetworkConfig, ProcessConfig, SamplingConfig
from aediff.models.sizes import LIMIT_ENV, check_model_size, count_numbers
from aediff.models.text_encoder import TextEncoderConfig
from aediff.runs.training_config import TrainConfig

CONFIGS = [
    TrainConfig,
    DataConfig,
    AEConfig,
    VAEConfig,
    KLAEConfig,
    DAEConfig,
    DiffusionConfig,
    LatentDiffusionConfig,
    ClassifierConfig,
    UNetConfig,
    NetworkConfig,
    ProcessConfig,
    SamplingConfig,
    ConditioningConfig,
    TextEncoderConfig,
]

NAN, INF = float("nan"), float("inf")
WHOLE_GE1 = r"a whole number >= 1"
UNIT_OPEN = r"in \[0, 1\)"

# (config class, JSON data as config.json or --set would give it, the field's name in the message, the rule)
BAD = [
    (TrainConfig, {"batch_size": 0}, "training.batch_size", WHOLE_GE1),
    (TrainConfig, {"batch_size": -8}, "training.batch_size", WHOLE_GE1),
    (TrainConfig, {"batch_size": True}, "batch_size", "expected int"),
    (TrainConfig, {"batch_size": 2.5}, "batch_size", "expected int"),
    (TrainConfig, {"lr": 0}, "training.lr", "a finite number > 0"),
    (TrainConfig, {"lr": -1e-3}, "training.lr", "> 0"),
    (TrainConfig, {"lr": NAN}, "training.lr", "a finite number > 0"),
    (TrainConfig, {"lr": INF}, "training.lr", "a finite number > 0"),
    (TrainConfig, {"lr": False}, "lr", "expected float"),
    (TrainConfig, {"weight_decay": -0.1}, "training.weight_decay", ">= 0"),
    (TrainConfig, {"adam_betas": [2, 3]}, "training.adam_betas", r"2 finite numbers in \[0, 1\)"),
    (TrainConfig, {"adam_betas": [0.9, 1.0]}, "training.adam_betas", UNIT_OPEN),
    (TrainConfig, {"adam_betas": [-0.1, 0.9]}, "training.adam_betas", UNIT_OPEN),
    (TrainConfig, {"adam_betas": [0.9]}, "adam_betas", "a list of 2 values"),
    (TrainConfig, {"adam_betas": [0.9, NAN]}, "training.adam_betas", UNIT_OPEN),
    (TrainConfig, {"warmup_steps": -1}, "training.warmup_steps", ">= 0"),
    (TrainConfig, {"min_lr_ratio": 1.5}, "training.min_lr_ratio", r"in \[0, 1\]"),
    (TrainConfig, {"min_lr_ratio": -0.1}, "training.min_lr_ratio", r"in \[0, 1\]"),
    (TrainConfig, {"grad_clip": -1}, "training.grad_clip", ">= 0"),
    (TrainConfig, {"ema_decay": 5}, "training.ema_decay", r"in \[0, 1\]"),
    (TrainConfig, {"ema_decay": NAN}, "training.ema_decay", r"in \[0, 1\]"),
    (TrainConfig, {"max_steps": -5}, "training.max_steps", WHOLE_GE1),
    (TrainConfig, {"max_steps": 0}, "training.max_steps", WHOLE_GE1),
    (TrainConfig, {"epochs": 0}, "training.epochs", "> 0"),
    (TrainConfig, {"epochs": INF}, "training.epochs", "finite"),
    (TrainConfig, {"max_minutes": NAN}, "training.max_minutes", "> 0"),
    (TrainConfig, {"seed": -1}, "training.seed", r"in \[0, 9223372036854775807\]"),
    (TrainConfig, {"seed": 2**63}, "training.seed", r"in \[0, "),
    (TrainConfig, {"log_every": 0}, "training.log_every", WHOLE_GE1),
    (TrainConfig, {"checkpoint_every": 0}, "training.checkpoint_every", WHOLE_GE1),
    (TrainConfig, {"preview_every": -1}, "training.preview_every", ">= 0"),
    (TrainConfig, {"snapshots": [1.5]}, "training.snapshots", "between 0 and 1"),
    (AEConfig, {"image_channels": 0}, "image_channels", r"in \[1, 16\]"),
    (AEConfig, {"image_size": 0}, "image_size", r"in \[1, 2048\]"),
    (AEConfig, {"image_size": -28}, "image_size", r"in \[1, 2048\]"),
    (AEConfig, {"channels": [0]}, "channels", r"non-empty list \(at most 12\) of whole numbers in \[1, 65536\]"),
    (AEConfig, {"channels": []}, "channels", "non-empty list"),
    (AEConfig, {"channels": [8] * 13}, "channels", "at most 12"),
    (AEConfig, {"channels": [10**9]}, "channels", r"\[1, 65536\]"),
    (AEConfig, {"blocks_per_stage": 0}, "blocks_per_stage", r"in \[1, 32\]"),
    (AEConfig, {"attention_resolutions": [0]}, "attention_resolutions", r"in \[1, 2048\]"),
    (AEConfig, {"dropout": 1.0}, "dropout", UNIT_OPEN),
    (AEConfig, {"dropout": -0.1}, "dropout", UNIT_OPEN),
    (AEConfig, {"bottleneck_dim": -3}, "bottleneck_dim", r"in \[1, 65536\]"),
    (AEConfig, {"bottleneck_dim": 200_000}, "bottleneck_dim", r"in \[1, 65536\]"),
    (AEConfig, {"bottleneck_dim": True}, "bottleneck_dim", "expected int"),
    (AEConfig, {"latent_channels": 0}, "latent_channels", r"in \[1, 256\]"),
    (VAEConfig, {"beta": -1}, "beta", ">= 0"),
    (VAEConfig, {"beta": NAN}, "beta", ">= 0"),
    (VAEConfig, {"init_log_sigma": 100}, "init_log_sigma", r"in \[-10, 10\]"),
    (KLAEConfig, {"kl_weight": -1e-6}, "kl_weight", ">= 0"),
    (KLAEConfig, {"disc_weight": NAN}, "disc_weight", ">= 0"),
    (KLAEConfig, {"disc_start": -1}, "disc_start", ">= 0"),
    (KLAEConfig, {"disc_layers": 0}, "disc_layers", r"in \[1, 12\]"),
    (KLAEConfig, {"perceptual_weight": 1.0}, "perceptual_weight", "not available offline"),
    (DAEConfig, {"corruption": "gaussian:nan"}, "gaussian:nan", "0 <= LOW <= HIGH"),
    (DAEConfig, {"corruption": "mask:0.3:patch0"}, "patch0", r"\[1, 1024\]"),
    (DiffusionConfig, {"network": {"channels": [0]}}, "network.channels", r"whole numbers in \[1, 65536\]"),
    (DiffusionConfig, {"network": {"embedding_dim": 0}}, "network.embedding_dim", r"in \[1, 65536\]"),
    (DiffusionConfig, {"process": {"num_train_steps": 0}}, "process.num_train_steps", r"in \[1, 100000\]"),
    (DiffusionConfig, {"process": {"sigma_data": 0}}, "process.sigma_data", "> 0"),
    (DiffusionConfig, {"process": {"p_std": -1}}, "process.p_std", "> 0"),
    (DiffusionConfig, {"process": {"p_mean": INF}}, "process.p_mean", "a finite number"),
    (DiffusionConfig, {"process": {"min_snr_gamma": 0}}, "process.min_snr_gamma", "> 0"),
    (DiffusionConfig, {"process": {"sigma_min": 100}}, "process.sigma_min", r"below sigma_max \(80\)"),
    (DiffusionConfig, {"sampling": {"steps": 0}}, "sampling.steps", r"in \[1, 10000\]"),
    (DiffusionConfig, {"sampling": {"guidance": -1}}, "sampling.guidance", ">= 0"),
    (DiffusionConfig, {"conditioning": {"num_classes": 2**40}}, "conditioning.num_classes", r"in \[0, 2147483647\]"),
    (DiffusionConfig, {"conditioning": {"null_probability": 1.0}}, "conditioning.null_probability", UNIT_OPEN),
    (DiffusionConfig, {"conditioning": {"kind": "text", "text_width": 10}}, "conditioning.text_width", "multiple of 4"),
    (DiffusionConfig, {"conditioning": {"text_max_length": 1}}, "conditioning.text_max_length", r"in \[2, 4096\]"),
    (DiffusionConfig, {"conditioning": {"text_layers": 0}}, "conditioning.text_layers", r"in \[1, 48\]"),
    (LatentDiffusionConfig, {"latent_scale": -1}, "latent_scale", ">= 0"),
    (LatentDiffusionConfig, {"network": {"blocks_per_stage": 100}}, "network.blocks_per_stage", r"\[1, 32\]"),
    (ClassifierConfig, {"num_classes": 0}, "num_classes", r"in \[1, 2147483647\]"),
    (ClassifierConfig, {"feature_dim": 0}, "feature_dim", r"in \[1, 65536\]"),
    (UNetConfig, {"context_dim": -1}, "context_dim", r"in \[0, 65536\]"),
    (DataConfig, {"resolution": 0}, "data.resolution", r"in \[1, 2048\] \(or none\)"),
    (DataConfig, {"channels": 2}, "data.channels", r"1 \(grayscale\), 3 \(RGB\) or none"),
    (DataConfig, {"test_fraction": 1.0}, "data.test_fraction", r"in \(0, 1\)"),
    (DataConfig, {"seed": -1}, "data.seed", r"in \[0, "),
    (TextEncoderConfig, {"width": 10}, "text_encoder.width", r"multiple of heads \(4\)"),
    (TextEncoderConfig, {"heads": 0}, "text_encoder.heads", ">= 1 for a learned encoder"),
]


@pytest.mark.parametrize(("cls", "data", "field", "rule"), BAD, ids=[f"{c.__name__}-{d}" for c, d, *_ in BAD])
def test_bad_values_are_refused_naming_field_and_range(cls, data, field, rule):
    with pytest.raises(ConfigError, match=rule) as info:
        config_from_dict(cls, data)
    assert field in str(info.value)


def test_python_api_is_refused_too():
    with pytest.raises(ConfigError, match=r"^training\.batch_size must be a whole number >= 1, got 0$"):
        TrainConfig(batch_size=0)
    with pytest.raises(ConfigError, match=r"training\.batch_size .* got True"):
        TrainConfig(batch_size=True)  # a bool is not a whole number, even to Python's isinstance
    with pytest.raises(ConfigError, match=r"^channels must be .* got \[8, 0\]$"):
        AEConfig(channels=(8, 0))
    with pytest.raises(ConfigError, match="sigma_min"):
        dataclasses.replace(ProcessConfig(), sigma_min=80.0)
    config = DiffusionConfig()
    config.network.channels = (0,)  # mutated after it was built: the walk still finds it, by its path
    with pytest.raises(ConfigError, match=r"^network\.channels must be"):
        check_ranges(config)


def test_huge_numbers_and_pickling():
    with pytest.raises(ConfigError, match=r"TrainConfig\.lr: \d+ is too large for a float"):
        config_from_dict(TrainConfig, {"lr": 10**400})
    with pytest.raises(ConfigError, match=r"^bottleneck_dim must be"):
        AEConfig(bottleneck_dim=10**400)  # too large even for a float: refused, not an OverflowError
    try:
        TrainConfig(batch_size=0)
    except ConfigError as error:
        again = pickle.loads(pickle.dumps(error))  # errors cross process boundaries under multi-GPU launchers
        assert str(again) == str(error) and type(again) is type(error)


def test_overrides_name_the_nested_path():
    with pytest.raises(ConfigError, match=r"^network\.channels must be .* got \[0\]$"):
        update_config(DiffusionConfig(), {"channels": 0})  # what `--set channels=0` does
    with pytest.raises(ConfigError, match=r"^training\.ema_decay must be a finite number in \[0, 1\], got 5"):
        update_config(TrainConfig(), {"ema_decay": 5})


# The value just inside each range: accepted (the rule does not come out the other way).
GOOD = [
    (TrainConfig, {"batch_size": 1, "lr": 1e-12, "weight_decay": 0, "warmup_steps": 0, "grad_clip": 0}),
    (TrainConfig, {"adam_betas": [0, 0.999999], "min_lr_ratio": 0, "ema_decay": 0, "preview_every": 0}),
    (TrainConfig, {"min_lr_ratio": 1, "ema_decay": 1, "max_steps": 1, "epochs": 1e-6, "max_minutes": 1e-6}),
    (TrainConfig, {"seed": 2**63 - 1, "log_every": 1, "checkpoint_every": 1, "snapshots": [0.001, 0.999]}),
    (TrainConfig, {"warmup_steps": 100, "max_steps": 2}),  # warm-up longer than the run: allowed, by design
    (AEConfig, {"image_channels": 1, "image_size": 1, "channels": [1], "blocks_per_stage": 1, "dropout": 0}),
    (AEConfig, {"image_channels": 16, "image_size": MAX_IMAGE_SIZE, "channels": [MAX_WIDTH], "dropout": 0.999}),
    (AEConfig, {"channels": [8] * 12, "blocks_per_stage": 32, "attention_resolutions": [1, MAX_IMAGE_SIZE]}),
    (AEConfig, {"bottleneck_dim": 1, "latent_channels": 256, "attention_resolutions": []}),
    (AEConfig, {"bottleneck_dim": MAX_WIDTH, "latent_channels": 1}),
    (VAEConfig, {"beta": 0, "init_log_sigma": -10}),
    (VAEConfig, {"init_log_sigma": 10}),
    (DAEConfig, {"corruption": "mask:0-1:patch1"}),
    (DAEConfig, {"corruption": "none"}),
    (DiffusionConfig, {"process": {"sigma_min": 79.99, "num_train_steps": 1, "p_mean": -100}}),
    (DiffusionConfig, {"sampling": {"steps": 1, "guidance": 0}, "conditioning": {"null_probability": 0}}),
    (DiffusionConfig, {"conditioning": {"kind": "text", "text_width": 4, "text_layers": 1, "text_max_length": 2}}),
    (DiffusionConfig, {"conditioning": {"kind": "class", "num_classes": 2**20}}),
    (DiffusionConfig, {"conditioning": {"text_width": 10}}),  # ignored without a learned text encoder
    (LatentDiffusionConfig, {"latent_scale": 0}),
    (ClassifierConfig, {"num_classes": 1, "feature_dim": 1}),
    (UNetConfig, {"image_channels": 256, "context_dim": 0, "num_classes": 0}),
    (DataConfig, {"resolution": 1, "channels": 1, "test_fraction": 0.001, "seed": 0}),
    (DataConfig, {"resolution": MAX_IMAGE_SIZE, "channels": 3, "test_fraction": 0.999}),
    (DataConfig, {"resolution": None, "channels": None}),
    (TextEncoderConfig, {"kind": "minilm", "width": 384, "layers": 0, "heads": 0}),  # a frozen encoder's record
]


@pytest.mark.parametrize(("cls", "data"), GOOD, ids=[f"{c.__name__}-{d}" for c, d in GOOD])
def test_values_just_inside_are_accepted(cls, data):
    config = config_from_dict(cls, data)
    check_ranges(config)


def _numeric(annotation) -> bool:
    """Whether an annotation is a number, an optional number or a tuple of numbers."""
    args = [a for a in typing.get_args(annotation) if a is not type(None) and a is not Ellipsis]
    if typing.get_origin(annotation) is tuple or typing.get_origin(annotation) in (typing.Union, type(int | None)):
        return bool(args) and all(_numeric(a) for a in args)
    return annotation in (int, float)


@pytest.mark.parametrize("cls", CONFIGS, ids=lambda c: c.__name__)
def test_every_numeric_field_declares_a_range(cls):
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if _numeric(hints[f.name]):
            assert "range" in f.metadata, f"{cls.__name__}.{f.name} has no declared range"


@pytest.mark.parametrize(
    ("section", "field", "value", "rule"),
    [
        ("model", "image_size", 0, r"image_size must be a whole number in \[1, 2048\], got 0"),
        ("model", "image_size", -8, r"image_size must be"),
        ("model", "bottleneck_dim", True, r"bottleneck_dim: expected int, got True"),
        ("training", "batch_size", 0, r"training\.batch_size must be a whole number >= 1, got 0"),
    ],
)
def test_a_run_folder_with_a_bad_value_is_refused_by_name(tmp_path, section, field, value, rule):
    import shutil

    import aediff

    run = tmp_path / "ae"
    shutil.copytree(Path(__file__).parent / "fixtures" / "v1-runs" / "ae", run)
    stored = json.loads((run / "config.json").read_text())
    stored[section][field] = value
    (run / "config.json").write_text(json.dumps(stored))
    with pytest.raises(AediffError, match=rule):
        aediff.load(run, device="cpu")


# ------------------------------------------------------------------------------------------------ size guard


def _latent_diffusion_config() -> LatentDiffusionConfig:
    ae = dataclasses.asdict(AEConfig(latent="spatial"))
    return config_from_dict(
        LatentDiffusionConfig, {"autoencoder": {"path": "x", "family": "ae", "config": ae}, "latent_scale": 1.0}
    )


@pytest.mark.parametrize("family", sorted(MODELS))
def test_size_guard_accepts_the_defaults_and_counts_exactly(family):
    cls = MODELS[family]
    config = _latent_diffusion_config() if family == "latent-diffusion" else cls.config_class()
    numbers = check_model_size(cls, config)
    model = cls(config)
    assert numbers == sum(t.numel() for t in [*model.parameters(), *model.buffers()])


def test_size_guard_refuses_absurd_models_before_allocating(monkeypatch):
    monkeypatch.delenv(LIMIT_ENV, raising=False)
    with pytest.raises(ConfigError, match="channels"):
        config_from_dict(AEConfig, {"channels": [10**9]})  # beyond any range: refused with the config
    wide = config_from_dict(AEConfig, {"channels": [60_000]})  # in range, but 530 GB of weights
    with pytest.raises(
        ConfigError, match=rf"channels=\[60000\] makes it large \(0.0018 GB with \[16, 32, 64\]\).*{LIMIT_ENV}=\d+"
    ):
        build_model("ae", wide)
    with pytest.raises(ConfigError, match=r"image_size=512 makes it large"):  # a 262144^2 latent covariance
        build_model("ae", {"latent": "spatial", "image_size": 512})
    with pytest.raises(ConfigError, match=r"network\.embedding_dim=60000 makes it large \([\d.]+ GB with 128\)"):
        build_model("diffusion", {"embedding_dim": 60_000})  # a 60000^2 noise-level MLP


def test_a_huge_label_refuses_a_class_conditioned_model_only(tmp_path, monkeypatch):
    """num_classes comes from the data (largest label + 1): an npz label of 1e9 would make a 512 GB class
    embedding. Refused before anything is allocated; an unconditional model ignores the count."""
    from aediff.training.train import train

    monkeypatch.delenv(LIMIT_ENV, raising=False)
    images = np.random.default_rng(0).integers(0, 255, (8, 8, 8), dtype=np.uint8)
    np.savez(tmp_path / "d.npz", images=images, labels=np.array([0, 1, 2, 10**9] * 2))
    with pytest.raises(ConfigError, match=r"conditioning\.num_classes=1000000001 makes it large.*labels"):
        train("diffusion", tmp_path / "run", f"npz:{tmp_path / 'd.npz'}", model={"kind": "class"}, progress=False)
    unconditional = update_config(DiffusionConfig(), {"num_classes": 10**9 + 1})
    assert check_model_size(MODELS["diffusion"], unconditional) == count_numbers(MODELS["diffusion"], DiffusionConfig())


def test_size_guard_limit_follows_the_environment(monkeypatch):
    wide = config_from_dict(AEConfig, {"channels": [60_000]})
    monkeypatch.setenv(LIMIT_ENV, "1000")
    assert check_model_size(MODELS["ae"], wide) == count_numbers(MODELS["ae"], wide)  # counted, never built
    monkeypatch.setenv(LIMIT_ENV, "0.001")  # 1 MB: even the default autoencoder (1.8 MB) is refused
    with pytest.raises(ConfigError, match=LIMIT_ENV):
        build_model("ae", {})
    monkeypatch.setenv(LIMIT_ENV, "lots")
    with pytest.raises(ConfigError, match=rf"{LIMIT_ENV} must be a positive number"):
        build_model("ae", {})


# ------------------------------------------------------------------------------------------------ properties

JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**400), max_value=10**400),
    st.integers(min_value=-3, max_value=300),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=-2, max_value=2),
    st.text(max_size=12),
    st.sampled_from(["cosine", "v", "edm", "class", "text", "learned", "spatial", "gaussian:0.3", "mask:0.2:patch2"]),
)
# Flat containers only: deeper nesting costs generation time and reaches no other branch of the coercion.
JSON_VALUES = st.one_of(
    JSON_SCALARS,
    st.lists(JSON_SCALARS, max_size=4),
    st.dictionaries(st.text(max_size=5), JSON_SCALARS, max_size=2),
)
# The nested configs (network, process, ...) are drawn inside the configs that hold them.
TOP_LEVEL = [c for c in CONFIGS if c not in (NetworkConfig, ProcessConfig, SamplingConfig, ConditioningConfig)]


def typed_values(annotation) -> st.SearchStrategy:
    """Values of about the annotated type, mostly near the ranges' edges, so that some configs come out valid."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is bool:
        return st.booleans()
    if annotation is int:
        usual = st.integers(2, 16)
        return st.one_of(usual, usual, usual, st.sampled_from([-1, 0, 1, 2**20, 2**63 - 1, 2**63, 70_000]))
    if annotation is float:
        usual = st.floats(0.01, 0.99)
        return st.one_of(usual, usual, usual, st.sampled_from([-0.5, 0.0, 1.0, 1e-9, 80.0, 1e300, NAN, INF, -INF]))
    if annotation is str:
        return st.text(max_size=10) | st.sampled_from(["gaussian:0.5", "mask:0.3:patch2", "none", "gaussian:-1"])
    if origin is typing.Literal:
        return st.sampled_from(args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return st.lists(typed_values(args[0]), min_size=1, max_size=4) | st.lists(
                typed_values(args[0]), max_size=13
            )
        return st.lists(typed_values(args[0]), min_size=len(args) - 1, max_size=len(args) + 1)
    if origin in (typing.Union, type(int | None)):
        return st.one_of([st.none(), *(typed_values(a) for a in args if a is not type(None))])
    return JSON_VALUES


def config_data(cls: type, noisy: bool | None = None) -> st.SearchStrategy:
    """Dicts over ``cls``'s field names, nested configs as nested dicts: values of about the right type (so that
    some configs come out valid), or also any JSON, or unknown keys."""
    if noisy is None:
        unknown = st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=3)
        return st.one_of(config_data(cls, False), config_data(cls, False), config_data(cls, True), unknown)
    hints = typing.get_type_hints(cls)
    fields = {}
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            fields[f.name] = st.deferred(lambda h=hint: config_data(h, noisy))
        else:
            fields[f.name] = typed_values(hint)
        if noisy:
            fields[f.name] = fields[f.name] | JSON_VALUES
    return st.fixed_dictionaries({}, optional=fields)


def _dumps(config) -> str:
    return json.dumps(config_to_dict(config), sort_keys=True)


@pytest.mark.parametrize("cls", TOP_LEVEL, ids=lambda c: c.__name__)
@settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_json_gives_a_valid_config_or_a_config_error(cls, data):
    stored = data.draw(config_data(cls))
    try:
        config = config_from_dict(cls, stored)
    except ConfigError:
        return
    check_ranges(config)
    again = config_from_dict(cls, json.loads(_dumps(config)))
    assert _dumps(again) == _dumps(config)


# ------------------------------------------------------------------------------------------------ the CLI


CLI_CASES = {"checkpoint_every": "--train-set", "channels": "--set", "ema_decay": "--train-set"}
CLI_VALUES = {"checkpoint_every": "0", "channels": "0", "ema_decay": "5"}


def test_cli_refuses_bad_values_in_one_line(tmp_path):
    """`aediff train ae --data digits --out RUN --max-steps 2 --train-set checkpoint_every=0` and the like, as a
    user types them: exit 1, one line `error: ...` naming the field, nothing written. The three run at once."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    runs = {}
    for field, flag in CLI_CASES.items():
        out = tmp_path / field
        command = [sys.executable, "-m", "aediff.cli", "train", "ae", "--data", "digits", "--out", str(out)]
        command += ["--max-steps", "2", flag, f"{field}={CLI_VALUES[field]}"]
        runs[field] = (out, subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env))
    for field, (out, process) in runs.items():
        text = process.communicate(timeout=180)[0].decode().strip()
        assert process.returncode == 1, text
        assert len(text.splitlines()) == 1 and text.startswith("error:") and field in text, text
        assert "Traceback" not in text and "internal error" not in text
        assert not out.exists() or not any(out.iterdir())  # nothing written (at most the empty folder)


def test_image_shape_mixin_gives_image_hw_and_adds_no_fields():
    """``config.ImageShape`` only lends ``image_hw``: each config's fields (its JSON keys) stay its own, in order."""
    from aediff.config import ImageShape
    from aediff.models.ae import AEConfig

    assert not dataclasses.is_dataclass(ImageShape)
    assert [f.name for f in dataclasses.fields(AEConfig)][:3] == ["image_channels", "image_size", "image_width"]
    assert AEConfig(image_size=8, image_width=12).image_hw == (8, 12)
    assert AEConfig(image_size=8).image_hw == (8, 8)
