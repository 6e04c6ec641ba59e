"""Diffusion: schedules, parameterizations, samplers (checked against diffusers), the model and its loss."""

import json
import math

import pytest
import torch

from aediff.diffusion import (
    SAMPLERS,
    Denoiser,
    NoiseSchedule,
    SamplerOptions,
    ddim_step,
    ddpm_step,
    discrete_timesteps,
    karras_sigmas,
    preconditioning,
    run_sampler,
    x0_loss_weight,
)
from aediff.diffusion.losses import DiffusionLoss, loss_weight
from aediff.errors import ConfigError
from aediff.models import UNet, UNetConfig, build_model
from aediff.modes import LossWeighting

TINY_UNET = {"image_size": 8, "channels": (8, 16), "attention_resolutions": (4,), "embedding_dim": 16}


# --- schedules -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind,diffusers_name", [("linear", "linear"), ("cosine", "squaredcos_cap_v2")])
def test_discrete_schedules_match_diffusers(kind, diffusers_name):
    from diffusers import DDPMScheduler

    ours = NoiseSchedule(kind).alphas_cumprod
    theirs = DDPMScheduler(beta_schedule=diffusers_name).alphas_cumprod.double()
    assert torch.allclose(ours, theirs, atol=1e-6)


@pytest.mark.parametrize("kind", ["linear", "cosine", "sigmoid"])
def test_discrete_sigmas_increase_from_nearly_clean_to_nearly_pure_noise(kind):
    sigmas = NoiseSchedule(kind).sigmas
    assert torch.all(sigmas[1:] > sigmas[:-1])
    assert sigmas[0] < 0.1 and sigmas[-1] > 50


def test_timestep_lookup_inverts_the_schedule():
    schedule = NoiseSchedule("linear")
    t = torch.tensor([0, 10, 500, 999])
    assert torch.equal(schedule.timestep_of(schedule.sigmas[t]), t)


def test_training_sigmas_follow_each_schedule():
    edm = NoiseSchedule("edm").sample_training_sigmas(20000, generator=torch.Generator().manual_seed(0))
    assert abs(edm.log().mean().item() + 1.2) < 0.05 and abs(edm.log().std().item() - 1.2) < 0.05
    discrete = NoiseSchedule("linear")
    drawn = discrete.sample_training_sigmas(1000, generator=torch.Generator().manual_seed(0))
    assert torch.isin(drawn.double(), discrete.sigmas.float().double()).all()


def test_karras_sigmas_and_trailing_timesteps():
    sigmas = karras_sigmas(10, 0.002, 80.0)
    assert len(sigmas) == 11 and sigmas[-1] == 0
    assert math.isclose(sigmas[0], 80.0, rel_tol=1e-9) and math.isclose(sigmas[-2], 0.002, rel_tol=1e-9)
    assert torch.all(sigmas[1:] < sigmas[:-1])
    t = discrete_timesteps(1000, 10)
    assert t[0] == 999 and t[-1] == 99 and len(t) == 10


# --- parameterizations ---------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["eps", "x0", "v", "edm"])
def test_a_perfect_network_gives_a_perfect_denoiser(kind):
    """Feed each wrapper the exact target its network should predict: D must return x0 exactly."""
    x0, eps = torch.randn(3, 1, 4, 4) * 0.5, torch.randn(3, 1, 4, 4)
    sigma = torch.tensor([0.01, 1.0, 50.0])
    s = sigma[:, None, None, None]
    alpha = 1 / (1 + s**2).sqrt()
    c_skip, c_out, _ = preconditioning(kind, sigma)
    x = x0 + s * eps
    target = {"eps": eps, "x0": x0, "v": alpha * eps - s * alpha * x0, "edm": (x0 - c_skip * x) / c_out}[kind]
    denoiser = Denoiser(lambda x_in, c_noise: target, kind)
    assert torch.allclose(denoiser(x, sigma), x0, atol=1e-4)
    weight = x0_loss_weight(kind, sigma)
    assert torch.allclose(
        weight * ((denoiser(x, sigma) + 0.1) - x0).pow(2).mean((1, 2, 3)), (0.1 / c_out.reshape(-1)) ** 2, rtol=1e-4
    )


def test_unknown_parameterization_is_refused():
    with pytest.raises(ValueError, match="unknown parameterization"):
        Denoiser(torch.nn.Identity(), "score")


# --- the network ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("skips", [True, False])
def test_unet_is_a_function_of_x_and_noise_level(skips):
    net = UNet(UNetConfig(**TINY_UNET, skip_connections=skips))
    x = torch.randn(2, 1, 8, 8)
    out = net(x, torch.tensor([0.0, 100.0]))
    assert out.shape == x.shape
    assert not torch.allclose(out[0], net(x, torch.tensor([100.0, 100.0]))[0])  # the level matters
    assert (net.decoder.use_skips) is skips


def test_unet_without_skips_is_smaller_but_otherwise_the_same_blocks():
    with_skips = UNet(UNetConfig(**TINY_UNET))
    without = UNet(UNetConfig(**TINY_UNET, skip_connections=False))
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(without) < count(with_skips)
    assert type(with_skips.encoder) is type(without.encoder)


# --- steps checked against diffusers ---------------------------------------------------------------------
@pytest.mark.parametrize("beta_schedule", ["linear", "squaredcos_cap_v2"])
@pytest.mark.parametrize("num_inference_steps", [1000, 50])
def test_ddpm_step_matches_diffusers(beta_schedule, num_inference_steps):
    from diffusers import DDPMScheduler

    scheduler = DDPMScheduler(beta_schedule=beta_schedule, clip_sample=False)
    scheduler.set_timesteps(num_inference_steps)
    abar = scheduler.alphas_cumprod
    for t in scheduler.timesteps[:: max(1, len(scheduler.timesteps) // 7)].tolist() + [0]:
        x_t, eps = torch.randn(2, 1, 6, 6), torch.randn(2, 1, 6, 6)
        prev = scheduler.previous_timestep(t)
        prev = int(prev)
        theirs = scheduler.step(eps, t, x_t, generator=torch.Generator().manual_seed(t)).prev_sample
        noise = torch.randn(x_t.shape, generator=torch.Generator().manual_seed(t))
        ours = ddpm_step(x_t, eps, abar[t], abar[prev] if prev >= 0 else torch.tensor(1.0), noise=noise)
        assert torch.allclose(ours, theirs, atol=1e-5), (t, (ours - theirs).abs().max())


@pytest.mark.parametrize("beta_schedule", ["linear", "squaredcos_cap_v2"])
@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
def test_ddim_step_matches_diffusers(beta_schedule, eta):
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler(beta_schedule=beta_schedule, clip_sample=False, set_alpha_to_one=True)
    scheduler.set_timesteps(20)
    abar = scheduler.alphas_cumprod
    for t in scheduler.timesteps.tolist():
        x_t, eps = torch.randn(2, 1, 6, 6), torch.randn(2, 1, 6, 6)
        noise = torch.randn(x_t.shape)
        theirs = scheduler.step(eps, t, x_t, eta=eta, variance_noise=noise).prev_sample
        prev = t - 1000 // 20
        ours = ddim_step(x_t, eps, abar[t], abar[prev] if prev >= 0 else torch.tensor(1.0), eta=eta, noise=noise)
        assert torch.allclose(ours, theirs, atol=1e-5), (t, (ours - theirs).abs().max())


# --- samplers --------------------------------------------------------------------------------------------
def gaussian_data_denoiser(mean: float, std: float):
    """The exact denoiser for data x0 ~ N(mean, std^2) per pixel: E[x0 | x0 + sigma eps]."""

    def denoise(x, sigma):
        sigma = torch.as_tensor(sigma, dtype=x.dtype)
        return mean + std**2 / (std**2 + sigma**2) * (x - mean)

    return denoise


@pytest.mark.parametrize("name", [name for name in SAMPLERS if name != "consistency"])
def test_every_sampler_recovers_a_known_distribution(name):
    """With the exact denoiser of Gaussian data, every sampler must produce that Gaussian (but consistency
    sampling, which wants a consistency function: below)."""
    mean, std = 0.3, 0.2
    steps = {"ddpm": 200, "ddim": 100, "euler": 100, "heun": 50, "dpm++": 50}[name]
    sigmas = karras_sigmas(steps, 0.002, 80.0).float()
    g = torch.Generator().manual_seed(0)
    x = sigmas[0] * torch.randn((4000, 1, 2, 2), generator=g)
    seen = []
    plan = SamplerOptions(sampler=name).resolve(name, steps)
    out = run_sampler(plan, gaussian_data_denoiser(mean, std), x, sigmas, callback=seen.append, generator=g)
    assert abs(out.mean().item() - mean) < 0.01
    assert abs(out.std().item() - std) < 0.01 * (5 if name == "ddpm" else 1)
    assert len(seen) >= 1 and {"i", "sigma", "x", "denoised"} <= set(seen[0])


@pytest.mark.parametrize("steps", [1, 3])
def test_consistency_sampling_with_the_exact_consistency_function_recovers_a_known_distribution(steps):
    """Gaussian data N(m, s^2): the probability-flow ODE maps x at sigma to m + s (x - m) / sqrt(s^2 + sigma^2),
    the consistency function. Multistep consistency sampling with it draws N(m, s^2) at any step count; with the
    data's mean-square denoiser instead (a diffusion model's D) the spread collapses: the control."""
    mean, std = 0.3, 0.2
    sigmas = torch.tensor([80.0, 2.0, 0.3, 0.0])[[0, *range(4 - steps, 4)]] if steps > 1 else torch.tensor([80.0, 0.0])
    x = sigmas[0] * torch.randn((8000, 1, 1, 1), generator=torch.Generator().manual_seed(0))

    def consistency(x, sigma):
        return mean + std * (x - mean) / (std**2 + sigma**2) ** 0.5

    plan = SamplerOptions(sampler="consistency").resolve("consistency", steps)
    out = run_sampler(plan, consistency, x, sigmas, generator=torch.Generator().manual_seed(1))
    assert abs(out.mean().item() - mean) < 0.01 and abs(out.std().item() - std) < 0.01
    denoiser = gaussian_data_denoiser(mean, std)
    collapsed = run_sampler(plan, denoiser, x, sigmas, generator=torch.Generator().manual_seed(1))
    assert collapsed.std().item() < 0.5 * std


def test_second_order_samplers_beat_euler_at_few_steps():
    mean, std = 0.3, 0.2
    sigmas = karras_sigmas(12, 0.002, 80.0).float()
    x = sigmas[0] * torch.randn((4000, 1, 1, 1), generator=torch.Generator().manual_seed(0))
    error = {}
    for name in ("euler", "dpm++", "heun"):
        out = run_sampler(
            SamplerOptions(sampler=name).resolve(name, 12), gaussian_data_denoiser(mean, std), x.clone(), sigmas
        )
        error[name] = abs(out.std().item() - std)
    assert error["dpm++"] < error["euler"] and error["heun"] < error["euler"]


# --- the model --------------------------------------------------------------------------------------------
def tiny_diffusion(**extra):
    return build_model("diffusion", {**TINY_UNET, "steps": 4, **extra})


@pytest.mark.parametrize(
    "schedule,parameterization,weighting",
    [
        ("edm", "edm", "uniform"),
        ("linear", "eps", "uniform"),
        ("cosine", "v", "min_snr"),
        ("sigmoid", "x0", "uniform"),
    ],
)
def test_diffusion_loss_decreases(schedule, parameterization, weighting, losses_while_fitting):
    model = tiny_diffusion(schedule=schedule, parameterization=parameterization, loss_weighting=weighting)
    losses = losses_while_fitting(model, torch.rand(16, 1, 8, 8) * 2 - 1, steps=40, noise_draws=4)
    assert sum(losses[-4:]) < sum(losses[:4])


def test_loss_weightings_are_typed_values_spelled_as_configs_spell_them():
    from aediff.config import config_from_dict, config_to_dict
    from aediff.models.diffusion import DiffusionConfig

    config = config_from_dict(DiffusionConfig, {"process": {"loss_weighting": "min_snr"}})
    assert config.process.loss_weighting is LossWeighting.MIN_SNR
    assert json.loads(json.dumps(config_to_dict(config)))["process"]["loss_weighting"] == "min_snr"
    assert tiny_diffusion(loss_weighting="min_snr").loss.weighting is LossWeighting.MIN_SNR
    with pytest.raises(ConfigError, match="process.loss_weighting must be one of 'uniform', 'min_snr', got 'snr'"):
        config_from_dict(DiffusionConfig, {"process": {"loss_weighting": "snr"}})


@pytest.mark.parametrize("parameterization", ["eps", "v", "edm"])
def test_each_weighting_weighs_the_x0_error_as_declared(parameterization):
    sigma = torch.tensor([0.01, 0.5, 3.0, 40.0])
    denoiser = Denoiser(torch.nn.Identity(), parameterization)
    uniform = loss_weight(LossWeighting.UNIFORM, sigma, denoiser)
    assert torch.allclose(uniform, x0_loss_weight(parameterization, sigma))  # 1 / c_out^2: MSE in F's target
    min_snr = loss_weight(LossWeighting.MIN_SNR, sigma, denoiser, min_snr_gamma=5.0)
    assert torch.allclose(min_snr, torch.tensor([5.0, 4.0, 1 / 9, 1 / 1600]))  # min(1 / sigma^2, gamma)


def test_the_loss_is_the_weighted_x0_error_at_the_drawn_sigmas():
    """A denoiser that returns x0 + 0.1 has error 0.01 everywhere: the loss is the mean weight times 0.01."""
    x0 = torch.zeros(6, 1, 4, 4)
    denoiser = Denoiser(torch.nn.Identity(), "x0")
    denoiser.forward = lambda x, sigma, **condition: x0 + 0.1  # type: ignore[method-assign]
    loss = DiffusionLoss(NoiseSchedule("edm"), LossWeighting.MIN_SNR, min_snr_gamma=2.0)
    value, sigma = loss(denoiser, x0)
    assert value.item() == pytest.approx(0.01 * (1 / sigma**2).clamp(max=2.0).mean().item(), rel=1e-5)


@pytest.mark.parametrize("sampler", list(SAMPLERS))
@pytest.mark.parametrize("schedule", ["edm", "linear"])
def test_sampling_is_batched_reproducible_and_in_range(sampler, schedule):
    model = tiny_diffusion(schedule=schedule).eval()
    options = SamplerOptions(sampler=sampler, steps=3)
    a = model.sample(3, options=options, generator=torch.Generator().manual_seed(1))
    b = model.sample(3, options=options, generator=torch.Generator().manual_seed(1))
    assert a.shape == (3, 1, 8, 8) and torch.equal(a, b) and a.abs().max() <= 1


def test_karras_spacing_starts_at_sigma_max_not_at_a_huge_schedule_end():
    model = build_model("diffusion", {**TINY_UNET, "schedule": "cosine", "parameterization": "v"})
    assert model.schedule.sigma_range[1] > 1000  # the cosine schedule's last level is ~2e4
    for sampler in ("euler", "heun", "dpm++"):
        sigmas = model.sampling_sigmas(model.sampler_plan(SamplerOptions(sampler=sampler, steps=10)))
        assert sigmas[0].item() == pytest.approx(80.0) and sigmas[-1] == 0
    # DDIM walks the schedule's own levels, from its last
    ddim = model.sampling_sigmas(model.sampler_plan(SamplerOptions(sampler="ddim", steps=10)))
    assert ddim[0].item() == pytest.approx(model.schedule.sigma_range[1], rel=1e-4)


def test_trajectory_shows_each_step():
    model = tiny_diffusion().eval()
    steps = []
    model.sample(
        2,
        options=SamplerOptions(sampler="euler", steps=5),
        generator=torch.Generator().manual_seed(0),
        callback=steps.append,
    )
    assert [s["i"] for s in steps] == list(range(5))
    assert steps[0]["sigma"] > steps[-1]["sigma"]
    assert steps[0]["denoised"].shape == (2, 1, 8, 8)


def test_denoise_needs_a_level_and_uses_one_or_many_steps():
    model = tiny_diffusion().eval()
    x = torch.rand(2, 1, 8, 8)
    with pytest.raises(ConfigError, match="noise level"):
        model.denoise(x)
    one = model.denoise(x, sigma=0.5)
    assert torch.allclose(one, model.predict_x0(x, 0.5))
    several = model.denoise(x, sigma=0.5, steps=4)
    assert several.shape == x.shape and not torch.allclose(one, several)
