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
from aediff.training import keeping
from aediff.training.train import train

TINY = {"channels": (8, 16), "bottleneck_dim": 8}


def quick(**overrides):
    base = {"batch_size": 16, "lr": 3e-3, "warmup_steps": 2, "log_every": 1, "tensorboard": False}
    return {**base, **overrides}


def weights(path):
    return load_file(str(path))


def test_accumulated_parts_make_the_same_step_as_the_whole_batch(tmp_path):
    # The autoencoder's loss has no random draws: the mean over 16 images is the mean of four means of 4.
    for parts in (1, 4):
        train("ae", tmp_path / f"p{parts}", "digits", model=TINY, training=quick(max_steps=5, grad_accumulation=parts),
              progress=False)  # fmt: skip
    a, b = weights(tmp_path / "p1" / "model.safetensors"), weights(tmp_path / "p4" / "model.safetensors")
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
    # the control: a different batch (another seed) moves the weights much further than that
    train("ae", tmp_path / "other", "digits", model=TINY, training=quick(max_steps=5, seed=1), progress=False)
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
