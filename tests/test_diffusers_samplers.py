"""--sampler diffusers:NAME: every diffusers scheduler aediff declares walks aediff's denoiser in process; where a
scheduler and an aediff sampler are the same method they draw the same images from the same noise; the
declarations (evaluations, stochastic, discrete only) are what the schedulers do; refusals say why."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import get_args

import pytest
import torch

pytest.importorskip("diffusers")

from aediff.diffusion.diffusers_schedulers import SCHEDULERS, UNFIT  # noqa: E402
from aediff.diffusion.samplers import DIFFUSERS_SAMPLER_NAMES, SamplerOptions  # noqa: E402
from aediff.errors import ConfigError  # noqa: E402
from aediff.models import Condition, build_model  # noqa: E402
from aediff.modes import DiffusersScheduler  # noqa: E402

TOLERANCE = 1e-4  # largest |diffusers - aediff| accepted, images in [-1, 1]
TINY = {"image_size": 8, "channels": (8, 16), "attention_resolutions": (4,), "embedding_dim": 16}
AEDIFF = str(Path(sys.executable).with_name("aediff"))
LATENT_RUN = Path(__file__).parent / "fixtures" / "v1-runs" / "latent-diffusion"


def model(schedule: str = "cosine", **changes):
    """An untrained tiny model: its denoiser is an arbitrary function of (x, sigma), enough to compare samplers."""
    torch.manual_seed(0)
    process = {"schedule": schedule} | ({"parameterization": "edm"} if schedule == "edm" else {})
    return build_model("diffusion", {**TINY, "process": process, **changes}).eval()


def draw(net, sampler: str, steps: int = 5, seed: int = 3, condition: Condition | None = None, n: int = 4):
    options = SamplerOptions(sampler=sampler, steps=steps)
    return net.sample(n, condition, options, generator=torch.Generator().manual_seed(seed))


SAME_METHOD = [  # (schedule, aediff's sampler, the diffusers scheduler that is the same method)
    ("cosine", "euler", "EulerDiscreteScheduler"),
    ("edm", "euler", "EulerDiscreteScheduler"),
    ("edm", "euler", "EDMEulerScheduler"),
    ("cosine", "heun", "HeunDiscreteScheduler"),
    ("edm", "heun", "HeunDiscreteScheduler"),
    ("cosine", "dpm++", "DPMSolverMultistepScheduler"),
    ("edm", "dpm++", "DPMSolverMultistepScheduler"),
    ("edm", "dpm++", "EDMDPMSolverMultistepScheduler"),
    ("cosine", "ddim", "DDIMScheduler"),
    ("linear", "ddim", "DDIMScheduler"),
]


@pytest.mark.parametrize("schedule,ours,theirs", SAME_METHOD, ids=[f"{s}-{o}-{t}" for s, o, t in SAME_METHOD])
def test_the_same_method_draws_the_same_images(schedule, ours, theirs):
    net = model(schedule)
    a, b = draw(net, ours), draw(net, f"diffusers:{theirs}")
    assert torch.isfinite(b).all() and b.shape == (4, 1, 8, 8)
    difference = (a - b).abs().max().item()
    print(f"{schedule} {ours} vs {theirs}: {difference:.3g}")
    assert difference < TOLERANCE
    other = draw(net, "heun" if ours != "heun" else "euler")
    assert (other - b).abs().max() > 100 * TOLERANCE  # the tolerance tells methods apart


@pytest.mark.parametrize("name", DIFFUSERS_SAMPLER_NAMES)
def test_every_scheduler_samples_with_its_declared_evaluations_and_noise(name):
    entry = SCHEDULERS[name]
    net = model("cosine", conditioning={"kind": "class", "num_classes": 10})
    calls = []
    net.denoiser.register_forward_hook(lambda module, inputs, output: calls.append(1))
    steps = 4
    condition = Condition(class_labels=torch.arange(2), guidance=2.0)
    images = draw(net, name, steps=steps, condition=condition, n=2)  # guidance: one batched call per evaluation
    assert images.shape == (2, 1, 8, 8) and torch.isfinite(images).all()
    assert len(calls) == entry.network_evaluations(steps) == net.sampler_plan(SamplerOptions(name, steps)).evaluations
    same = draw(net, name, steps, condition=condition, n=2)
    assert torch.equal(images, same)  # seeded
    other_noise = draw(net, name, steps, seed=4, condition=condition, n=2)
    plan = net.sampler_plan(SamplerOptions(sampler=name, steps=steps))
    # a stochastic scheduler's step draws from the generator: same starting noise, other step noise -> other images
    assert plan.stochastic == entry.stochastic
    if entry.stochastic:
        assert not torch.equal(_with_step_generator(net, name, steps, 1), _with_step_generator(net, name, steps, 2))
    else:
        assert torch.equal(_with_step_generator(net, name, steps, 1), _with_step_generator(net, name, steps, 2))
    assert not torch.equal(images, other_noise)


def _with_step_generator(net, name: str, steps: int, seed: int) -> torch.Tensor:
    """Sample from fixed starting noise with the step generator seeded ``seed``."""
    from aediff.diffusion.samplers import run_sampler

    plan = net.sampler_plan(SamplerOptions(sampler=name, steps=steps))
    sigmas = net.sampling_sigmas(plan)
    x = sigmas[0] * torch.randn((2, *net.space_shape), generator=torch.Generator().manual_seed(0))
    return run_sampler(plan, net.guided_denoiser(2), x, sigmas, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", [n for n in DIFFUSERS_SAMPLER_NAMES if not SCHEDULERS[n].discrete_only])
def test_continuous_schedulers_sample_an_edm_run(name):
    images = draw(model("edm"), name, steps=3, n=2)
    assert images.shape == (2, 1, 8, 8) and torch.isfinite(images).all()


def test_a_discrete_only_scheduler_is_refused_on_an_edm_run_before_any_work():
    net = model("edm")
    for name in [n for n in DIFFUSERS_SAMPLER_NAMES if SCHEDULERS[n].discrete_only]:
        with pytest.raises(ConfigError, match="discrete schedule's timesteps.*edm.*EulerDiscreteScheduler"):
            net.sampler_plan(SamplerOptions(sampler=name))
    net = model("cosine")
    net.sampler_plan(SamplerOptions(sampler="diffusers:DDIMScheduler"))  # the same scheduler on a discrete run


@pytest.mark.parametrize(
    "options,message",
    [
        (SamplerOptions(sampler="diffusers:DDIMScheduler", eta=0.5), "--eta applies to ddim, not diffusers:DDIM"),
        (SamplerOptions(sampler="diffusers:EulerDiscreteScheduler", s_churn=1.0), "--s-churn applies to euler"),
        (SamplerOptions(sampler="diffusers:NoSuchScheduler"), "unknown diffusers scheduler 'NoSuchScheduler'"),
        (SamplerOptions(sampler="diffusers:FlowMatchEulerDiscreteScheduler"), "not offered: flow matching"),
        (SamplerOptions(sampler="diffusers:DPMSolverSDEScheduler"), "not offered: needs torchsde"),
        (SamplerOptions(sampler="Euler"), r"choose one of ddpm.*diffusers:NAME"),
        (SamplerOptions(sampler="diffusers:EulerDiscreteScheduler", steps=0), "steps must be a whole number"),
    ],
)
def test_options_that_do_not_apply_are_refused(options, message):
    with pytest.raises(ConfigError, match=message):
        model().sampler_plan(options)


def test_a_plan_without_a_model_is_refused():
    with pytest.raises(ConfigError, match="built on a model's noise schedule"):
        SamplerOptions(sampler="diffusers:EulerDiscreteScheduler").resolve("euler", 4)


def test_latent_diffusion_samples_with_a_diffusers_scheduler():
    import aediff

    net = aediff.load(LATENT_RUN, device="cpu").model
    ours = draw(net, "dpm++", steps=4, n=2)
    theirs = draw(net, "diffusers:DPMSolverMultistepScheduler", steps=4, n=2)
    assert theirs.shape == ours.shape and (ours - theirs).abs().max() < TOLERANCE
    assert torch.isfinite(draw(net, "diffusers:UniPCMultistepScheduler", steps=4, n=2)).all()


def test_every_diffusers_scheduler_is_offered_or_refused_with_a_reason():
    import diffusers

    classes = {name for name in dir(diffusers) if name.endswith("Scheduler") and not name.startswith("Flax")}
    offered = {name.removeprefix("diffusers:") for name in SCHEDULERS}
    assert offered.isdisjoint(UNFIT)
    assert classes <= offered | set(UNFIT), sorted(classes - offered - set(UNFIT))
    assert offered == set(get_args(DiffusersScheduler))  # the names the CLI's help lists


@pytest.mark.slow  # trains a tiny run and starts the command line four times
def test_the_cli_samples_with_a_diffusers_scheduler_and_refuses_in_words(tmp_path):
    from conftest import TINY_DIFFUSION, train_tiny

    train_tiny(tmp_path, [("edm", "diffusion", {}, [*TINY_DIFFUSION, "schedule=edm", "parameterization=edm"])], 2)
    run = tmp_path / "edm"

    def aediff(*args):
        return subprocess.run([AEDIFF, *args], capture_output=True, text=True, timeout=300)

    ok = aediff("sample", str(run), "--sampler", "diffusers:UniPCMultistepScheduler", "--steps", "3", "--samples",
                "4", "--out", str(tmp_path / "grid.png"))  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "grid.png").is_file()
    refused = aediff("sample", str(run), "--sampler", "diffusers:DDIMScheduler", "--out", str(tmp_path / "no.png"))
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert "discrete schedule's timesteps" in refused.stderr + refused.stdout
    assert not (tmp_path / "no.png").exists()
    unfit = aediff("sample", str(run), "--sampler", "diffusers:DPMSolverSDEScheduler")
    assert unfit.returncode == 2 and "needs torchsde" in unfit.stderr and "Traceback" not in unfit.stderr
    helped = aediff("sample", "--help")
    assert "diffusers:NAME" in helped.stdout and "UniPCMultistepScheduler" in helped.stdout


def test_ddnm_restores_on_a_diffusers_scheduler_and_keeps_the_known_pixels():
    from aediff.diffusion.degradations import box_mask
    from aediff.diffusion.restoration import RestoreOptions

    net = model("cosine")
    truth = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    mask = box_mask(2, (8, 8), 4, torch.Generator().manual_seed(2))
    options = RestoreOptions(method="ddnm", sampler=SamplerOptions("diffusers:UniPCMultistepScheduler", 4))
    restored = net.restore(mask.forward(truth), mask, options, generator=torch.Generator().manual_seed(1))
    known = mask.keep.expand_as(truth)
    assert torch.isfinite(restored).all() and torch.equal(restored[known], truth[known])
    assert not torch.equal(restored[~known], truth[~known])
