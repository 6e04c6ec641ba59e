"""Evaluation protocols on models whose answer is known."""

import torch
from torch import nn

from aediff.evaluation import denoising_metrics, dequantize, reconstruction_metrics, vae_likelihood
from aediff.models import build_model


class Identity(nn.Module):
    """A perfect reconstructor and a do-nothing denoiser."""

    def __init__(self):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(1))

    def reconstruct(self, x):
        return x

    def denoise(self, x, sigma=None, steps=1):
        return x.clamp(-1, 1)


def test_perfect_reconstruction_scores_the_ceiling(digits_test):
    result = reconstruction_metrics(Identity(), digits_test)
    assert result["mse"] == 0 and result["ssim"] > 0.999 and result["psnr"] == 100.0
    assert result["num_images"] == len(digits_test)


def test_denoising_metrics_compare_input_and_output(digits_test):
    result = denoising_metrics(Identity(), digits_test, "gaussian:0.3", seed=1)
    # The identity "denoiser" returns the clipped noisy image: output quality equals input quality.
    assert abs(result["psnr"] - result["psnr_noisy"]) < 1e-6
    again = denoising_metrics(Identity(), digits_test, "gaussian:0.3", seed=1)
    assert again == result  # seeded
    stronger = denoising_metrics(Identity(), digits_test, "gaussian:0.6", seed=1)
    assert stronger["psnr_noisy"] < result["psnr_noisy"] - 3


def test_dequantize_stays_within_each_pixel_bin():
    k = torch.arange(256.0)
    x = k / 127.5 - 1
    y = dequantize(x.repeat(100, 1), torch.Generator().manual_seed(0))
    bins = torch.floor((y + 1) * 128)
    assert torch.equal(bins, k.repeat(100, 1)) and y.min() >= -1 and y.max() < 1


def test_vae_likelihood_is_finite_and_iwae_is_tighter(digits_test):
    model = build_model("vae", {"image_size": 8, "channels": (8, 16), "bottleneck_dim": 4, "likelihood": "bernoulli"})
    result = vae_likelihood(model, digits_test, k=20, limit=64)
    assert result["num_images"] == 64
    assert 0 < result["nll_iwae_nats"] <= result["nll_elbo_nats"]
    # Bernoulli on 64 binary pixels: bits/dim is nats / (64 ln 2).
    assert abs(result["iwae_bits_per_dim"] - result["nll_iwae_nats"] / (64 * 0.6931471805599453)) < 1e-9
    gaussian = build_model("vae", {"image_size": 8, "channels": (8, 16), "bottleneck_dim": 4})
    result = vae_likelihood(gaussian, digits_test, k=5, limit=32)
    assert result["data"].startswith("8-bit") and result["iwae_bits_per_dim"] > 0
