"""Distillation, progressive and consistency: the nested grids, the student's target, the consistency function's
boundary, the published recipe's learning rate and EMA, and `aediff distill` end to end (the student's few steps
land nearer the teacher's many than the teacher's own few do)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import aediff
from aediff.data import load_dataset
from aediff.diffusion.samplers import SamplerOptions, sample_consistency, sample_heun
from aediff.diffusion.schedules import karras_sigmas
from aediff.errors import ConfigError
from aediff.models import build_model
from aediff.training.distill import (
    RHO,
    ConsistencyRound,
    DistillConfig,
    ProgressiveRound,
    consistency_function,
    distill,
    distillation_guidance,
    euler_step,
    heun_step,
    refine,
    student_target,
)

AEDIFF = str(Path(sys.executable).with_name("aediff"))


def test_refined_grids_nest_and_split_at_rho_midpoints():
    grid = karras_sigmas(4, 0.002, 80.0)
    fine = refine(grid)
    assert len(fine) == 2 * 4 + 1 and torch.equal(fine[::2], grid)  # every student level is a teacher level
    roots = fine ** (1 / RHO)
    assert torch.allclose(roots[1:-1:2], (roots[:-2:2] + roots[2::2]) / 2)  # midpoints in sigma^(1/rho)
    assert fine[-2] == pytest.approx(0.002 / 2**RHO) and fine[-1] == 0
    assert torch.all(fine[:-1] > fine[1:])  # still decreasing


def test_one_step_to_the_target_lands_where_the_teachers_two_land():
    """For any teacher, the student's step with x0 = target reproduces the teacher's two Euler steps."""
    generator = torch.Generator().manual_seed(0)
    weights = torch.randn(2, 4, 4, generator=generator)

    def teacher(x, sigma):  # some nonlinear function of x and sigma
        return torch.tanh(x @ weights[0]) / (1 + sigma) + (x @ weights[1]) * sigma / (1 + sigma**2)

    x = torch.randn(5, 1, 4, 4, generator=generator) * 3
    sigma, middle = torch.tensor(3.0), torch.tensor(1.2)
    for following in (torch.tensor(0.4), torch.tensor(0.0)):
        x_mid = euler_step(x, teacher(x, sigma), sigma, middle)
        two = euler_step(x_mid, teacher(x_mid, middle), middle, following)
        one = euler_step(x, student_target(teacher, x, sigma, middle, following), sigma, following)
        assert torch.allclose(one, two, atol=1e-5)
    # the target is not simply the teacher's own estimate (else there would be nothing to learn)
    assert not torch.allclose(student_target(teacher, x, sigma, middle, torch.tensor(0.4)), teacher(x, sigma))


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"steps": 4, "teacher_steps": 6}, "power of two"),
        ({"steps": 4, "teacher_steps": 4}, "power of two"),
        ({"iterations": 0}, "iterations"),
        ({"lr": 0.0}, "lr"),
        ({"max_minutes": float("inf")}, "max_minutes"),
    ],
)
def test_bad_recipes_are_refused_by_name(changes, message):
    with pytest.raises(ConfigError, match=message):
        DistillConfig(**changes)
    assert DistillConfig(steps=4, teacher_steps=32).rounds == 3


def test_consistency_takes_any_grid_in_one_round_and_an_unknown_method_is_refused():
    config = DistillConfig(steps=1, teacher_steps=18, method="consistency")
    assert config.rounds == 1 and config.sampler == "consistency"
    with pytest.raises(ConfigError, match="progressive or consistency"):
        DistillConfig(method="shortcut")
    with pytest.raises(ConfigError, match="target_decay"):
        DistillConfig(method="consistency", target_decay=1.0)


def test_the_consistency_function_holds_its_boundary_and_is_the_denoiser_above_it():
    x = torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    denoise = lambda x, sigma: torch.zeros_like(x)  # noqa: E731
    low = 0.002
    assert torch.equal(consistency_function(denoise, x, torch.tensor(low), low), x)  # f(x, sigma_min) = x
    assert consistency_function(denoise, x, torch.tensor(11 * low), low).abs().max() < 0.01 * x.abs().max()
    assert consistency_function(denoise, x, torch.tensor(80.0), low).abs().max() < 1e-8


def test_the_teachers_heun_step_is_the_heun_samplers():
    torch.manual_seed(0)
    net = build_model("diffusion", {"image_size": 8, "channels": (8, 16), "embedding_dim": 16}).eval()
    denoise = lambda x, sigma: net.predict_x0(x, sigma.flatten())  # noqa: E731
    x = torch.randn(2, 1, 8, 8) * 3.0
    with torch.no_grad():
        ours = heun_step(denoise, x, torch.full((2, 1, 1, 1), 3.0), torch.full((2, 1, 1, 1), 1.5))
        theirs = sample_heun(lambda x, s: net.predict_x0(x, s), x, torch.tensor([3.0, 1.5]))
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_consistency_sampling_restarts_at_each_level_on_an_open_grid():
    torch.manual_seed(0)
    net = build_model("diffusion", {"image_size": 8, "channels": (8, 16), "embedding_dim": 16}).eval()
    low, high = net.karras_range
    for steps in (1, 2, 4):
        sigmas = net.sampling_sigmas(net.sampler_plan(SamplerOptions(sampler="consistency", steps=steps)))
        assert len(sigmas) == steps + 1 and sigmas[0] == pytest.approx(high) and sigmas[-1] == 0
        assert steps == 1 or sigmas[-2] > 10 * low  # the grid of steps + 1 without sigma_min
    calls = []
    x = torch.randn(2, 1, 8, 8)
    out = sample_consistency(lambda x, s: calls.append(float(s)) or torch.zeros_like(x), x, torch.tensor([9.0, 2.0, 0]))
    assert calls == [9.0, 2.0] and torch.equal(out, torch.zeros_like(x))  # the last jump lands on D: no noise


def test_the_published_recipe_decays_the_rate_to_zero_and_keeps_no_ema_of_the_student():
    torch.manual_seed(0)
    net = build_model("diffusion", {"image_size": 8, "channels": (8, 16), "embedding_dim": 16}).eval()
    images = torch.rand(4, 1, 8, 8) * 2 - 1
    grid = karras_sigmas(2, *net.karras_range)
    published = ProgressiveRound(net, grid, DistillConfig(steps=2, teacher_steps=4, lr=1e-3))
    published.step(images, None, torch.Generator().manual_seed(0), 30, 0.75)
    assert published.optimizer.param_groups[0]["lr"] == pytest.approx(1e-3 * 0.25)
    assert published.ema is None and published.result() is published.student
    old = ProgressiveRound(net, grid, DistillConfig(steps=2, teacher_steps=4, lr=1e-3, lr_decay=False, ema_decay=0.999))
    old.step(images, None, torch.Generator().manual_seed(0), 30, 0.75)
    assert old.optimizer.param_groups[0]["lr"] == pytest.approx(1e-3) and old.result() is old.ema
    consistency = ConsistencyRound(net, DistillConfig(steps=1, teacher_steps=6, method="consistency"))
    assert len(consistency.grid) == 6 and consistency.result() is consistency.ema  # the target network
    loss = consistency.step(images, None, torch.Generator().manual_seed(0), 0, 0.0)
    assert loss > 0 and consistency.steps == 1


def test_a_class_conditioned_teacher_is_followed_at_its_guidance_and_a_plain_one_unguided():
    from aediff.models import Condition

    torch.manual_seed(0)
    config = {"image_size": 8, "channels": (8, 16), "embedding_dim": 16, "conditioning.kind": "class", "num_classes": 4}
    net = build_model("diffusion", config).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.2)  # zero-initialised layers would hide the condition
    grid = karras_sigmas(2, *net.karras_range)
    x, labels, sigma = torch.randn(3, 1, 8, 8), torch.tensor([1, 2, 3]), torch.tensor(0.8)
    with torch.no_grad():
        guided = net.guided_denoiser(3, Condition(class_labels=labels, guidance=1.5))(x, sigma)
        conditional = net.predict_x0(x, sigma, class_labels=labels)
        w = distillation_guidance(net, DistillConfig())
        followed = ProgressiveRound(net, grid, DistillConfig(steps=2, teacher_steps=4), guidance=w)._teacher(labels)
        assert torch.allclose(followed(x, sigma.expand(3, 1, 1, 1)), guided, atol=1e-5)
        plain = ProgressiveRound(net, grid, DistillConfig(steps=2, teacher_steps=4))._teacher(labels)
        assert torch.allclose(plain(x, sigma.expand(3, 1, 1, 1)), conditional, atol=1e-5)
    assert not torch.allclose(guided, conditional, atol=1e-3)  # the control: guidance changes the target
    unconditional = build_model("diffusion", {"image_size": 8, "channels": (8, 16), "embedding_dim": 16})
    assert distillation_guidance(unconditional, DistillConfig(guidance=3.0)) == 1.0
    assert w == 1.5 and distillation_guidance(net, DistillConfig(guidance=3.0)) == 3.0


def test_only_the_first_round_guides_and_every_student_samples_unguided(digits_train):
    """Later rounds follow a student that has learnt the guided denoiser: guiding it again would compound."""
    config = {
        "image_size": 8,
        "channels": (8, 16),
        "embedding_dim": 16,
        "conditioning.kind": "class",
        "num_classes": 10,
    }
    net = build_model("diffusion", config).eval()
    seen: list[float] = []
    original = ProgressiveRound.__init__

    def recording(self, *args, **kwargs):
        original(self, *args, **kwargs)
        seen.append(self.guidance)

    students: dict[int, object] = {}
    ProgressiveRound.__init__ = recording
    try:
        final = distill(net, digits_train, DistillConfig(steps=1, teacher_steps=4, iterations=1, batch_size=8),
                        on_round=students.__setitem__)  # fmt: skip
    finally:
        ProgressiveRound.__init__ = original
    assert seen == [1.5, 1.0]
    assert all(s.config.sampling.guidance == 1.0 for s in students.values()) and final.config.sampling.steps == 1
    assert students[2].config.sampling.steps == 2 and net.config.sampling.guidance == 1.5  # the teacher unchanged


@pytest.fixture(scope="module")
def teacher(tmp_path_factory, tiny_runs):
    from conftest import TINY_DIFFUSION

    root = tmp_path_factory.mktemp("distill")
    tiny_runs(root, [("teacher", "diffusion", {}, TINY_DIFFUSION)], steps=60)
    return root / "teacher"


@pytest.mark.slow
def test_the_student_lands_nearer_the_teacher_than_the_teacher_in_as_few_steps(teacher):
    """The control: the teacher itself sampling with the student's 2 Euler steps. From the same noise, the
    distilled student's 2-step images are nearer the teacher's 4-step images than the teacher's 2-step ones."""
    run = aediff.load(teacher, device="cpu")
    config = DistillConfig(steps=2, teacher_steps=4, iterations=150, batch_size=32, lr=3e-4)
    student = distill(run.model, load_dataset("digits", "train"), config)
    assert [r["steps"] for r in config.history] == [2] and config.history[0]["iterations"] == 150

    def draw(model, steps):
        options = SamplerOptions(sampler="euler", steps=steps)
        return model.sample(64, options=options, generator=torch.Generator().manual_seed(5))

    target = draw(run.model, 4)
    distilled = (draw(student, 2) - target).pow(2).mean()
    undistilled = (draw(run.model, 2) - target).pow(2).mean()
    print(f"MSE to the teacher's 4 steps: student {distilled:.4f}, teacher in 2 steps {undistilled:.4f}")
    assert distilled < 0.8 * undistilled
    fresh = aediff.load(teacher, device="cpu").model.state_dict()
    assert all(torch.equal(value, fresh[name]) for name, value in run.model.state_dict().items())  # unchanged


@pytest.mark.slow
def test_the_consistency_student_in_one_step_lands_nearer_the_teachers_ode_than_the_teachers_one_jump(teacher):
    """The control: the teacher's own one jump D(x_max, sigma_max) from the same noise. The consistency student's
    one step is nearer the teacher's 8-step ODE solution than that jump is."""
    run = aediff.load(teacher, device="cpu")
    config = DistillConfig(steps=1, teacher_steps=8, iterations=150, batch_size=32, lr=3e-4, method="consistency")
    student = distill(run.model, load_dataset("digits", "train"), config)

    def draw(model, sampler, steps):
        options = SamplerOptions(sampler=sampler, steps=steps)
        return model.sample(64, options=options, generator=torch.Generator().manual_seed(5))

    target = draw(run.model, "euler", 8)
    distilled = (draw(student, "consistency", 1) - target).pow(2).mean()
    jump = (draw(run.model, "consistency", 1) - target).pow(2).mean()
    print(f"MSE to the teacher's 8 Euler steps: consistency student {distilled:.4f}, teacher's one jump {jump:.4f}")
    assert distilled < 0.8 * jump


def cli(*args, cwd=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    env.pop("AEDIFF_DEBUG", None)
    return subprocess.run([AEDIFF, *map(str, args)], capture_output=True, text=True, env=env, timeout=300, cwd=cwd)


@pytest.mark.slow
def test_the_distill_command_writes_a_run_that_samples_in_few_steps(teacher, tmp_path):
    out = tmp_path / "student"
    done = cli("distill", teacher, "--steps", 2, "--teacher-steps", 8, "--iterations", 5, "--batch-size", 16,
               "--out", out)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "8 -> 4 steps" in done.stdout and "4 -> 2 steps" in done.stdout
    run = aediff.load(out, device="cpu")
    assert (run.model.config.sampling.sampler, run.model.config.sampling.steps) == ("euler", 2)
    teacher_sampling = aediff.load(teacher, device="cpu").model.config.sampling
    assert teacher_sampling.guidance == 1.5 and run.model.config.sampling.guidance == 1.0  # guidance learnt
    record = json.loads((out / "config.json").read_text())["distillation"]
    assert record["teacher"] == str(teacher) and [r["steps"] for r in record["rounds"]] == [4, 2]
    assert run.summary.steps == 10
    images = run.model.sample(3, generator=torch.Generator().manual_seed(0))
    assert images.shape == (3, *run.model.image_shape) and torch.isfinite(images).all()
    sampled = cli("sample", out, "--samples", 4, "--out", tmp_path / "s.png")
    assert sampled.returncode == 0, sampled.stderr

    consistency = cli("distill", teacher, "--method", "consistency", "--steps", 1, "--teacher-steps", 6,
                      "--iterations", 3, "--batch-size", 16, "--out", tmp_path / "cd")  # fmt: skip
    assert consistency.returncode == 0, consistency.stderr
    assert "consistency 6 -> 1 steps" in consistency.stdout
    run = aediff.load(tmp_path / "cd", device="cpu")
    assert (run.model.config.sampling.sampler, run.model.config.sampling.steps) == ("consistency", 1)
    assert json.loads((tmp_path / "cd" / "config.json").read_text())["distillation"]["method"] == "consistency"

    for argv, words in [
        (["distill", teacher, "--steps", 4, "--teacher-steps", 6, "--out", tmp_path / "x"], "power of two"),
        (["distill", teacher, "--out", out], "already exists"),
    ]:
        refused = cli(*argv)
        lines = [line for line in refused.stderr.splitlines() if line.strip()]
        assert refused.returncode == 1 and len(lines) == 1 and words in lines[0], refused.stderr
        assert "Traceback" not in refused.stderr
