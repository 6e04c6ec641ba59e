"""Gradient accumulation, evaluation during training, the best and the last N checkpoints, bf16 'auto'."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

import aediff
from aediff.data import DataConfig
from aediff.device import resolve_mixed_precision
from aediff.errors import ConfigError
from aediff.models import Capability
from aediff.training import keeping
from aediff.training.train import train

TINY = {"channels": (8, 16), "bottleneck_dim": 8}


def quick(**overrides):
    base = {"batch_size": 16, "lr": 3e-3, "warmup_steps": 2, "log_every": 1, "tensorboard": False}
    return {**base, **overrides}


def weights(path):
    return load_file(str(path))


def test_accumulated_parts_make_the_same_step_as_the_whole_batch(tmp_path):
    # The autoencoder's loss has no random draws: the mean over 16 images is the mean of four means of 4. In fp32:
    # bf16 autocast rounds a convolution over 4 images differently from one over 16.
    for parts in (1, 4):
        config = quick(max_steps=5, grad_accumulation=parts, mixed_precision="no")
        train("ae", tmp_path / f"p{parts}", "digits", model=TINY, training=config,
              progress=False)  # fmt: skip
    a, b = weights(tmp_path / "p1" / "model.safetensors"), weights(tmp_path / "p4" / "model.safetensors")
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
    # the control: a different batch (another seed) moves the weights much further than that
    train("ae", tmp_path / "other", "digits", model=TINY, training=quick(max_steps=5, seed=1, mixed_precision="no"),
          progress=False)  # fmt: skip
    c = weights(tmp_path / "other" / "model.safetensors")
    assert max((a[k] - c[k]).abs().max() for k in a if a[k].is_floating_point()) > 1e-3


def test_a_batch_that_does_not_split_into_the_parts_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="multiple of 3"):
        train(
            "ae", tmp_path / "r", "digits", model=TINY, training=quick(max_steps=1, grad_accumulation=3), progress=False
        )


def test_held_out_loss_is_logged_and_the_lowest_is_kept_in_best(tmp_path):
    run = tmp_path / "r"
    train("ae", run, "digits", model=TINY, training=quick(max_steps=12, eval_every=3, eval_images=64), progress=False)
    evals = [r for r in map(json.loads, (run / "log.jsonl").read_text().splitlines()) if "heldout_loss" in r]
    assert [r["step"] for r in evals] == [3, 6, 9, 12]
    best = json.loads((run / "best" / "best.json").read_text())
    assert best["heldout_loss"] == min(r["heldout_loss"] for r in evals)
    assert best["step"] == min(evals, key=lambda r: r["heldout_loss"])["step"]
    loaded = aediff.load(run / "best")  # a run folder of its own
    assert loaded.model.family == "ae"
    # the same weights evaluated again give the same loss: the draws are fixed
    again = keeping.held_out_loss(loaded.model, DataConfig(spec="digits").load("test"), 64, 16, torch.device("cpu"))
    assert again == pytest.approx(best["heldout_loss"], rel=1e-5)


def test_best_is_replaced_only_by_a_lower_held_out_loss_and_survives_a_resume(tmp_path, monkeypatch):
    scripted = iter([0.5, 0.3, 0.4, 0.35, 0.32, 0.2])
    monkeypatch.setattr(keeping, "held_out_loss", lambda *args: next(scripted))
    run = tmp_path / "r"

    def best_step():
        return json.loads((run / "best" / "best.json").read_text())["step"]

    train("ae", run, "digits", model=TINY, training=quick(max_steps=8, eval_every=2), progress=False)
    assert best_step() == 4  # 0.3, not the later 0.4 or 0.35
    train(None, run, training={"max_steps": 10}, resume=True, progress=False)
    assert best_step() == 4  # 0.32 at step 10 loses to the 0.3 the run had before it stopped
    train(None, run, training={"max_steps": 12}, resume=True, progress=False)
    assert best_step() == 12 and json.loads((run / "best" / "best.json").read_text())["heldout_loss"] == 0.2


def test_the_last_n_checkpoints_are_kept_and_each_resumes(tmp_path):
    run = tmp_path / "r"
    train("ae", run, "digits", model=TINY, training=quick(max_steps=10, checkpoint_every=2, keep_checkpoints=3),
          progress=False)  # fmt: skip
    kept = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert kept == ["step-00000006", "step-00000008", "step-00000010"]
    folder = run / "checkpoints" / "step-00000006"
    assert json.loads((folder / "training_state" / "state.json").read_text())["step"] == 6
    assert train(None, folder, training={"max_steps": 7}, resume=True, progress=False).step == 7
    assert not (tmp_path / "plain").exists()
    train(
        "ae", tmp_path / "plain", "digits", model=TINY, training=quick(max_steps=4, checkpoint_every=2), progress=False
    )
    assert not (tmp_path / "plain" / "checkpoints").exists()  # off by default


def test_auto_precision_is_bf16_only_where_the_cpu_computes_it(monkeypatch):
    import aediff.device as device

    cpu = torch.device("cpu")
    monkeypatch.setattr(device, "cpu_flags", lambda: frozenset({"avx2", "avx512_bf16"}))
    assert resolve_mixed_precision("auto", cpu) == "bf16"
    monkeypatch.setattr(device, "cpu_flags", lambda: frozenset({"avx2"}))
    assert resolve_mixed_precision("auto", cpu) == "no"
    assert resolve_mixed_precision("bf16", cpu) == "bf16" and resolve_mixed_precision("no", cpu) == "no"


@pytest.mark.slow
def test_a_judge_adds_the_samples_fid_to_each_evaluation(tmp_path):
    run, judge = tmp_path / "r", tmp_path / "clf"
    train("classifier", judge, "digits", training=quick(max_steps=3), progress=False)
    train("diffusion", run, "digits", model={"channels": (8, 16), "attention_resolutions": []},
          training=quick(max_steps=4, eval_every=2, eval_images=32, eval_judge=str(judge),
                         eval_samples=20), progress=False)  # fmt: skip
    evals = [r for r in map(json.loads, (run / "log.jsonl").read_text().splitlines()) if "heldout_loss" in r]
    assert [r["step"] for r in evals] == [2, 4] and all(r["fid"] > 0 for r in evals)
    with pytest.raises(ConfigError, match="eval_judge"):
        train(
            "ae",
            tmp_path / "x",
            "digits",
            model=TINY,
            training=quick(max_steps=1, eval_judge="runs/clf"),
            progress=False,
        )


def accelerator_with_a_loss_scaler():
    """Accelerate on the CPU with a GradScaler, as it has under fp16 on a GPU (the CPU has no fp16 autocast)."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=False)
    accelerator = Accelerator(cpu=True)
    accelerator.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12, growth_interval=2)
    return accelerator


def test_a_resumed_run_continues_from_the_loss_scale_it_had(tmp_path):
    config = quick(max_steps=8, checkpoint_every=4, lr_schedule="constant", warmup_steps=0)
    train("ae", tmp_path / "full", "digits", model=TINY, training=config, accelerator=accelerator_with_a_loss_scaler(),
          progress=False)  # fmt: skip
    train("ae", tmp_path / "part", "digits", model=TINY, training={**config, "max_steps": 4},
          accelerator=accelerator_with_a_loss_scaler(), progress=False)  # fmt: skip
    train(None, tmp_path / "part", training={"max_steps": 8}, resume=True, accelerator=accelerator_with_a_loss_scaler(),
          progress=False)  # fmt: skip

    def scale(run):
        return json.loads((run / "training_state" / "state.json").read_text())["grad_scaler"]["scale"]

    assert scale(tmp_path / "full") == scale(tmp_path / "part") == 2.0**12 * 2**4  # doubled every 2 steps, 8 steps
    a, b = weights(tmp_path / "full" / "model.safetensors"), weights(tmp_path / "part" / "model.safetensors")
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_fp16_is_refused_off_a_gpu_with_the_alternatives():
    with pytest.raises(ConfigError, match="fp16 autocast needs a CUDA GPU.*bf16 or auto"):
        resolve_mixed_precision("fp16", torch.device("cpu"))


def tensorboard_scalars(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    return events


def test_tensorboard_gets_scalars_and_previews_through_accelerate_and_a_resume_drops_what_came_after(tmp_path):
    run = tmp_path / "r"
    config = {**quick(max_steps=6, log_every=2, preview_every=3, checkpoint_every=3), "tensorboard": True}

    def crash_at_step_5(trainer, step, logs):
        if step == 5:
            raise RuntimeError("crash")  # no checkpoint: the last one is step 3's, the log already has step 4

    with pytest.raises(RuntimeError, match="crash"):
        train("ae", run, "digits", model=TINY, training=config, progress=False, callbacks=[crash_at_step_5])
    events = tensorboard_scalars(run / "tb")
    assert [e.step for e in events.Scalars("train/loss")] == [2, 4]
    assert any(tag.startswith("preview/") for tag in events.Tags()["images"])
    train(None, run, resume=True, progress=False)
    assert [e.step for e in tensorboard_scalars(run / "tb").Scalars("train/loss")] == [2, 4, 6]  # step 4 once


def test_a_tracker_whose_package_is_missing_is_named_with_its_install(tmp_path):
    import importlib.util

    if importlib.util.find_spec("wandb") is not None:
        pytest.skip("wandb is installed here")
    with pytest.raises(ConfigError, match="pip install wandb"):
        train("ae", tmp_path / "r", "digits", model=TINY, training={**quick(max_steps=2), "trackers": ("wandb",)},
              progress=False)  # fmt: skip


def test_channels_last_trains_the_same_model_and_saves_ordinary_weights(tmp_path):
    for layout in (False, True):
        config = quick(max_steps=4, channels_last=layout, mixed_precision="no")
        train("ae", tmp_path / f"cl{layout}", "digits", model=TINY, training=config, progress=False)
    a, b = weights(tmp_path / "clFalse" / "model.safetensors"), weights(tmp_path / "clTrue" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-4) for k in a)
    assert aediff.load(tmp_path / "clTrue").model.can(Capability.LATENT)


@pytest.fixture
def eager_compile(monkeypatch):
    """nn.Module.compile with Dynamo's 'eager' backend: the graph capture and the in-place wrapping are real,
    inductor's C++ code generation (a minute on 2 cores) is skipped; benchmarks/train_speed.py times the real one."""
    compiled, original = [], torch.nn.Module.compile

    def compile_eagerly(module, *args, **kwargs):
        compiled.append(module)
        return original(module, *args, **{**kwargs, "backend": "eager"})

    monkeypatch.setattr(torch.nn.Module, "compile", compile_eagerly)
    return compiled


@pytest.mark.slow
def test_compile_compiles_the_training_copy_only_and_checkpoints_keep_their_names(tmp_path, eager_compile):
    config = quick(max_steps=3, compile=True, mixed_precision="no")
    model = {"channels": (8, 16)}
    train("diffusion", tmp_path / "c", "digits", model=model, training=config, progress=False)
    assert [type(m).__name__ for m in eager_compile] == ["Denoiser"]  # the trainable part, once
    train("diffusion", tmp_path / "e", "digits", model=model, training={**config, "compile": False}, progress=False)
    a, b = weights(tmp_path / "c" / "model.safetensors"), weights(tmp_path / "e" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-4) for k in a)  # no "_orig_mod." names
    train("diffusion", tmp_path / "c", training={"max_steps": 4}, resume=True, progress=False)  # resumes compiled
    assert aediff.load(tmp_path / "c").summary.steps == 4


def test_compile_without_a_cpp_compiler_says_what_to_install(tmp_path, monkeypatch):
    import shutil

    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(ConfigError, match="needs a C\\+\\+ compiler"):
        train("ae", tmp_path / "r", "digits", model=TINY, training=quick(max_steps=1, compile=True), progress=False)


@pytest.mark.parametrize("flags,expected", [((), False), (("--compile", "--channels-last"), True)])
def test_the_speed_flags_reach_the_training_config(flags, expected, tmp_path):
    import subprocess
    import sys

    command = [sys.executable, "-m", "aediff.cli", "train", "diffusion", "--data", "digits", "--out",
               str(tmp_path / "r"), "--dry-run", *flags]  # fmt: skip
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    assert f'"compile": {str(expected).lower()}' in out and f'"channels_last": {str(expected).lower()}' in out


@pytest.mark.parametrize("kind,refused", [("FSDP", "FSDP"), ("DEEPSPEED", "DeepSpeed"), ("MULTI_GPU", None)])
def test_sharded_launches_are_refused_with_the_data_parallel_alternative(kind, refused):
    from types import SimpleNamespace

    from accelerate.utils import DistributedType

    from aediff.training.setup import refuse_sharding

    launched = SimpleNamespace(distributed_type=DistributedType[kind])
    if refused is None:
        refuse_sharding(launched)  # DDP: goes ahead
        return
    with pytest.raises(ConfigError, match=f"{refused} shards the weights.*accelerate launch --multi_gpu"):
        refuse_sharding(launched)
