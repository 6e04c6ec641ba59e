"""Defaults that follow the data: greyscale up to 32 px keeps today's defaults exactly, colour images get the
colour rule, the user's options win, config.json records the rule, old configs load, --dry-run says it, and a
resumed run never derives defaults again."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import aediff
from aediff.config import config_to_dict, update_config
from aediff.data import load_dataset
from aediff.errors import ConfigError, RunError
from aediff.models import MODELS, model_class
from aediff.models.defaults import RULE_NAMES, SIZE_RULES, DataShape, NetworkDefaults, most_stages, size_rule
from aediff.models.diffusion import DIFFUSION_SIZES
from aediff.reports.compare import CompareConfig, compare_plan, plan_banner, training_overrides
from aediff.runs import TRAINING_DEFAULTS, DataDefaults, TrainConfig, resolve_data_defaults
from aediff.training.train import fill_data_shape, train

# Shapes the built-in defaults serve: digits (8x8), MNIST and Fashion-MNIST (28x28), and any grey image up to 32 px.
GREY = [DataShape(1, 8, 8), DataShape(1, 28, 28), DataShape(1, 32, 32), DataShape(1, 16, 24)]
CIFAR = DataShape(3, 32, 32)
QUIET = {"tensorboard": False, "log_every": 1, "preview_every": 0}


def images(tmp_path: Path, shape: tuple[int, ...], n: int = 64, name: str = "images") -> str:
    """An npz dataset of n random uint8 images of ``shape`` ((H, W) grey or (H, W, C)), labels 0..9."""
    rng = np.random.default_rng(0)
    path = tmp_path / f"{name}.npz"
    np.savez(path, images=rng.integers(0, 256, (n, *shape), dtype=np.uint8), labels=np.arange(n) % 10)
    return f"npz:{path}"


# --- the rules ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", sorted(MODELS))
@pytest.mark.parametrize("shape", GREY, ids=DataShape.describe)
def test_grey_images_up_to_32_px_change_nothing_in_any_family(family, shape):
    found = resolve_data_defaults(family, shape)
    assert (found.rule, found.model, found.training) == ("grey-small", {}, {})
    assert found.describe().endswith("(rule grey-small): no change from the built-in defaults")


def test_no_family_and_no_training_recipe_declares_anything_for_grey_small():
    assert all("grey-small" not in cls.size_defaults for cls in MODELS.values())
    assert "grey-small" not in TRAINING_DEFAULTS


def test_every_table_names_known_rules_and_families():
    assert all(set(cls.size_defaults) <= set(RULE_NAMES) for cls in MODELS.values())
    assert set(TRAINING_DEFAULTS) <= set(RULE_NAMES)
    assert all(set(families) <= set(MODELS) for families in TRAINING_DEFAULTS.values())
    for families in TRAINING_DEFAULTS.values():  # every recipe is a valid TrainConfig
        for recipe in families.values():
            update_config(TrainConfig(), recipe)
    assert SIZE_RULES[-1].applies(DataShape(7, 2048, 1))  # the last rule takes any shape


@pytest.mark.parametrize(
    "shape,rule",
    [
        ((1, 32, 32), "grey-small"),
        ((1, 33, 20), "medium"),
        ((3, 32, 32), "colour-small"),
        ((4, 8, 8), "colour-small"),
        ((3, 16, 40), "medium"),  # the longer side decides
        ((3, 64, 64), "medium"),
        ((1, 65, 65), "large"),
        ((3, 72, 72), "large"),
    ],
)
def test_the_shape_picks_the_rule_by_channels_and_longer_side(shape, rule):
    assert size_rule(DataShape(*shape)).name == rule


def test_colour_images_get_the_colour_rule():
    found = resolve_data_defaults("diffusion", CIFAR)
    entry = DIFFUSION_SIZES["colour-small"].overrides(CIFAR)
    assert found.rule == "colour-small"
    assert found.model == {f"network.{k}": v for k, v in entry.items()}
    assert found.model["network.attention_resolutions"] == [8]  # the lowest of three stages on 32 px
    assert found.training == TRAINING_DEFAULTS["colour-small"]["diffusion"]
    assert resolve_data_defaults("vae", CIFAR).model == resolve_data_defaults("ae", CIFAR).model != {}  # inherited


def test_a_network_is_cut_to_the_stages_small_images_allow():
    assert most_stages(DataShape(3, 2, 2)) == 2 and most_stages(DataShape(3, 32, 32)) == 6
    assert most_stages(DataShape(1, 1, 1)) == 1 and most_stages(DataShape(3, 1, 8)) == 4
    entry = NetworkDefaults(channels=(8, 16, 32), attention_stages=1)
    assert entry.overrides(DataShape(3, 2, 2)) == {"channels": [8, 16], "attention_resolutions": [1]}
    assert entry.overrides(DataShape(3, 12, 20)) == {"channels": [8, 16, 32], "attention_resolutions": [3]}
    with pytest.raises(ValueError, match="give both"):
        NetworkDefaults(attention_stages=1)


def test_the_users_own_settings_win_and_leave_the_record():
    user = {"channels": [8, 16], "conditioning.kind": "none"}
    found = resolve_data_defaults("diffusion", CIFAR, user, {"lr": 1e-3})
    assert "network.channels" not in found.model and found.model["network.attention_resolutions"] == [8]
    assert found.training == {}  # the user's lr: the colour recipe's lr is not applied, nor recorded
    whole = resolve_data_defaults("diffusion", CIFAR, {"network": {"channels": [8]}})  # a whole nested config
    assert whole.model == {}
    assert "channels 48,96,96, attention at 8, lr 5e-4" in resolve_data_defaults("diffusion", CIFAR).describe()


def test_a_record_goes_through_json_and_a_damaged_one_is_refused():
    found = resolve_data_defaults("diffusion", CIFAR)
    assert DataDefaults.from_record(json.loads(json.dumps(found.record()))) == found
    for bad in ([], {"rule": 3}, {"rule": "x", "shape": [3, 32]}, {"rule": "x", "shape": [3, 32, 32], "model": 1}):
        with pytest.raises(ValueError):
            DataDefaults.from_record(bad)


# --- new runs ----------------------------------------------------------------------------------------------------
def expected_config_before_the_rules(family: str, data: str, out: Path, training: dict) -> bytes:
    """config.json as aediff wrote it before the data's defaults (the fixed defaults, the data's shape, the
    family's own data defaults): what a grey run must still write, but for the new record."""
    dataset = load_dataset(data, "train")
    cls = model_class(family)
    model = update_config(fill_data_shape(cls.config_class(), dataset), cls.data_defaults(dataset))
    written = json.loads((out / "config.json").read_text())
    before = {
        "format_version": written["format_version"],
        "family": family,
        "model": dataclasses.asdict(model),
        "data_record": dataset.fingerprint(),
        "training": config_to_dict(update_config(TrainConfig(), training)),
        "data": written["data"],
    }
    return json.dumps(before, indent=2).encode()


@pytest.mark.parametrize("family", ["ae", "diffusion"])
def test_a_grey_28px_run_writes_todays_config_byte_for_byte_but_the_record(family, tmp_path):
    data = images(tmp_path, (28, 28), n=100)  # its 20% test split leaves one batch of 64
    training = {**QUIET, "max_steps": 1}
    out = tmp_path / family
    train(family, out, data, training=training, progress=False)
    written = json.loads((out / "config.json").read_text())
    record = written.pop("data_defaults")
    assert record == {"rule": "grey-small", "shape": [1, 28, 28], "model": {}, "training": {}}
    assert json.dumps(written, indent=2).encode() == expected_config_before_the_rules(family, data, out, training)
    run = aediff.load(out, device="cpu")
    assert run.training.batch_size == 64 and run.training.lr == 1e-3 and run.training.ema_decay == 0.999
    shapes = {"ae": ((16, 32, 64), ()), "diffusion": ((32, 64, 64), (7,))}[family]
    network = run.model.config.network if family == "diffusion" else run.model.config
    assert (tuple(network.channels), tuple(network.attention_resolutions)) == shapes


@pytest.fixture(scope="module")
def colour_run(tmp_path_factory) -> tuple[Path, str]:
    """A diffusion run on 16x16 RGB images with the colour rule's network, one step of batch 2."""
    root = tmp_path_factory.mktemp("colour")
    data = images(root, (16, 16, 3), n=8)
    out = root / "run"
    train("diffusion", out, data, training={**QUIET, "max_steps": 1, "batch_size": 2}, progress=False)
    return out, data


def test_a_colour_run_records_the_rule_and_rebuilds_from_its_folder_alone(colour_run, tmp_path):
    out, _ = colour_run
    stored = json.loads((out / "config.json").read_text())
    record = stored["data_defaults"]
    assert record["rule"] == "colour-small" and record["shape"] == [3, 16, 16]
    assert record["model"] == {"network.channels": [48, 96, 96], "network.attention_resolutions": [4]}
    assert record["training"] == {"lr": 5e-4}  # the user's batch size is not the rule's
    moved = shutil.copytree(out, tmp_path / "elsewhere")
    run = aediff.load(moved, device="cpu")
    assert run.data_defaults == DataDefaults.from_record(record)
    network = run.model.config.network
    assert network.channels == (48, 96, 96) and network.attention_resolutions == (4,)
    assert run.training.lr == 5e-4 and run.training.batch_size == 2


def test_a_config_without_the_record_loads_and_resumes(colour_run, tmp_path):
    out = shutil.copytree(colour_run[0], tmp_path / "old")
    stored = json.loads((out / "config.json").read_text())
    del stored["data_defaults"]  # as every run before the rules wrote it
    (out / "config.json").write_text(json.dumps(stored, indent=2))
    assert aediff.load(out, device="cpu").data_defaults is None
    train(None, out, training={"max_steps": 2}, resume=True, progress=False)
    assert "data_defaults" not in json.loads((out / "config.json").read_text())
    assert aediff.load(out, device="cpu").summary.steps == 2


def test_a_damaged_record_is_refused_naming_the_file(colour_run, tmp_path):
    out = shutil.copytree(colour_run[0], tmp_path / "damaged")
    stored = json.loads((out / "config.json").read_text())
    stored["data_defaults"] = {"rule": "colour-small", "shape": "32x32"}
    (out / "config.json").write_text(json.dumps(stored))
    with pytest.raises(RunError, match="config.json: data_defaults.shape"):
        aediff.load(out, device="cpu")


def test_a_resumed_run_never_derives_defaults_again(colour_run, tmp_path, monkeypatch):
    import aediff.training.train as training_module

    out = shutil.copytree(colour_run[0], tmp_path / "resumed")
    before = json.loads((out / "config.json").read_text())

    def refuse(*args, **kwargs):
        raise AssertionError("a resume derived the data's defaults")

    monkeypatch.setattr(training_module, "data_defaults_for", refuse)
    monkeypatch.setitem(TRAINING_DEFAULTS, "colour-small", {"diffusion": {"lr": 0.25}})  # as if the table changed
    train(None, out, training={"max_steps": 2}, resume=True, progress=False)
    after = json.loads((out / "config.json").read_text())
    assert after["data_defaults"] == before["data_defaults"] and after["model"] == before["model"]
    assert after["training"]["lr"] == 5e-4 and after["training"]["max_steps"] == 2


def test_the_users_options_win_in_a_new_run(tmp_path):
    data = images(tmp_path, (8, 8, 3), n=8)
    model = {"channels": [8, 16], "embedding_dim": 8}
    out = tmp_path / "mine"
    train("diffusion", out, data, model=model, training={**QUIET, "max_steps": 1, "batch_size": 2, "lr": 2e-3},
          progress=False)  # fmt: skip
    stored = json.loads((out / "config.json").read_text())
    assert stored["model"]["network"]["channels"] == [8, 16] and stored["training"]["lr"] == 2e-3
    assert stored["data_defaults"]["model"] == {"network.attention_resolutions": [2]}  # not overridden: applied
    assert stored["model"]["network"]["attention_resolutions"] == [2] and stored["data_defaults"]["training"] == {}


# --- the command line and the comparison --------------------------------------------------------------------------
def aediff_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    return subprocess.run([sys.executable, "-m", "aediff.cli", *args], capture_output=True, text=True, timeout=300,
                          cwd=cwd, env=env)  # fmt: skip


def test_dry_run_prints_the_rule_and_what_it_sets(tmp_path):
    colour = images(tmp_path, (32, 32, 3), n=4, name="colour")
    done = aediff_cli("train", "diffusion", "--data", colour, "--dry-run", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    line = "defaults for 32x32 RGB (rule colour-small): channels 48,96,96, attention at 8, lr 5e-4"
    assert line in done.stdout.splitlines()
    assert '"lr": 0.0005' in done.stdout and '"rule": "colour-small"' in done.stdout
    mine = aediff_cli("train", "diffusion", "--data", colour, "--widths", "8,16", "--lr", "0.002", "--dry-run",
                      cwd=tmp_path)  # fmt: skip
    assert "(rule colour-small): attention at 8\n" in mine.stdout and '"lr": 0.002' in mine.stdout
    grey = aediff_cli("train", "vae", "--data", images(tmp_path, (28, 28), n=4), "--dry-run", cwd=tmp_path)
    assert "defaults for 28x28 grey (rule grey-small): no change from the built-in defaults" in grey.stdout
    resumed = aediff_cli("train", "--resume", "--out", str(tmp_path / "r"), "--dry-run", cwd=tmp_path)
    assert "none derived on --resume" in resumed.stdout and not (tmp_path / "r").exists()


def test_the_comparison_leaves_batch_and_widths_to_the_data_and_says_which_rule(tmp_path):
    config = CompareConfig()
    plan = compare_plan(config)
    assert all("batch_size" not in training_overrides(p, config) for p in plan)  # the data's default batch
    assert "latent_channels" not in next(p for p in plan if p.name == "ae-spatial").model
    banner = plan_banner(config, plan, True, CIFAR)
    assert "defaults for 32x32 RGB (rule colour-small)" in banner
    assert "diffusion: channels 48,96,96, attention at 8, lr 5e-4" in banner
    # the swept models' bottlenecks are the plan's, ae-spatial's latent has none: no "bottleneck 128" said
    assert "bottleneck" not in banner and "; ae:" not in banner
    assert plan_banner(config, plan, True, DataShape(1, 28, 28)).endswith(
        "defaults for 28x28 grey (rule grey-small): the built-in defaults"
    )
    assert training_overrides(plan[0], CompareConfig(batch_size=32))["batch_size"] == 32  # a given batch wins


def test_the_comparison_adds_the_latent_autoencoders_on_colour_images_only():
    names = {p.name: p for p in compare_plan(CompareConfig(), shape=CIFAR)}
    assert {"kl-ae", "vqvae"} <= set(names) and names["kl-ae"].model == {"disc_start": 250}
    assert names["kl-ae"].spatial_row and names["vqvae"].spatial_row and names["ae-spatial"].spatial_row
    grey = {p.name for p in compare_plan(CompareConfig(), shape=DataShape(1, 28, 28))}
    assert not grey & {"kl-ae", "vqvae"} and grey == {p.name for p in compare_plan(CompareConfig())}
    chosen = {p.name for p in compare_plan(CompareConfig(latent_autoencoders=("vqvae",)), shape=DataShape(1, 28, 28))}
    assert "vqvae" in chosen and "kl-ae" not in chosen  # asked for on grey: given
    assert not {p.name for p in compare_plan(CompareConfig(latent_autoencoders=()), shape=CIFAR)} & {"kl-ae", "vqvae"}
    with pytest.raises(ConfigError, match="--latent-autoencoders names vae; the comparison can add kl-ae, vqvae"):
        CompareConfig(latent_autoencoders=("vae",))


def test_the_data_defaults_leave_alone_what_the_latent_never_reads():
    large = DataShape(3, 128, 128)
    assert resolve_data_defaults("kl-ae", CIFAR).model == {} == resolve_data_defaults("vqvae", CIFAR).model
    assert resolve_data_defaults("kl-ae", CIFAR, {"latent": "vector"}).model == {"bottleneck_dim": 128}
    assert resolve_data_defaults("ae", CIFAR).model == {"bottleneck_dim": 128}
    spatial, vector = resolve_data_defaults("ae", large, {"latent": "spatial"}), resolve_data_defaults("ae", large)
    assert spatial.model["latent_channels"] == 16 and "bottleneck_dim" not in spatial.model
    assert vector.model["bottleneck_dim"] == 512 and "latent_channels" not in vector.model
    assert "bottleneck" not in resolve_data_defaults("kl-ae", CIFAR).describe()
