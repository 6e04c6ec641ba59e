"""Non-square images (H != W) end to end: the data keeps or takes the shape asked for (``--resolution HxW``),
every family trains on 12x20 images and makes 12x20 images, each side of the network halves on its own,
attention goes where a stage's shorter side is listed, and the exports keep the shape."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import aediff
from aediff.blocks import Attention2d, Decoder, Encoder, stage_shapes
from aediff.config import config_from_dict
from aediff.data import DataConfig, load_dataset
from aediff.data.transforms import resize_center_crop
from aediff.diffusion.samplers import SamplerOptions
from aediff.errors import ConfigError, DataError
from aediff.models import build_model
from aediff.training.train import train

H, W = 12, 20  # the folder's images: 12 high, 20 wide
TRAINING = {"max_steps": 2, "batch_size": 16, "tensorboard": False}
AE = {"channels": (8, 16), "bottleneck_dim": 4}
SPATIAL = {"channels": (8, 16), "latent": "spatial", "latent_channels": 2}
KL_AE = {"channels": (8, 16), "latent_channels": 2, "disc_channels": 4, "disc_start": 0}  # its PatchGAN on 12x20
UNET = {"channels": (8, 16), "attention_resolutions": (6,), "embedding_dim": 16, "steps": 2}


def _write_folder(root: Path, height: int, width: int, per_class: int = 12) -> Path:
    """Two class folders of greyscale PNGs, height x width: a bright bar at the top (class a) or bottom (b)."""
    rng = np.random.default_rng(0)
    for name, rows in (("a", slice(0, height // 3)), ("b", slice(-(height // 3), None))):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 60, (height, width), dtype=np.uint8)
            pixels[rows] = 220
            Image.fromarray(pixels, "L").save(root / name / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return _write_folder(tmp_path_factory.mktemp("nonsquare") / "images", H, W)


@pytest.fixture(scope="module")
def runs(folder, tmp_path_factory) -> Path:
    """Every family trained 2 steps on the 12x20 folder (latent diffusion in the spatial VAE's latent)."""
    root = tmp_path_factory.mktemp("nonsquare-runs")
    data = f"folder:{folder}"
    for family, model in [
        ("ae", AE),
        ("vae", SPATIAL),
        ("kl-ae", KL_AE),
        ("dae", AE),
        ("vqvae", {**SPATIAL, "codebook_size": 16}),
        ("classifier", {"channels": (8, 16), "feature_dim": 8}),
        ("diffusion", UNET),
    ]:
        train(family, root / family, data, model=model, training=TRAINING, progress=False)
    latent = {"channels": (8, 8), "attention_resolutions": (3,), "embedding_dim": 16, "steps": 2,
              "autoencoder.path": str(root / "vae")}  # fmt: skip
    train("latent-diffusion", root / "latent-diffusion", data, model=latent, training=TRAINING, progress=False)
    return root


# --- data ------------------------------------------------------------------------------------------------
def test_a_folder_of_non_square_images_keeps_its_shape(folder):
    dataset = load_dataset(f"folder:{folder}", "all")
    assert dataset.resolution == (H, W) and dataset.batch([0])["images"].shape == (1, 1, H, W)
    streamed = load_dataset(f"folder:{folder}", "all", stream=True)
    assert streamed.resolution == (H, W) and streamed.batch([0])["images"].shape == (1, 1, H, W)
    assert load_dataset(f"folder:{folder}", "all", stream=True, resolution=(6, 8)).resolution == (6, 8)


def test_an_npz_of_non_square_images_keeps_its_shape(tmp_path):
    np.savez(tmp_path / "x.npz", images=np.zeros((5, 7, 3), np.uint8), labels=np.arange(5) % 2)  # [N, H, W]
    assert load_dataset(f"npz:{tmp_path / 'x.npz'}", "all").resolution == (7, 3)


def test_resolution_hxw_covers_then_center_crops_keeping_the_aspect_ratio():
    # A stretch would keep every border band (squeezed); covering then cropping cuts the overhang away.
    square = np.zeros((8, 8, 1), np.uint8)
    square[:2] = 255  # a band along the top: outside the centred 4 x 8 window
    square[:, 3:5] = 128  # a centred column: kept, at its width (no horizontal squeeze)
    out = resize_center_crop(square, (4, 8))
    assert out.shape == (4, 8, 1) and out.max() == 128
    assert (out[:, 3:5] == 128).all() and (out[:, :3] == 0).all()
    wide = np.zeros((12, 20, 1), np.uint8)
    wide[:, :4] = 255  # a band on the left: outside the centred 12 x 12 window
    assert resize_center_crop(wide, 12).max() == 0
    small = resize_center_crop(wide, (6, 6))  # shrinks by the scale that covers 6 x 6 (1/2), then crops
    assert small.shape == (6, 6, 1) and small.max() < 30


def test_resolution_16x24_on_square_data():
    dataset = load_dataset("digits", "train", resolution=(16, 24))
    assert dataset.resolution == (16, 24) and dataset.batch([0])["images"].shape == (1, 1, 16, 24)
    assert DataConfig(spec="digits", resolution=(16, 24)).load("test").resolution == (16, 24)


def test_the_data_config_checks_both_sides_and_reads_its_json():
    assert config_from_dict(DataConfig, {"resolution": [12, 20]}).resolution == (12, 20)
    assert config_from_dict(DataConfig, {"resolution": 12}).resolution == 12
    for bad in ([0, 20], [12, 5000], [12, 20, 3]):
        with pytest.raises(ConfigError, match=r"(data|DataConfig)\.resolution"):
            config_from_dict(DataConfig, {"resolution": bad})
    with pytest.raises(DataError, match=r"\(height, width\) pair"):
        load_dataset("digits", "all", resolution=(8, 0))


def test_mixed_sizes_ask_for_resolution_hxw(tmp_path):
    _write_folder(tmp_path / "one", 12, 20, per_class=1)
    Image.new("L", (16, 16)).save(tmp_path / "one" / "a" / "square.png")
    with pytest.raises(DataError, match="--resolution HxW"):
        load_dataset(f"folder:{tmp_path / 'one'}", "all")


# --- models --------------------------------------------------------------------------------------------------
def test_each_side_halves_on_its_own():
    assert stage_shapes((12, 20), 3) == [(12, 20), (6, 10), (3, 5)]
    assert stage_shapes((7, 28), 3) == [(7, 28), (4, 14), (2, 7)]
    assert stage_shapes(8, 2) == [(8, 8), (4, 4)]
    encoder = Encoder(1, (4, 8, 8), 1, (7, 28))
    decoder = Decoder(1, (4, 8, 8), 1, (7, 28), skip_channels=encoder.skip_channels)
    h, skips = encoder(torch.zeros(2, 1, 7, 28))
    assert h.shape == (2, 8, 2, 7) and decoder(h, skips=skips).shape == (2, 1, 7, 28)


def test_attention_goes_where_the_shorter_side_is_listed():
    # stages (12, 20), (6, 10), (3, 5): 6 is the middle stage's shorter side, 10 its longer one
    def attended(resolutions):
        encoder = Encoder(1, (4, 4, 4), 1, (12, 20), attention_resolutions=resolutions)
        decoder = Decoder(1, (4, 4, 4), 1, (12, 20), attention_resolutions=resolutions)
        stages = [isinstance(a, Attention2d) for a in encoder.attentions]
        assert stages == [isinstance(a, Attention2d) for a in reversed(decoder.attentions)]
        return stages

    assert attended((6,)) == [False, True, False]
    assert attended((10,)) == [False, False, False]
    assert attended((12, 3)) == [True, False, True]


def test_a_vector_latent_flattens_channels_h_w():
    model = build_model("ae", {**AE, "image_size": H, "image_width": W})
    assert model.to_latent[-1].in_features == 16 * 6 * 10
    spatial = build_model("ae", {**SPATIAL, "image_size": H, "image_width": W})
    assert spatial.latent_shape == (2, 6, 10) and spatial.image_shape == (1, H, W)


def test_a_config_without_image_width_is_square():
    model = build_model("diffusion", {**UNET, "image_size": 8})
    assert model.config.image_width is None and model.image_shape == model.space_shape == (1, 8, 8)
    for family in ("ae", "latent-diffusion"):  # run folders written before image_width existed
        old = aediff.load(Path(__file__).parent / "fixtures" / "v1-runs" / family, device="cpu").model
        assert old.config.image_width is None and old.image_shape[1] == old.image_shape[2]


def test_diffusers_network_takes_both_sides_or_refuses_sides_it_cannot_halve():
    pytest.importorskip("diffusers")
    shape = {**UNET, "image_size": H, "image_width": W, "architecture": "diffusers-unet2d"}
    model = build_model("diffusion", shape)
    assert model.denoiser.network.unet.config.sample_size in ((H, W), [H, W])
    assert model.sample(1).shape == (1, 1, H, W)
    with pytest.raises(ConfigError, match="multiple of 2; got 12x21"):
        build_model("diffusion", {**shape, "image_width": 21})


# --- every family, trained and loaded -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "family", ["ae", "vae", "kl-ae", "dae", "vqvae", "classifier", "diffusion", "latent-diffusion"]
)
def test_every_family_trains_on_12x20_and_records_the_width(runs, family):
    config = json.loads((runs / family / "config.json").read_text())
    assert (config["model"]["image_size"], config["model"]["image_width"]) == (H, W)
    assert aediff.load(runs / family, device="cpu").model.image_shape == (1, H, W)


@pytest.mark.parametrize("family", ["vae", "vqvae", "diffusion", "latent-diffusion"])
def test_samples_are_12x20(runs, family):
    model = aediff.load(runs / family, device="cpu").model
    assert model.sample(3, generator=torch.Generator().manual_seed(0)).shape == (3, 1, H, W)


@pytest.mark.parametrize("family", ["ae", "kl-ae", "dae", "vqvae"])
def test_reconstructions_are_12x20(runs, family, folder):
    model = aediff.load(runs / family, device="cpu").model
    images = load_dataset(f"folder:{folder}", "all").batch([0, 1, 2])["images"]
    assert model.reconstruct(images).shape == (3, 1, H, W)


def test_the_classifier_classifies_12x20(runs, folder):
    model = aediff.load(runs / "classifier", device="cpu").model
    images = load_dataset(f"folder:{folder}", "all").batch([0, 1])["images"]
    assert model.logits(images).shape == (2, 2)


# --- the command line ---------------------------------------------------------------------------------------------
def _aediff(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    script = shutil.which("aediff", path=str(Path(sys.executable).parent))
    command = [script] if script else [sys.executable, "-m", "aediff.cli"]
    env = {**os.environ, "COLUMNS": "80", "NO_COLOR": "1"}
    env.pop("AEDIFF_DEBUG", None)
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=120, cwd=cwd, env=env)


def test_a_malformed_resolution_is_a_usage_error(tmp_path):
    done = _aediff("train", "ae", "--data", "digits", "--resolution", "32x", "--dry-run", cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "--resolution" in done.stderr and "HxW" in done.stderr and "Usage" in done.stderr
    assert "Traceback" not in done.stderr


def test_resolution_text_is_parsed_into_a_side_or_a_pair():
    import typer

    from aediff.cli import _resolution

    assert _resolution("32") == 32 and _resolution("32x48") == (32, 48) and _resolution(" 16X24 ") == (16, 24)
    assert _resolution(None) is None
    for bad in ("32x", "x32", "32x48x2", "abc", "2x48", "32x-4", "3.5"):
        with pytest.raises(typer.BadParameter):
            _resolution(bad)


def test_resolution_hxw_on_the_command_line_reaches_the_data_config(tmp_path):
    done = _aediff("train", "ae", "--data", "digits", "--resolution", "16x24", "--dry-run", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert '"resolution":[16,24]' in "".join(done.stdout.split())  # the printed data config, spaces dropped


@pytest.mark.slow
def test_reconstruct_on_the_command_line_reshapes_other_data_to_the_run(runs, tmp_path):
    out = tmp_path / "grid.png"
    args = ["reconstruct", str(runs / "ae"), "--data", "digits", "--out", str(out), "--images", "2"]
    done = _aediff(*args, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    with Image.open(out) as grid:  # originals above reconstructions, two 12x20 images each, 2 pixels apart
        assert grid.size == (2 * (W + 2) + 2, 2 * (H + 2) + 2)


# --- exports ------------------------------------------------------------------------------------------------------
def test_onnx_export_keeps_the_shape(runs, tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from aediff.export import export_onnx

    result = export_onnx(aediff.load(runs / "diffusion", device="cpu").model, tmp_path / "onnx")
    assert result.manifest["image_shape"] == [1, H, W]
    assert result.manifest["files"]["denoiser.onnx"]["inputs"]["x"]["shape"] == ["N", 1, H, W]


def test_diffusers_export_samples_12x20_and_a_12x20_diffusers_folder_loads(runs, tmp_path):
    diffusers = pytest.importorskip("diffusers")
    from aediff.export.diffusers import export_diffusers

    run = aediff.load(runs / "diffusion", device="cpu")
    stored = json.loads((runs / "diffusion" / "config.json").read_text())
    out = export_diffusers(run.model, stored["model"], tmp_path / "export", "diffusion", stored["format_version"])
    pipe = diffusers.DiffusionPipeline.from_pretrained(out, custom_pipeline=str(out / "pipeline.py"),
                                                       trust_remote_code=True)  # fmt: skip
    pipe.set_progress_bar_config(disable=True)
    assert pipe(batch_size=2, num_inference_steps=2, output_type="pt").images.shape == (2, 1, H, W)
    unet = diffusers.UNet2DModel(
        sample_size=(H, W), in_channels=1, out_channels=1, block_out_channels=(8, 16), layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4,
    )  # fmt: skip
    unet.save_pretrained(tmp_path / "unet-folder" / "unet")
    diffusers.DDPMScheduler(num_train_timesteps=100).save_pretrained(tmp_path / "unet-folder" / "scheduler")
    loaded = aediff.load(tmp_path / "unet-folder", device="cpu").model
    assert loaded.image_shape == (1, H, W)
    assert loaded.sample(2, options=SamplerOptions(steps=2)).shape == (2, 1, H, W)
