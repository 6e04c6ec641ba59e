"""The trainer and the run folder: loss goes down, resume is exact, checkpoints survive crashes,
models come back from their folder alone without unpickling anything."""

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import aediff
from aediff import runs
from aediff.errors import ConfigError, RunError
from aediff.training import TrainConfig
from aediff.training.train import train
from aediff.training.trainer import EMA, Trainer, lr_factor

TINY = {"channels": (8, 16), "bottleneck_dim": 8}


def quick(**overrides):
    base = {
        "batch_size": 32,
        "lr": 3e-3,
        "warmup_steps": 5,
        "log_every": 5,
        "checkpoint_every": 1000,
        "preview_every": 0,
        "tensorboard": False,
    }
    return {**base, **overrides}


def weights(path):
    return load_file(str(path))


def test_training_lowers_the_loss_and_writes_a_complete_run(tmp_path):
    result = train("ae", tmp_path / "run", "digits", model=TINY, training=quick(max_steps=60), progress=False)
    assert result.step == 60 and not result.interrupted
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert log[-1]["loss"] < 0.5 * log[0]["loss"]
    for name in (
        "config.json",
        "model.safetensors",
        "ema.safetensors",
        "training_state/optimizer.safetensors",
        "training_state/state.json",
    ):
        assert (tmp_path / "run" / name).exists(), name
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["family"] == "ae" and config["model"]["image_size"] == 8 and config["data"]["spec"] == "digits"
    assert not list((tmp_path / "run").glob("*.tmp")) and not (tmp_path / "run" / "pending.json").exists()


def test_load_rebuilds_the_model_from_its_folder_without_unpickling(tmp_path, monkeypatch, digits_test):
    train("vae", tmp_path / "vae", "digits", model=TINY, training=quick(max_steps=10), progress=False)

    def forbidden(*args, **kwargs):
        raise AssertionError("loading a run must not unpickle anything")

    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(torch, "load", forbidden)
    model = aediff.load(tmp_path / "vae", weights="model", device="cpu").model
    ema = aediff.load(tmp_path / "vae", device="cpu").model
    x = digits_test.batch(torch.arange(4))["images"]
    stored = weights(tmp_path / "vae" / "model.safetensors")
    assert all(torch.equal(stored[k], v) for k, v in model.state_dict().items())
    assert not torch.allclose(model.reconstruct(x), ema.reconstruct(x))  # EMA weights differ
    assert model.training is False and model.family == "vae"


def test_ae_run_can_sample_after_training(tmp_path):
    train("ae", tmp_path / "ae", "digits", model=TINY, training=quick(max_steps=5), progress=False)
    model = aediff.load(tmp_path / "ae").model
    assert bool(model.prior_fitted)
    assert model.sample(3).shape == (3, 1, 8, 8)


def test_the_latent_gaussian_is_fitted_to_at_most_fit_images_training_images(tmp_path, monkeypatch):
    from aediff.models.ae import Autoencoder
    from aediff.training import trainer

    seen = []
    fit = Autoencoder.fit_latent_prior
    counted = lambda self, batches: fit(self, [seen.append(len(x)) or x for x in batches])  # noqa: E731
    monkeypatch.setattr(Autoencoder, "fit_latent_prior", counted)
    monkeypatch.setattr(trainer, "FIT_IMAGES", 100)
    train("ae", tmp_path / "ae", "digits", model=TINY, training=quick(max_steps=2), progress=False)
    assert seen and sum(seen) == 2 * 100  # the model and its EMA, 100 each
    seen.clear()
    monkeypatch.setattr(trainer, "FIT_IMAGES", 10_000)
    train("ae", tmp_path / "all", "digits", model=TINY, training=quick(max_steps=2), progress=False)
    assert sum(seen) == 2 * len(aediff.data.load_dataset("digits", "train"))  # fewer than the limit: all of them


# kl-ae: its discriminator trains from the 5th step on, so the interruption at 7 carries its Adam moments and BatchNorm
# statistics
@pytest.mark.parametrize("family,extra", [("ae", {}), ("vae", {}), ("kl-ae", {"disc_start": 4})])
def test_interrupted_and_resumed_run_equals_an_uninterrupted_one(tmp_path, family, extra):
    config, model = quick(max_steps=12, checkpoint_every=5), {**TINY, **extra}
    train(family, tmp_path / "full", "digits", model=model, training=config, progress=False)

    def ctrl_c_at_step_7(trainer, step, logs):
        if step == 7:
            os.kill(os.getpid(), signal.SIGINT)  # a real Ctrl-C: the trainer finishes the step and saves

    part = train(
        family, tmp_path / "part", "digits", model=model, training=config, progress=False, callbacks=[ctrl_c_at_step_7]
    )
    assert part.interrupted and part.step == 7
    assert json.loads((tmp_path / "part" / "training_state" / "state.json").read_text())["step"] == 7
    resumed = train(None, tmp_path / "part", resume=True, progress=False)
    assert resumed.step == 12 and not resumed.interrupted
    for name in ("model.safetensors", "ema.safetensors"):
        a, b = weights(tmp_path / "full" / name), weights(tmp_path / "part" / name)
        assert a.keys() == b.keys()
        for key in a:
            # cuDNN's convolution backward is not bitwise reproducible, so on CUDA the runs agree to rounding.
            assert torch.allclose(a[key].float(), b[key].float(), atol=1e-4 if torch.cuda.is_available() else 1e-6), (
                name,
                key,
            )


def test_resume_can_extend_a_finished_run(tmp_path):
    train("ae", tmp_path / "r", "digits", model=TINY, training=quick(max_steps=4), progress=False)
    result = train(None, tmp_path / "r", training={"max_steps": 9}, resume=True, progress=False)
    assert result.step == 9


def test_a_crash_before_the_commit_point_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    run = tmp_path / "run"
    train("ae", run, "digits", model=TINY, training=quick(max_steps=3), progress=False)
    before = weights(run / "model.safetensors")
    real_replace = os.replace

    def crash_on_commit(src, dst):
        if str(dst).endswith(runs.PENDING_FILE):
            raise KeyboardInterrupt  # killed after the new files were written, before the commit
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", crash_on_commit)
    with pytest.raises(KeyboardInterrupt):
        runs.write_files_atomically(run, {runs.MODEL_FILE: b"garbage", runs.STATE_FILE: b"{}"})
    monkeypatch.setattr(os, "replace", real_replace)
    assert list(run.glob("*.tmp"))  # debris of the interrupted write ...
    model = aediff.load(run, weights="model", device="cpu").model  # ... is ignored on open (loading never writes)
    assert list(run.glob("*.tmp"))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_a_crash_after_the_commit_point_is_rolled_forward(tmp_path, monkeypatch):
    run = tmp_path / "run"
    run.mkdir()
    (run / "a.txt").write_text("old a")
    (run / "b.txt").write_text("old b")
    real_replace = os.replace
    calls = []

    def crash_after_first_move(src, dst):
        result = real_replace(src, dst)
        if str(dst).endswith("a.txt"):
            calls.append(dst)
            raise KeyboardInterrupt  # killed between moving the two files into place
        return result

    monkeypatch.setattr(os, "replace", crash_after_first_move)
    with pytest.raises(KeyboardInterrupt):
        runs.write_files_atomically(run, {"a.txt": b"new a", "b.txt": b"new b"})
    monkeypatch.setattr(os, "replace", real_replace)
    assert calls and (run / "b.txt").read_text() == "old b"  # half-applied on disk
    runs.recover(run)
    assert (run / "a.txt").read_text() == "new a" and (run / "b.txt").read_text() == "new b"
    assert not (run / runs.PENDING_FILE).exists()


def test_clear_errors_for_bad_runs_and_configs(tmp_path):
    with pytest.raises(RunError, match="does not exist"):
        aediff.load(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunError, match="not an aediff run folder"):
        aediff.load(tmp_path / "empty")
    train("ae", tmp_path / "r", "digits", model=TINY, training=quick(max_steps=2), progress=False)
    with pytest.raises(RunError, match="--resume"):
        train("ae", tmp_path / "r", "digits", model=TINY, training=quick(max_steps=2), progress=False)
    (tmp_path / "r" / "model.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(RunError, match="not a valid safetensors"):
        aediff.load(tmp_path / "r", weights="model")
    with pytest.raises(ConfigError, match="how long"):
        train("ae", tmp_path / "s", "digits", model=TINY, training=quick(), progress=False)
    with pytest.raises(ConfigError, match="batch"):
        train("ae", tmp_path / "t", "digits", model=TINY, training=quick(batch_size=5000, max_steps=1), progress=False)


def test_learning_rate_warms_up_then_follows_a_cosine():
    config = TrainConfig(warmup_steps=10, min_lr_ratio=0.1)
    assert lr_factor(config, 0, 0.0) == pytest.approx(0.1)
    assert lr_factor(config, 9, 0.0) == pytest.approx(1.0)
    assert lr_factor(config, 50, 0.5) == pytest.approx(0.55)
    assert lr_factor(config, 100, 1.0) == pytest.approx(0.1)
    assert lr_factor(TrainConfig(warmup_steps=0, lr_schedule="constant"), 5, 0.9) == 1.0


def test_time_budget_stops_training(tmp_path):
    result = train("ae", tmp_path / "t", "digits", model=TINY, training=quick(max_minutes=0.02), progress=False)
    assert result.step > 0 and 1.0 <= result.train_seconds < 5.0


def test_tensorboard_gets_scalars_and_image_grids(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train(
        "dae",
        tmp_path / "tb",
        "digits",
        model=TINY,
        progress=False,
        training=quick(max_steps=10, tensorboard=True, preview_every=5),
    )
    events = EventAccumulator(str(tmp_path / "tb" / "tb"), size_guidance={"images": 0})
    events.Reload()
    assert {"train/loss", "train/lr", "train/mse"} <= set(events.Tags()["scalars"])
    assert [e.step for e in events.Scalars("train/loss")] == [5, 10]
    assert "preview/denoising" in events.Tags()["images"]


def test_mixed_precision_flag_trains(tmp_path):
    result = train(
        "ae",
        tmp_path / "bf16",
        "digits",
        model=TINY,
        progress=False,
        training=quick(max_steps=4, mixed_precision="bf16"),
    )
    assert result.step == 4 and torch.isfinite(torch.tensor(result.last_logs["loss"]))


# --- snapshots along the budget ------------------------------------------------------------------------


def test_snapshots_keep_loadable_models_along_the_way(tmp_path):
    run = tmp_path / "snap"
    config = quick(max_steps=8, log_every=1)
    result = train("ae", run, "digits", model=TINY, training={**config, "snapshots": (0.25, 0.5)}, progress=False)
    assert result.step == 8
    snapshots = runs.list_snapshots(run)
    assert snapshots == [(0.25, run / "snapshots" / "25"), (0.5, run / "snapshots" / "50")]
    final = weights(run / "ema.safetensors")
    previous_seconds = 0.0
    for (_, folder), steps in zip(snapshots, (2, 4), strict=True):
        assert not (folder / "training_state").exists()  # weights and a record, no optimizer state
        loaded = aediff.load(folder, device="cpu")
        assert loaded.summary.steps == steps and loaded.summary.images_seen == steps * 32
        assert previous_seconds < loaded.summary.train_seconds < result.train_seconds
        previous_seconds = loaded.summary.train_seconds
        assert loaded.training.snapshots == (0.25, 0.5) and loaded.family == "ae"
        snapshot = weights(folder / "ema.safetensors")
        assert not all(torch.equal(snapshot[k], final[k]) for k in final)  # the model as it was then
        assert bool(loaded.model.prior_fitted)  # after_training ran on the EMA model: it can sample
        assert loaded.model.sample(3).shape == (3, 1, 8, 8)
        log = [json.loads(line)["step"] for line in (folder / "log.jsonl").read_text().splitlines()]
        assert log == list(range(1, steps + 1))  # the log so far, for the throughput at that point
    assert not list((run / "snapshots").glob(".*"))  # no staging folder left
    with pytest.raises(RunError, match="no training state"):
        train(None, snapshots[0][1], resume=True, progress=False)

    # Snapshots change nothing in the training itself.
    train("ae", tmp_path / "plain", "digits", model=TINY, training=config, progress=False)
    assert runs.list_snapshots(tmp_path / "plain") == []
    for name in ("model.safetensors", "ema.safetensors"):
        a, b = weights(run / name), weights(tmp_path / "plain" / name)
        assert all(torch.equal(a[k], b[k]) for k in a), name


def test_a_crash_while_writing_a_snapshot_leaves_none_and_resume_writes_only_the_missing_one(tmp_path, monkeypatch):
    run = tmp_path / "r"
    config = quick(max_steps=8, checkpoint_every=3, snapshots=(0.25, 0.5))
    real_replace = os.replace

    def power_cut(src, dst):
        if Path(dst) == run / "snapshots" / "50":
            raise RuntimeError("power cut")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", power_cut)
    with pytest.raises(RuntimeError, match="power cut"):
        train("ae", run, "digits", model=TINY, training=config, progress=False)
    monkeypatch.setattr(os, "replace", real_replace)
    assert [fraction for fraction, _ in runs.list_snapshots(run)] == [0.25]  # the half-written 50 is not listed
    assert not (run / "snapshots" / "50").exists()
    (run / "snapshots" / "25" / "marker").write_text("written before the crash")

    result = train(None, run, resume=True, progress=False)  # from the checkpoint at step 3
    assert result.step == 8
    assert [fraction for fraction, _ in runs.list_snapshots(run)] == [0.25, 0.5]
    assert (run / "snapshots" / "25" / "marker").exists()  # not rewritten
    assert aediff.load(run / "snapshots" / "50").summary.steps == 4
    assert not list((run / "snapshots").glob(".*"))  # the staging folder of the crash is gone


@pytest.mark.slow
def test_snapshot_time_is_neither_training_time_nor_spent_from_a_time_budget(tmp_path, monkeypatch):
    import time

    real_save = Trainer.save_snapshots

    def slow_save(self, fractions):
        time.sleep(5.0)  # longer than the whole budget: were it counted, training would stop right after
        real_save(self, fractions)

    monkeypatch.setattr(Trainer, "save_snapshots", slow_save)
    run = tmp_path / "t"
    # A budget of 2.4 s with a snapshot after the first step (whose set-up cost makes it the slowest).
    result = train("ae", run, "digits", model=TINY, training=quick(max_minutes=0.04, snapshots=(0.01,)), progress=False)
    [(fraction, folder)] = runs.list_snapshots(run)
    snapshot, final = aediff.load(folder).summary, aediff.load(run).summary
    assert fraction == 0.01 and 1 <= snapshot.steps < result.step  # early in the run, however fast its steps
    assert 2.4 <= final.wall_seconds < 5.0 and final.train_seconds < 5.0  # the 5 s are in neither


@pytest.mark.parametrize("fractions", [(2.0,), (0.0,), (1.0,), (0.5, 0.25), (0.5, 0.5), (0.3333331, 0.3333332)])
def test_bad_snapshot_fractions_raise(fractions, tmp_path):
    with pytest.raises(ConfigError, match="snapshots"):
        TrainConfig(snapshots=fractions)
    with pytest.raises(ConfigError, match="snapshots"):
        train("ae", tmp_path / "r", "digits", model=TINY, training=quick(max_steps=2, snapshots=fractions))
    assert not (tmp_path / "r").exists()


def test_snapshot_fractions_come_from_lists_and_json():
    assert TrainConfig(snapshots=[0.25, 0.5]).snapshots == (0.25, 0.5)
    from aediff.config import config_from_dict, config_to_dict

    config = TrainConfig(snapshots=(0.1, 0.125))
    assert config_from_dict(TrainConfig, json.loads(json.dumps(config_to_dict(config)))) == config
    assert runs.snapshot_path("r", 0.125) == Path("r/snapshots/12.5")


@pytest.mark.parametrize("value", ["2", "0.5,0.25", "abc"])
def test_cli_snapshots_is_checked_as_a_usage_error(value, tmp_path):
    script = shutil.which("aediff", path=str(Path(sys.executable).parent))
    command = [script] if script else [sys.executable, "-m", "aediff.cli"]
    env = {**os.environ, "NO_COLOR": "1"}
    env.pop("AEDIFF_DEBUG", None)
    args = [*command, "train", "ae", "--snapshots", value]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env)
    out = done.stdout + done.stderr
    assert done.returncode == 2, out
    assert "Invalid value for '--snapshots'" in out and "e.g. 0.25,0.5" in out and "Traceback" not in out
    assert not (tmp_path / "runs").exists()


def test_ema_update_is_a_per_tensor_lerp_with_warm_up_and_follows_buffers():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.BatchNorm1d(6), torch.nn.Linear(6, 2))
    ema = EMA(model, decay=0.99)
    expected = [p.detach().clone() for p in model.parameters()]
    for step in range(15):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        model.train()(torch.randn(8, 4))  # moves BatchNorm's running statistics (buffers)
        ema.update(model, step)
        decay = min(0.99, (1 + step) / (10 + step))
        for e, p in zip(expected, model.parameters(), strict=True):
            e.lerp_(p.detach(), 1 - decay)
    assert all(torch.equal(a, b) for a, b in zip(ema.model.parameters(), expected, strict=True))
    assert all(torch.equal(a, b) for a, b in zip(ema.model.buffers(), model.buffers(), strict=True))
    assert not torch.equal(next(ema.model.parameters()), next(model.parameters()))  # an average, not a copy
    with pytest.raises(ValueError, match="parameters"):
        ema.update(torch.nn.Linear(4, 6), 15)  # another model, with other parameters
