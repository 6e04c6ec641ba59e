"""The denoiser's network as a choice: diffusers' UNet2DModel inside aediff's recipe (network.architecture), built
from the same shape, trained and sampled like aediff's own U-Net, and saved and loaded from the run folder."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("diffusers")

import aediff  # noqa: E402
from aediff.config import update_config  # noqa: E402
from aediff.errors import ConfigError  # noqa: E402
from aediff.models import build_model  # noqa: E402
from aediff.models.diffusion import DiffusionConfig  # noqa: E402
from aediff.models.networks import DiffusersUNet2D  # noqa: E402

SHAPE = {"image_size": 8, "image_channels": 1, "channels": (8, 16), "attention_resolutions": (4,)}


def config(**changes) -> DiffusionConfig:
    return update_config(DiffusionConfig(), {**SHAPE, "network.architecture": "diffusers-unet2d", **changes})


def test_the_diffusers_network_takes_the_configs_shape():
    model = build_model("diffusion", config(**{"conditioning.kind": "class", "conditioning.num_classes": 10}))
    network = model.denoiser.network
    assert isinstance(network, DiffusersUNet2D)
    unet = network.unet.config
    assert unet.block_out_channels == (8, 16) and unet.layers_per_block == 1
    assert unet.down_block_types == ("DownBlock2D", "AttnDownBlock2D")  # attention at the 4x4 stage only
    assert unet.up_block_types == ("AttnUpBlock2D", "UpBlock2D")
    assert unet.num_class_embeds == 11 and unet.norm_num_groups == 8  # the null class; groups dividing 8
    aediff_unet = build_model("diffusion", update_config(config(), {"network.architecture": "aediff"})).denoiser.network
    assert type(aediff_unet).__name__ == "UNet"  # the same config, the other kind


@pytest.mark.slow
def test_it_trains_and_samples_through_the_same_denoiser():
    torch.manual_seed(0)
    model = build_model("diffusion", config(**{"conditioning.kind": "class", "conditioning.num_classes": 10}))
    images = torch.rand(16, 1, 8, 8) * 2 - 1
    batch = {"images": images, "labels": torch.arange(16) % 10}
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        torch.manual_seed(1)  # the same noise every step: the loss on it must fall
        loss, _ = model(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]
    samples = model.eval().sample(3, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (3, 1, 8, 8) and torch.isfinite(samples).all()


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"conditioning.kind": "text"}, "no text conditioning"),
        ({"network.skip_connections": False}, "skip connections"),
        ({"network.architecture": "unet3d"}, "network.architecture"),
    ],
)
def test_what_diffusers_network_cannot_be_is_refused(changes, message):
    with pytest.raises(ConfigError, match=message):
        build_model("diffusion", config(**changes))


def test_a_run_with_the_diffusers_network_trains_and_loads_from_its_folder(tmp_path):
    from aediff.cli import _model_overrides
    from aediff.training.train import train

    flags = {"network": "diffusers-unet2d"}
    model = _model_overrides("diffusion", flags, ["channels=8,16", "attention_resolutions=4"])
    train("diffusion", tmp_path / "run", "digits", model=model, training={"max_steps": 3, "batch_size": 16,
          "tensorboard": False}, progress=False)  # fmt: skip
    run = aediff.load(tmp_path / "run", device="cpu")
    assert run.config.network.architecture == "diffusers-unet2d"
    assert isinstance(run.model.denoiser.network, DiffusersUNet2D)
    assert torch.isfinite(run.model.sample(2, generator=torch.Generator().manual_seed(0))).all()
