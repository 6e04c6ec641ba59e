"""DDNM and RePaint as plain functions of a denoiser (aediff.diffusion.restoration): RePaint's walk is
diffusers' RePaintScheduler's, each method keeps the known pixels, DDNM satisfies A x = y, and with an
oracle denoiser both give back the original image while a blind one gives the trivial fill."""

from __future__ import annotations

import pytest
import torch

from aediff.diffusion.degradations import Downsample, box_mask, random_mask
from aediff.diffusion.restoration import (
    projected_denoiser,
    repaint_evaluations,
    repaint_schedule,
    sample_repaint,
)
from aediff.diffusion.samplers import SamplerOptions, run_sampler
from aediff.diffusion.schedules import karras_sigmas
from aediff.errors import ConfigError


@pytest.mark.parametrize("steps,jump_length,jump_n_sample", [(250, 10, 10), (50, 5, 3), (20, 10, 1), (12, 5, 2)])
def test_repaints_walk_is_diffusers_repaint_schedulers(steps, jump_length, jump_n_sample):
    diffusers = pytest.importorskip("diffusers")
    scheduler = diffusers.RePaintScheduler(num_train_timesteps=1000)
    scheduler.set_timesteps(steps, jump_length=jump_length, jump_n_sample=jump_n_sample)
    theirs = (scheduler.timesteps // (1000 // steps)).tolist()
    assert repaint_schedule(steps, jump_length, jump_n_sample) == theirs


def test_repaints_network_evaluations_count_the_steps_down():
    assert repaint_evaluations(20, 10, 1) == 20  # no resampling: one evaluation per level
    assert repaint_evaluations(50, 5, 3) == 50 + 9 * 2 * 5  # 9 jump points, 2 extra passes of 5 levels each
    with pytest.raises(ConfigError, match="jump length and resamplings >= 1"):
        repaint_schedule(10, 0, 1)


def images(n: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def sigmas(steps: int = 12) -> torch.Tensor:
    return karras_sigmas(steps, 0.002, 80.0).float()


def oracle(truth: torch.Tensor):
    return lambda x, sigma: truth.clone()


def blind(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(x)  # knows nothing: predicts the mean, mid-grey


@pytest.mark.parametrize("sampler", ["euler", "heun", "dpm++"])
def test_ddnm_with_an_oracle_gives_back_the_image_and_with_a_blind_denoiser_the_mean_fill(sampler):
    truth = images()
    plan = SamplerOptions(sampler=sampler, steps=12).resolve(sampler, 12)
    for operator in (box_mask(3, (8, 8), 4, torch.Generator().manual_seed(1)), Downsample(2)):
        y = operator.forward(truth)
        start = sigmas()[0] * torch.randn(truth.shape, generator=torch.Generator().manual_seed(2))
        restored = operator.project(
            run_sampler(plan, projected_denoiser(oracle(truth), operator, y), start, sigmas()), y
        )
        assert torch.allclose(restored, truth, atol=1e-5)
        filled = operator.project(run_sampler(plan, projected_denoiser(blind, operator, y), start, sigmas()), y)
        assert torch.allclose(operator.forward(filled), y, atol=1e-6)  # A x_hat = y to float precision
        assert torch.allclose(filled, operator.pseudo_inverse(y), atol=1e-5)  # the trivial fill: A^+ y


def test_repaint_with_an_oracle_gives_back_the_image_and_always_keeps_the_known_pixels():
    truth = images()
    mask = random_mask(3, (8, 8), 0.5, torch.Generator().manual_seed(3))
    y = mask.forward(truth)
    restored = sample_repaint(oracle(truth), mask, y, sigmas(), 3, 2, torch.Generator().manual_seed(4))
    assert torch.allclose(restored, truth, atol=1e-5)
    guessed = sample_repaint(blind, mask, y, sigmas(), 3, 2, torch.Generator().manual_seed(4))
    keep = mask.keep.expand_as(truth)
    assert torch.equal(guessed[keep], truth[keep])


def test_repaint_is_seeded_and_reports_each_step_down():
    truth, frames = images(), []
    mask = box_mask(3, (8, 8), 4, torch.Generator().manual_seed(5))
    y = mask.forward(truth)
    noisy = lambda x, sigma: x / (1 + sigma[:, None, None, None] ** 2)  # noqa: E731 - a smooth stand-in
    first = sample_repaint(noisy, mask, y, sigmas(10), 5, 2, torch.Generator().manual_seed(6), frames.append)
    again = sample_repaint(noisy, mask, y, sigmas(10), 5, 2, torch.Generator().manual_seed(6))
    assert torch.equal(first, again)
    assert len(frames) == repaint_evaluations(10, 5, 2)
    assert frames[0]["sigma"] == pytest.approx(80.0)
