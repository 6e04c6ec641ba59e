"""Sampler declarations (SamplerSpec, SamplerOptions -> SamplerPlan, run_sampler), the trajectory convention, churn."""

import inspect
import math
import typing

import pytest
import torch

from aediff.diffusion import (
    SAMPLER_NAMES,
    SAMPLERS,
    SamplerName,
    SamplerOptions,
    SamplerPlan,
    SamplerSpec,
    karras_sigmas,
    run_sampler,
    sample_ddim,
    sample_ddpm,
    sample_dpmpp_2m,
    sample_euler,
    sample_heun,
)
from aediff.diffusion.samplers import _OPTION_RANGES
from aediff.errors import ConfigError

DATA_STD = 0.5


def gaussian_denoiser(x: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
    """The exact denoiser of data x0 ~ N(0, s^2 I): E[x0 | x0 + sigma eps] = x s^2 / (s^2 + sigma^2)."""
    sigma = torch.as_tensor(sigma, dtype=x.dtype)
    return x * DATA_STD**2 / (DATA_STD**2 + sigma**2)


class RecordingDenoiser:
    """The Gaussian denoiser, remembering every (x, sigma) it is called with."""

    def __init__(self):
        self.calls: list[tuple[torch.Tensor, float]] = []

    def __call__(self, x, sigma):
        self.calls.append((x, float(sigma)))
        return gaussian_denoiser(x, sigma)


def start(steps: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    sigmas = karras_sigmas(steps, 0.002, 80.0).float()
    return sigmas[0] * torch.randn((3, 1, 4, 4), generator=torch.Generator().manual_seed(seed)), sigmas


def run(name: str, seed: int, **options) -> torch.Tensor:
    x, sigmas = start()
    resolved = SamplerOptions(sampler=name, **options).resolve(name, len(sigmas) - 1)
    return run_sampler(resolved, gaussian_denoiser, x, sigmas, generator=torch.Generator().manual_seed(seed))


# --- the registry ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name,function,options,evaluations",
    [
        ("ddpm", sample_ddpm, (), 7),
        ("ddim", sample_ddim, ("eta",), 7),
        ("euler", sample_euler, ("s_churn",), 7),
        ("heun", sample_heun, ("s_churn",), 13),
        ("dpm++", sample_dpmpp_2m, (), 7),
    ],
)
def test_every_sampler_is_declared_with_its_function_options_and_evaluations(name, function, options, evaluations):
    spec = SAMPLERS[name]
    assert isinstance(spec, SamplerSpec) and spec.name == name and spec.function is function
    assert spec.options == options and spec.evaluations(7) == evaluations
    assert spec.discrete_timesteps == (name in ("ddpm", "ddim"))
    keywords = inspect.signature(function).parameters
    assert all(
        keywords[option].kind is inspect.Parameter.KEYWORD_ONLY
        or keywords[option].default is not inspect.Parameter.empty
        for option in options
    )


def test_sampler_names_are_the_registry_and_the_literal():
    assert SAMPLER_NAMES == tuple(SAMPLERS) == typing.get_args(SamplerName)


def test_every_option_a_sampler_takes_is_a_checked_field_of_sampler_options():
    fields = set(vars(SamplerOptions())) - {"sampler", "steps"}
    assert {option for spec in SAMPLERS.values() for option in spec.options} == fields == set(_OPTION_RANGES)


def test_run_sampler_runs_the_planned_function_with_its_options():
    x, sigmas = start()
    plan = SamplerOptions(sampler="heun").resolve("dpm++", len(sigmas) - 1)
    assert torch.equal(run_sampler(plan, gaussian_denoiser, x, sigmas), sample_heun(gaussian_denoiser, x, sigmas))
    g = torch.Generator().manual_seed(3)
    expected = sample_euler(gaussian_denoiser, x, sigmas, generator=g, s_churn=2.0)
    plan = SamplerOptions(sampler="euler", s_churn=2.0).resolve("dpm++", len(sigmas) - 1)
    got = run_sampler(plan, gaussian_denoiser, x, sigmas, generator=torch.Generator().manual_seed(3))
    assert torch.equal(got, expected)


@pytest.mark.parametrize(
    "name,options,stochastic",
    [
        ("ddpm", {}, True),
        ("ddim", {}, False),
        ("ddim", {"eta": 0.0}, False),
        ("ddim", {"eta": 0.3}, True),
        ("euler", {}, False),
        ("euler", {"s_churn": 1.0}, True),
        ("heun", {"s_churn": 0.0}, False),
        ("dpm++", {}, False),
    ],
)
def test_stochastic_follows_the_options(name, options, stochastic):
    assert SamplerOptions(sampler=name, **options).resolve("dpm++", 5).stochastic is stochastic


# --- options -----------------------------------------------------------------------------------------------
def test_an_option_the_sampler_does_not_take_names_who_takes_it():
    with pytest.raises(ConfigError, match="--eta applies to ddim, not dpm\\+\\+"):
        SamplerOptions(sampler="dpm++", eta=0.5).resolve("dpm++", 20)
    with pytest.raises(ConfigError, match="--s-churn applies to euler and heun, not ddim"):
        SamplerOptions(sampler="ddim", s_churn=1.0).resolve("dpm++", 20)
    with pytest.raises(ConfigError, match="not dpm\\+\\+"):  # the default sampler is checked as well
        SamplerOptions(eta=0.5).resolve("dpm++", 20)


def test_resolve_keeps_the_options_the_sampler_takes():
    plan = SamplerOptions(sampler="ddim", eta=0.5).resolve("dpm++", 20)
    assert isinstance(plan, SamplerPlan) and plan.name == "ddim" and plan.steps == 20 and plan.spec is SAMPLERS["ddim"]
    assert plan.kwargs == {"eta": 0.5} and plan.evaluations == 20
    assert SamplerOptions(sampler="heun", steps=4).resolve("dpm++", 20).kwargs == {}


def test_resolve_fills_the_defaults():
    plan = SamplerOptions().resolve("euler", 7)
    assert plan.name == "euler" and plan.steps == 7
    assert plan.options == SamplerOptions(sampler="euler", steps=7)
    heun = SamplerOptions(sampler="heun", steps=3)
    assert heun.resolve("euler", 7).options == heun
    chosen = SamplerOptions(sampler="ddim", eta=0.25)
    assert chosen.resolve("dpm++", 5).options.resolve("euler", 9) == chosen.resolve("dpm++", 5)  # a fixed point


@pytest.mark.parametrize(
    "options,message",
    [
        ({"sampler": "plms"}, "unknown sampler 'plms'; choose one of ddpm, ddim, euler, heun, dpm\\+\\+"),
        ({"steps": 0}, "steps must be"),
        ({"steps": 2.5}, "steps must be"),
        ({"sampler": "ddim", "eta": -1.0}, "--eta must be between 0"),
        ({"sampler": "ddim", "eta": 1.5}, "--eta must"),
        ({"sampler": "ddim", "eta": float("nan")}, "--eta must"),
        ({"sampler": "euler", "s_churn": -0.1}, "--s-churn must"),
    ],
)
def test_resolve_rejects_what_cannot_run(options, message):
    with pytest.raises(ConfigError, match=message):
        SamplerOptions(**options).resolve("dpm++", 20)


# --- one trajectory convention -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name,options",
    [(name, {}) for name in SAMPLERS]
    + [("ddim", {"eta": 1.0}), ("euler", {"s_churn": 10.0}), ("heun", {"s_churn": 10.0})],
)
def test_each_frame_is_the_state_the_denoiser_first_sees_at_that_step(name, options):
    x, sigmas = start()
    denoiser, frames = RecordingDenoiser(), []
    resolved = SamplerOptions(sampler=name, **options).resolve(name, len(sigmas) - 1)
    run_sampler(resolved, denoiser, x, sigmas, callback=frames.append, generator=torch.Generator().manual_seed(1))
    assert [frame["i"] for frame in frames] == list(range(len(sigmas) - 1))
    # Heun evaluates twice per step but the last; the first call of step i is the one after the previous frame's.
    per_step = 2 if name == "heun" else 1
    first_calls = [denoiser.calls[per_step * i] for i in range(len(sigmas) - 1)]
    for frame, (called_x, called_sigma) in zip(frames, first_calls, strict=True):
        assert torch.equal(frame["x"], called_x) and frame["sigma"] == called_sigma
        assert torch.equal(frame["denoised"], gaussian_denoiser(called_x, called_sigma))
    if "s_churn" in options:  # churn raises x's level to sigma_hat before the first call, and the frame says so
        assert all(frame["sigma"] > sigma for frame, sigma in zip(frames, sigmas[:-1].tolist(), strict=True))
    else:
        assert [frame["sigma"] for frame in frames] == sigmas[:-1].tolist() and torch.equal(frames[0]["x"], x)


# --- determinism and churn -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name,options", [("ddim", {"eta": 0.0}), ("euler", {"s_churn": 0.0}), ("heun", {"s_churn": 0.0}), ("dpm++", {})]
)
def test_deterministic_samplers_ignore_the_generator(name, options):
    assert torch.equal(run(name, 1, **options), run(name, 2, **options))


@pytest.mark.parametrize(
    "name,options", [("ddpm", {}), ("ddim", {"eta": 1.0}), ("euler", {"s_churn": 10.0}), ("heun", {"s_churn": 10.0})]
)
def test_stochastic_samplers_follow_the_generator(name, options):
    assert torch.equal(run(name, 1, **options), run(name, 1, **options))
    assert not torch.allclose(run(name, 1, **options), run(name, 2, **options))


def test_no_churn_is_the_deterministic_euler_bit_for_bit():
    x, sigmas = start()
    expected = x
    for i in range(len(sigmas) - 1):  # the probability-flow Euler step, as before churn existed
        residual = expected - gaussian_denoiser(expected, sigmas[i])  # same operation order as before: bit-exact
        expected = expected + (sigmas[i + 1] - sigmas[i]) * residual / sigmas[i]
    assert torch.equal(run("euler", 1, s_churn=0.0), expected) and torch.equal(run("euler", 1), expected)


def test_churn_follows_karras_algorithm_2():
    """gamma = min(s_churn / n, sqrt(2) - 1) at every step: any large churn is the same capped churn, and for
    Gaussian data each churned Euler step is linear in x, so the output's variance is known exactly:
    v <- v + sigma_hat^2 - sigma_i^2 (fresh noise), then v <- a^2 v with a = 1 + (sigma_next - sigma_hat) sigma_hat
    / (s^2 + sigma_hat^2) (the Euler step with D(x, sigma) = x s^2 / (s^2 + sigma^2))."""
    assert torch.equal(run("euler", 3, s_churn=1e3), run("euler", 3, s_churn=1e6))
    steps, s_churn = 10, 2.0
    sigmas = karras_sigmas(steps, 0.002, 80.0).float()
    gamma = min(s_churn / steps, math.sqrt(2) - 1)
    variance = sigmas[0].item() ** 2
    for sigma, sigma_next in zip(sigmas[:-1].tolist(), sigmas[1:].tolist(), strict=True):
        sigma_hat = sigma * (1 + gamma)
        gain = 1 + (sigma_next - sigma_hat) * sigma_hat / (DATA_STD**2 + sigma_hat**2)
        variance = gain**2 * (variance + sigma_hat**2 - sigma**2)
    g = torch.Generator().manual_seed(0)
    x = sigmas[0] * torch.randn(20000, generator=g)
    out = sample_euler(gaussian_denoiser, x, sigmas, generator=g, s_churn=s_churn)
    assert out.std().item() == pytest.approx(math.sqrt(variance), rel=0.03)
    deterministic = sample_euler(gaussian_denoiser, x, sigmas)
    assert abs(deterministic.std().item() - out.std().item()) > 0.01  # the churn made a difference
