"""The autoencoder family: one common test per behaviour, run over every family and latent shape."""

import math

import pytest
import torch
from torch.distributions import Bernoulli, Normal, kl_divergence

from aediff.errors import ConfigError, RunError
from aediff.models import MODELS, VAE, Autoencoder, Corruption, build_model
from aediff.models.vae import binarize

FAMILIES = [
    ("ae", "vector"),
    ("ae", "spatial"),
    ("vae", "vector"),
    ("vae", "spatial"),
    ("kl-ae", "spatial"),
    ("dae", "vector"),
    ("vqvae", "spatial"),
]
# What a family needs besides the shared tiny config: a kl-ae's patch discriminator fits 8x8 images with one layer
FAMILY_EXTRA = {"kl-ae": {"disc_layers": 1}}


def tiny(family, latent="vector", **extra):
    config = {"image_size": 8, "channels": (8, 16), "bottleneck_dim": 6, "latent": latent, "latent_channels": 3}
    return build_model(family, {**config, **FAMILY_EXTRA.get(family, {}), **extra})


def images(n=4, size=8):
    return torch.rand(n, 1, size, size) * 2 - 1


def test_registry_knows_every_family_and_names_the_valid_ones():
    assert {"ae", "vae", "dae", "classifier"} <= set(MODELS)
    with pytest.raises(ConfigError, match="ae, classifier, dae"):
        build_model("gan", {})
    with pytest.raises(ConfigError, match="no field"):
        build_model("ae", {"bottleneck": 3})


@pytest.mark.parametrize("family,latent", FAMILIES)
def test_shapes_ranges_and_gradients(family, latent):
    model = tiny(family, latent)
    x = images()
    z = model.encode(x)
    assert z.shape == ((4, 6) if latent == "vector" else (4, 3, 4, 4))
    assert z.shape[1:] == model.latent_shape
    out = model.reconstruct(x)
    assert out.shape == x.shape and out.min() >= -1 and out.max() <= 1
    loss, logs = model({"images": x})
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert all(math.isfinite(v) for v in logs.values())
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, f"parameters without a finite gradient: {missing}"


@pytest.mark.parametrize("family,latent", FAMILIES)
def test_a_few_steps_lower_the_loss(family, latent, losses_while_fitting):
    losses = losses_while_fitting(tiny(family, latent), images(16), steps=30, noise_draws=5)
    assert sum(losses[-5:]) < sum(losses[:5])


def test_ae_latent_prior_matches_the_training_latents():
    model = tiny("ae").eval()
    x = images(400)
    with pytest.raises(RunError, match="fitted"):
        model.sample(2)
    model.fit_latent_prior([x[:200], x[200:]])
    z = model.encode(x).detach()
    drawn = model.sample_latents(20000, torch.Generator().manual_seed(0))
    assert torch.allclose(drawn.mean(0), z.mean(0), atol=0.05 * z.std(0).max().item() + 1e-3)
    assert torch.allclose(torch.cov(drawn.T), torch.cov(z.T), atol=0.1 * torch.cov(z.T).abs().max().item())
    samples = model.sample(5)
    assert samples.shape == (5, 1, 8, 8)


def test_ae_latent_prior_from_one_image_and_from_diverged_latents():
    """One training image has no spread to estimate: the prior is that latent (plus jitter), not a Cholesky
    error; non-finite latents (a diverged run) are refused with the reason."""
    model = tiny("ae").eval()
    x = images(1)
    model.fit_latent_prior([x])
    assert torch.allclose(model.prior_mean, model.encode(x).flatten(), atol=1e-6)
    assert torch.isfinite(model.prior_scale_tril).all() and torch.isfinite(model.sample(2)).all()
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    with pytest.raises(ConfigError, match="not all finite"):
        model.fit_latent_prior([images(4)])


def test_vae_kl_and_likelihoods_match_torch_distributions():
    model = tiny("vae")
    mu, logvar = torch.randn(3, 6), torch.randn(3, 6)
    ours = VAE.kl_to_prior(mu, logvar)
    q = Normal(mu, (0.5 * logvar).exp())
    ref = kl_divergence(q, Normal(torch.zeros_like(mu), torch.ones_like(mu))).sum(1)
    assert torch.allclose(ours, ref, atol=1e-5)

    x, mean = images(3), images(3)
    sigma = model.log_sigma.exp()[0]
    assert torch.allclose(model.decoder_log_prob(x, mean), Normal(mean, sigma).log_prob(x).flatten(1).sum(1), atol=1e-3)

    bern = tiny("vae", likelihood="bernoulli")
    xb, logits = binarize(images(3)), torch.randn(3, 1, 8, 8)
    ref = Bernoulli(logits=logits).log_prob((xb + 1) / 2).flatten(1).sum(1)
    assert torch.allclose(bern.decoder_log_prob(xb, logits), ref, atol=1e-4)
    assert not hasattr(bern, "log_sigma")


def test_binarize_draws_with_the_pixel_intensity():
    x = torch.full((20000,), 0.5)  # P(+1) = 0.75
    b = binarize(x, torch.Generator().manual_seed(0))
    assert set(b.unique().tolist()) == {-1.0, 1.0}
    assert abs((b > 0).float().mean().item() - 0.75) < 0.02


def test_iwae_bound_is_tighter_than_the_elbo_and_grows_with_k():
    model = tiny("vae").eval()
    x = images(8)
    torch.manual_seed(0)
    elbo = torch.stack([model.elbo(x) for _ in range(50)]).mean(0)
    iwae_1 = torch.stack([model.iwae_log_likelihood(x, k=1) for _ in range(50)]).mean(0)
    iwae_50 = model.iwae_log_likelihood(x, k=50, chunk=7)
    # k=1 is the ELBO in expectation; more samples can only raise the bound.
    assert torch.allclose(iwae_1.mean(), elbo.mean(), rtol=0.02)
    assert iwae_50.mean() > elbo.mean()


def test_vae_samples_come_from_the_standard_normal_prior():
    model = tiny("vae")
    z = model.sample_latents(5000, torch.Generator().manual_seed(1))
    assert abs(z.mean().item()) < 0.05 and abs(z.std().item() - 1) < 0.05
    assert model.sample(3).shape == (3, 1, 8, 8)


def test_dae_trains_on_corrupted_input():
    model = tiny("dae", corruption="mask:0.5")
    assert model.corruption == Corruption("mask", 0.5, 0.5)
    x = images(2)
    ae = Autoencoder(model.config)
    ae.load_state_dict(model.state_dict())
    # Same weights, but the DAE's loss sees masked inputs, so it differs from the AE's.
    assert not torch.isclose(model({"images": x})[0], ae({"images": x})[0])
    with pytest.raises(ConfigError, match="unknown corruption"):
        tiny("dae", corruption="blur:3")


@pytest.mark.parametrize(
    "spec", ["gaussian:0.5", "gaussian:0.1-0.8", "mask:0.3", "mask:0.5:patch4", "saltpepper:0.1", "none"]
)
def test_corruption_specs_round_trip(spec):
    assert Corruption.parse(spec).spec == spec


@pytest.mark.parametrize(
    "spec", ["gaussian", "gaussian:x", "mask:1.5", "gaussian:0.5-0.1", "mask:0.3:blur", "saltpepper:0.2:patch2"]
)
def test_bad_corruption_specs_say_what_to_write(spec):
    with pytest.raises(ConfigError):
        Corruption.parse(spec)


def test_corruptions_have_the_requested_strength():
    x = torch.zeros(64, 1, 32, 32) - 1  # a black image
    g = torch.Generator().manual_seed(0)
    noise = Corruption.parse("gaussian:0.3")(x, g) - x
    assert abs(noise.std().item() - 0.3) < 0.01
    masked = Corruption.parse("mask:0.4")(x, g)
    assert abs((masked == 0).float().mean().item() - 0.4) < 0.02
    patches = Corruption.parse("mask:0.5:patch4")(x, g)
    blocks = (patches == 0).float().reshape(64, 8, 4, 8, 4)
    assert torch.all(blocks.amin((2, 4)) == blocks.amax((2, 4)))  # whole 4x4 patches go together
    sp = Corruption.parse("saltpepper:0.2")(x, g)
    assert abs((sp == 1).float().mean().item() - 0.1) < 0.02
    ranged = Corruption.parse("gaussian:0.1-0.9")
    levels = ranged.levels(10000, torch.device("cpu"), g)
    assert levels.min() >= 0.1 and levels.max() <= 0.9 and abs(levels.mean().item() - 0.5) < 0.02


def test_classifier_features_and_label_requirement():
    from aediff.errors import DataError

    model = build_model("classifier", {"image_size": 8, "channels": (8, 16), "feature_dim": 12, "num_classes": 3})
    x = images(5)
    assert model.features(x).shape == (5, 12)
    loss, logs = model({"images": x, "labels": torch.tensor([0, 1, 2, 0, 1])})
    assert torch.isfinite(loss) and 0 <= logs["accuracy"] <= 1
    with pytest.raises(DataError, match="labelled"):
        model({"images": x})


def test_what_a_capability_promises_is_answered_by_the_interface_and_refused_by_the_others():
    """Callers read what they need through the interface (models/interface.py), never a family's config."""
    from aediff.diffusion import NoiseSchedule
    from aediff.models import CapabilityError

    classifier = build_model("classifier", {"image_size": 8, "channels": (8, 16), "feature_dim": 12, "num_classes": 3})
    assert classifier.feature_dim == 12 and classifier.layer_features(images(2)).shape == (
        2,
        classifier.layer_feature_dim,
    )
    vae = tiny("vae", likelihood="bernoulli")
    assert vae.likelihood == "bernoulli" and set(vae.prepare_input(images(2)).unique().tolist()) <= {-1.0, 1.0}
    diffusion = build_model(
        "diffusion",
        {"image_size": 8, "channels": (8, 16), "attention_resolutions": (), "embedding_dim": 16, "guidance": 2.5},
    )
    assert diffusion.default_guidance == 2.5 and diffusion.clip_denoised is True
    assert isinstance(diffusion.schedule, NoiseSchedule)
    assert diffusion.denoiser is dict(diffusion.named_children())["denoiser"]  # the registered sub-module
    assert all(key.startswith("denoiser.") for key in diffusion.state_dict())  # the weights' names are unchanged
    student = diffusion.config_with_sampling("euler", 4)
    assert (student.sampling.sampler, student.sampling.steps, student.sampling.guidance) == ("euler", 4, 2.5)
    assert diffusion.config.sampling.sampler == "dpm++"  # a copy: the model's own config is unchanged
    ae = tiny("ae")
    for name in ("denoiser", "schedule", "space_shape", "karras_range", "likelihood", "feature_dim"):
        with pytest.raises(CapabilityError, match=f"{name} needs a model that can .*'ae' model"):
            getattr(ae, name)
    with pytest.raises(CapabilityError, match=r"layer_features\(\) needs a model that can classify"):
        ae.layer_features(images(1))
