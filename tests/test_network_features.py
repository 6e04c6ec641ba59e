"""A diffusion model's inner features (Capability.NETWORK_FEATURES): pooled activations of its denoising
network at named levels for noised images, for aediff's U-Net and diffusers' UNet2DModel; seeded, hooks
removed afterwards, and an unknown level or a zero noise level refused."""

from __future__ import annotations

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
