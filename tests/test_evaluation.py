"""Evaluation protocols on models whose answer is known."""

import json
import math

import numpy as np
import torch
from torch import nn

from aediff.evaluation import (
    ModelEvaluation,
    denoising_metrics,
    dequantize,
    evaluate_model,
    gaussian_blur,
    judges_for,
    reconstruction_fid,
    reconstruction_metrics,
    vae_likelihood,
)
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


def _judge_classifier():
    """An untrained classifier on 8x8 digits (seeded by conftest): its two judges are fixed feature spaces."""
    return build_model("classifier", {"image_size": 8, "channels": (8, 16), "feature_dim": 16}).eval()


def _reconstructing(reconstruct):
    """An untrained AE (it declares LATENT) whose reconstructions are ``reconstruct(x)``."""
    model = build_model("ae", {"image_size": 8, "channels": (8, 16), "bottleneck_dim": 4}).eval()
    model.reconstruct = reconstruct
    return model


RECONSTRUCTORS = {
    "perfect": lambda x: x,
    "blurred": lambda x: gaussian_blur(x, 1.0),
    "constant": lambda x: torch.full_like(x, -1.0),
}


def test_rfid_is_zero_for_a_perfect_reconstructor_and_not_for_a_blurred_or_constant_one(digits_test):
    judges = judges_for(_judge_classifier())
    scores = {
        name: reconstruction_fid(_reconstructing(f), digits_test, judges, images=100, reference_name="digits:test")
        for name, f in RECONSTRUCTORS.items()
    }
    for judge in ("classifier", "classifier-layers"):
        perfect = scores["perfect"][judge]
        assert perfect.fid < 1e-6 and perfect.num_samples == perfect.num_reference == 100  # the same 100 images
        assert perfect.reference == "digits:test" and perfect.feature_extractor == judge
        assert scores["blurred"][judge].fid > 1e-3 and scores["constant"][judge].fid > 1e-3
    # the layers judge sees blur: far from 0, and its bootstrap interval too
    blurred = scores["blurred"]["classifier-layers"]
    assert blurred.fid - 1.96 * blurred.fid_se > 1.0


def test_evaluate_model_scores_rfid_only_for_latent_models_with_judges(digits_train, digits_test):
    classifier = _judge_classifier()
    perfect = _reconstructing(RECONSTRUCTORS["perfect"])
    result = evaluate_model(perfect, digits_train, digits_test, classifier=classifier, samples=1000, limit=8)
    assert list(result.reconstruction_fid_by_judge) == ["classifier", "classifier-layers"], result.skipped
    for judge, score in result.reconstruction_fid_by_judge.items():
        # samples (1000) caps the reconstructions: the whole split here, against the same images
        assert score.num_samples == score.num_reference == len(digits_test) and score.fid < 1e-6
        assert result.reconstruction_fid(judge).value == score.fid
    assert result.reconstruction.num_images == 8  # PSNR / SSIM keep to limit
    data = json.loads(json.dumps(result.to_json(), allow_nan=False))
    assert data["reconstruction_fid_by_judge"]["classifier"]["num_samples"] == len(digits_test)
    assert ModelEvaluation.from_json(data) == result
    blurred = evaluate_model(
        _reconstructing(RECONSTRUCTORS["blurred"]),
        digits_train,
        digits_test,
        classifier=classifier,
        samples=40,
        limit=8,
    )
    assert blurred.reconstruction_fid("classifier-layers").value > 1.0
    assert blurred.reconstruction_fid_by_judge["classifier"].num_samples == 40
    # no judges: left out, and skipped says why; a model without LATENT: left out, nothing to skip
    alone = evaluate_model(perfect, digits_train, digits_test, samples=20, limit=8)
    assert alone.reconstruction_fid_by_judge is None and "classifier" in alone.skipped["reconstruction_fid_by_judge"]
    assert "reconstruction_fid_by_judge" not in alone.to_json()
    judged = evaluate_model(classifier, digits_train, digits_test, classifier=classifier, samples=20, limit=8)
    assert judged.reconstruction_fid_by_judge is None and "reconstruction_fid_by_judge" not in judged.skipped
    assert "reconstruction_fid_by_judge" not in judged.to_json()


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


def test_diffusion_bound_is_near_zero_for_an_oracle_and_large_for_an_untrained_model(digits_test):
    from aediff.data import ImageDataset
    from aediff.diffusion import NoiseSchedule
    from aediff.evaluation import diffusion_nll

    one_image = ImageDataset(digits_test.images[:1].repeat(8, 1, 1, 1), name="one")
    x0 = one_image.batch(torch.arange(1))["images"]

    class Oracle(nn.Module):
        """Knows the data is a single image, so it always denoises perfectly."""

        def __init__(self):
            super().__init__()
            self.anchor = nn.Parameter(torch.zeros(1))
            self.schedule = NoiseSchedule("linear")

        def denoiser(self, x, sigma):
            return x0.expand_as(x)

    oracle = diffusion_nll(Oracle(), one_image, timesteps_per_image=4)
    # A perfect x0 predictor zeroes every KL term; what remains is DDPM's fixed-variance decoder L_0: each
    # pixel's probability is the mass of N(x0, std^2) in its bin (end bins open), std^2 = beta-tilde_2.
    abar = NoiseSchedule("linear").alphas_cumprod
    std = ((1 - abar[0]) / (1 - abar[1]) * (1 - abar[1] / abar[0])).sqrt()
    normal = torch.distributions.Normal(0.0, std)
    x = x0.double().flatten()
    upper = torch.where(x > 0.999, torch.ones_like(x), normal.cdf(torch.full_like(x, 1 / 255)))
    lower = torch.where(x < -0.999, torch.zeros_like(x), normal.cdf(torch.full_like(x, -1 / 255)))
    floor_bits = -(upper - lower).log().sum() / (x.numel() * math.log(2))
    assert abs(oracle["bits_per_dim"] - floor_bits) < 1e-3
    untrained = build_model(
        "diffusion",
        {"image_size": 8, "channels": (8, 16), "attention_resolutions": (), "embedding_dim": 16, "schedule": "cosine"},
    )
    result = diffusion_nll(untrained, one_image, timesteps_per_image=4)
    assert result["bits_per_dim"] > 1 and result["chain"] == "cosine, T=1000"


def test_diffusion_bound_stratified_over_t_is_exact_with_every_step_and_closer_than_uniform(digits_test):
    """A denoiser off by a constant c has a KL term at each t that does not depend on the noise, so the sum
    over t has a closed form: stratified sampling with one t per step must hit it, and with 8 strata it
    must scatter less around it than 8 uniform draws."""
    from aediff.data import ImageDataset
    from aediff.diffusion import NoiseSchedule
    from aediff.evaluation import diffusion_nll

    one_image = ImageDataset(digits_test.images[:1], name="one")
    schedule = NoiseSchedule("linear")

    class Offset(nn.Module):
        def __init__(self):
            super().__init__()
            self.anchor = nn.Parameter(torch.zeros(1))
            self.schedule = schedule

        def denoiser(self, x, sigma):
            return one_image.batch(torch.arange(1))["images"].expand_as(x) + 0.1

    exact = diffusion_nll(Offset(), one_image, timesteps_per_image=999, seed=0)["nll_nats"]
    assert diffusion_nll(Offset(), one_image, timesteps_per_image=999, seed=1)["nll_nats"] == exact  # no noise left
    error = {}  # root mean squared error around the exact bound over 12 seeds
    for how in ("stratified", "uniform"):
        values = np.array(
            [diffusion_nll(Offset(), one_image, 8, seed=s, t_sampling=how)["nll_nats"] for s in range(12)]
        )
        error[how] = float(np.sqrt(np.mean((values - exact) ** 2)))
    # uniform draws mostly miss the few small t that carry most of the bound (heavy-tailed: an underestimate
    # in most images, a huge overestimate in a few); stratifying gives those t strata of their own
    assert error["stratified"] < 0.5 * error["uniform"]
