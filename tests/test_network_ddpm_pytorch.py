"""denoising-diffusion-pytorch's (lucidrains') Unet inside aediff's recipe (network.architecture
"ddpm-pytorch-unet"): its widths come from the config, what it cannot be is refused with the fix, and where the
library is installed it trains, samples and loads from its run folder. The library needs torchvision, which is
not installed here, so the real-library test stubs torchvision's import (the Unet does not use it)."""

from __future__ import annotations

import sys
import types
from typing import get_args

import pytest
import torch

from aediff.config import update_config
from aediff.errors import ConfigError
from aediff.models import build_model
from aediff.models.diffusion import DiffusionConfig
from aediff.models.networks import NETWORKS, DDPMPytorchUnet
from aediff.modes import NetworkKind

SHAPE = {"image_size": 8, "image_channels": 1, "channels": (8, 16)}


def config(**changes) -> DiffusionConfig:
    return update_config(DiffusionConfig(), {**SHAPE, "network.architecture": "ddpm-pytorch-unet", **changes})


class FakeUnet(torch.nn.Module):
    """Records what the adapter builds and calls; returns its input."""

    def __init__(self, **kwargs):
        super().__init__()
        self.kwargs, self.calls = kwargs, []
        self.weight = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x, time):
        self.calls.append(time)
        return x + self.weight


@pytest.fixture
def fake_library(monkeypatch):
    package = types.ModuleType("denoising_diffusion_pytorch")
    module = types.ModuleType("denoising_diffusion_pytorch.denoising_diffusion_pytorch")
    module.Unet = FakeUnet
    monkeypatch.setitem(sys.modules, "denoising_diffusion_pytorch", package)
    monkeypatch.setitem(sys.modules, "denoising_diffusion_pytorch.denoising_diffusion_pytorch", module)


def test_every_network_kind_has_a_builder():
    assert set(get_args(NetworkKind)) == set(NETWORKS)


def test_the_widths_become_dim_and_dim_mults(fake_library):
    network = build_model("diffusion", config(**{"channels": (16, 32, 64), "dropout": 0.1})).denoiser.network
    assert isinstance(network, DDPMPytorchUnet)
    assert network.unet.kwargs == {"dim": 16, "dim_mults": (1, 2, 4), "channels": 1, "dropout": 0.1}
    out = network(torch.zeros(2, 1, 8, 8), torch.tensor([0.5, -1.0]))
    assert out.shape == (2, 1, 8, 8) and torch.equal(network.unet.calls[0], torch.tensor([0.5, -1.0]))


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"conditioning.kind": "class", "conditioning.num_classes": 10}, "no class or text conditioning"),
        ({"conditioning.kind": "text"}, "no class or text conditioning"),
        ({"network.skip_connections": False}, "skip connections"),
        ({"channels": (16, 24)}, "multiple of the first.*--widths 32,64,128"),
        ({"image_size": 6, "channels": (8, 16, 32)}, "multiple of 4; got 6: use fewer --widths"),
    ],
)
def test_what_the_unet_cannot_be_is_refused(fake_library, changes, message):
    with pytest.raises(ConfigError, match=message):
        build_model("diffusion", config(**changes))


def test_without_the_library_the_error_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "denoising_diffusion_pytorch", None)  # import fails
    with pytest.raises(ConfigError, match="pip install denoising-diffusion-pytorch"):
        build_model("diffusion", config())


def test_the_real_unet_trains_samples_and_loads_from_its_folder(tmp_path, monkeypatch):
    if "torchvision" not in sys.modules:
        stub = types.ModuleType("torchvision")
        stub.transforms, stub.utils = types.SimpleNamespace(), types.SimpleNamespace()
        monkeypatch.setitem(sys.modules, "torchvision", stub)
    pytest.importorskip("denoising_diffusion_pytorch.denoising_diffusion_pytorch")
    import aediff
    from aediff.training.train import train

    model = {"network.architecture": "ddpm-pytorch-unet", "channels": (8, 16)}
    train("diffusion", tmp_path / "run", "digits", model=model, training={"max_steps": 3, "batch_size": 16,
          "tensorboard": False}, progress=False)  # fmt: skip
    run = aediff.load(tmp_path / "run", device="cpu")
    assert run.config.network.architecture == "ddpm-pytorch-unet"
    assert isinstance(run.model.denoiser.network, DDPMPytorchUnet)
    assert torch.isfinite(run.model.sample(2, generator=torch.Generator().manual_seed(0))).all()
