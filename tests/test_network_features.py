"""A diffusion model's inner features (Capability.NETWORK_FEATURES): pooled activations of its denoising
network at named levels for noised images, for aediff's U-Net and diffusers' UNet2DModel; seeded, hooks
removed afterwards, and an unknown level or a zero noise level refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from aediff.errors import ConfigError
from aediff.models import Capability, build_model

TINY = {"image_size": 8, "channels": (8, 16), "attention_resolutions": (4,), "embedding_dim": 16}


def images(n: int = 5) -> torch.Tensor:
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1


@pytest.mark.parametrize("architecture", ["aediff", "diffusers-unet2d"])
def test_features_are_pooled_per_image_at_each_level_and_seeded(architecture):
    torch.manual_seed(0)
    model = build_model("diffusion", {**TINY, "architecture": architecture}).eval()
    assert model.can(Capability.NETWORK_FEATURES) and model.feature_levels == ("unet-encoder", "unet-mid")
    features = model.network_features(images(), 0.5, ["unet-mid", "unet-encoder"], torch.Generator().manual_seed(1))
    assert list(features) == ["unet-mid", "unet-encoder"]
    assert features["unet-mid"].shape == (5, 16) and features["unet-encoder"].shape == (5, 16)
    again = model.network_features(images(), 0.5, ["unet-mid"], torch.Generator().manual_seed(1))
    assert torch.equal(again["unet-mid"], features["unet-mid"])
    other = model.network_features(images(), 2.0, ["unet-mid"], torch.Generator().manual_seed(1))
    assert not torch.allclose(other["unet-mid"], features["unet-mid"])  # the noise level reaches the network
    assert not any(m._forward_hooks for m in model.modules())  # the hooks are gone


def test_an_unknown_level_or_no_noise_is_refused():
    model = build_model("diffusion", TINY)
    with pytest.raises(ConfigError, match="feature level unet-top is not one of unet-encoder, unet-mid"):
        model.network_features(images(), 0.5, ["unet-top"])
    with pytest.raises(ConfigError, match="sigma > 0"):
        model.network_features(images(), 0.0, ["unet-mid"])


def test_autoencoders_have_no_network_features():
    model = build_model("ae", {"image_size": 8, "channels": (8, 16), "bottleneck_dim": 4})
    assert not model.can(Capability.NETWORK_FEATURES)


def test_feature_probes_choose_sigma_on_validation_and_score_the_untrained_network_too(tmp_path):
    """A tiny diffusion model trained briefly on digits: the sigma chosen is the best on validation, every level
    tried is reported, and the untrained control is a different network scored on the same images. (Whether
    the trained features beat it is the benchmark's question, at a real budget.)"""
    import aediff
    from aediff.data import load_dataset
    from aediff.evaluation.latents import network_feature_probes

    aediff.train("diffusion", tmp_path / "d", "digits", model=TINY, progress=False,
                 training={"max_steps": 150, "batch_size": 64, "warmup_steps": 5, "snapshots": ()})  # fmt: skip
    model = aediff.load(tmp_path / "d").model
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    probes = network_feature_probes(model, train, test, sigmas=(0.25, 1.0), limit=400)
    assert set(probes.validation_knn) == {"0.25", "1"} and probes.sigma in (0.25, 1.0)
    assert probes.validation_knn[f"{probes.sigma:g}"] == max(probes.validation_knn.values())
    assert probes.feature_dim == 16 and probes.num_test == 359 and probes.knn_hits.shape == (359,)
    assert probes.untrained_hits.shape == (359,) and not np.array_equal(probes.untrained_hits, probes.knn_hits)
    assert 0.1 < probes.knn_accuracy <= 1 and 0 < probes.linear_probe_accuracy <= 1
    # sigma chosen on fewer training images: the same probes on the same test images, the choice made apart
    fewer = network_feature_probes(model, train, test, sigmas=(0.25, 1.0), limit=400, choose_on=100)
    assert fewer.num_train == probes.num_train and fewer.knn_hits.shape == probes.knn_hits.shape
    assert fewer.validation_knn != probes.validation_knn  # 20 held-out images instead of 80
    if fewer.sigma == probes.sigma:  # then everything after the choice is the same computation
        assert np.array_equal(fewer.knn_hits, probes.knn_hits)
