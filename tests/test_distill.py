"""Progressive distillation: the nested grids, the student's target, and `aediff distill` end to end (the
student's few steps land nearer the teacher's many than the teacher's own few do)."""

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
from aediff.diffusion.samplers import SamplerOptions
from aediff.diffusion.schedules import karras_sigmas
from aediff.errors import ConfigError
from aediff.training.distill import RHO, DistillConfig, distill, euler_step, refine, student_target

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
    record = json.loads((out / "config.json").read_text())["distillation"]
    assert record["teacher"] == str(teacher) and [r["steps"] for r in record["rounds"]] == [4, 2]
    assert run.summary.steps == 10
    images = run.model.sample(3, generator=torch.Generator().manual_seed(0))
    assert images.shape == (3, *run.model.image_shape) and torch.isfinite(images).all()
    sampled = cli("sample", out, "--samples", 4, "--out", tmp_path / "s.png")
    assert sampled.returncode == 0, sampled.stderr

    for argv, words in [
        (["distill", teacher, "--steps", 4, "--teacher-steps", 6, "--out", tmp_path / "x"], "power of two"),
        (["distill", teacher, "--out", out], "already exists"),
    ]:
        refused = cli(*argv)
        lines = [line for line in refused.stderr.splitlines() if line.strip()]
        assert refused.returncode == 1 and len(lines) == 1 and words in lines[0], refused.stderr
        assert "Traceback" not in refused.stderr
