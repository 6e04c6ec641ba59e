"""The KL autoencoder with a patch discriminator (``kl-ae``): its loss's pieces against hand computations, the
discriminator's warm-up and detachment, and the run end to end on tiny colour images made here (8x8 RGB):
save and load, exact resume, ONNX export, latent diffusion in its latent, the page's catalog, bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

import aediff
from aediff.config import FieldRangeError
from aediff.errors import ConfigError
from aediff.models import Capability, build_model
from aediff.models.adversarial import PatchDiscriminator, adaptive_weight, hinge_d_loss, most_layers, patch_grid
from aediff.training.train import train

SIZE = 8
# channels 8,16: one halving, a 2x4x4 latent; disc_channels 8: a small PatchGAN (a run on 8x8 images gets one
# stride-2 layer, the most that fit: 2x2 logits)
TINY = {"channels": (8, 16), "latent_channels": 2, "disc_channels": 8}
# A constant LR after a short warm-up: a run resumed with a longer budget takes the steps a longer run takes.
TRAINING = {
    "batch_size": 8,
    "lr": 3e-3,
    "warmup_steps": 2,
    "lr_schedule": "constant",
    "log_every": 1,
    "tensorboard": False,
}


def colour_images(n: int, size: int = SIZE, seed: int = 0) -> np.ndarray:
    """[n, size, size, 3] uint8: a disc of one random colour on a dark background of another."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    images = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        cy, cx = rng.integers(size // 4, 3 * size // 4, 2)
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 < rng.integers(size // 5, size // 3) ** 2
        images[i] = rng.integers(0, 60, 3)
        images[i][disc] = rng.integers(60, 256, 3)
    return images


def tiny(**extra) -> nn.Module:
    return build_model("kl-ae", {"image_channels": 3, "image_size": SIZE, **TINY, "disc_layers": 1, **extra})


def batch(n: int = 4) -> dict[str, torch.Tensor]:
    return {"images": torch.from_numpy(colour_images(n)).permute(0, 3, 1, 2).float() / 127.5 - 1}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("colour") / "colour.npz"
    np.savez(path, images=colour_images(40), labels=np.arange(40) % 2)
    return f"npz:{path}"


@pytest.fixture(scope="module")
def run(data, tmp_path_factory) -> Path:
    """4 steps, the discriminator on from step 2."""
    out = tmp_path_factory.mktemp("kl-run") / "run"
    train("kl-ae", out, data, model={**TINY, "disc_start": 2}, training={**TRAINING, "max_steps": 4}, progress=False)
    return out


# --- the loss's pieces --------------------------------------------------------------------------------------
def test_hinge_loss_on_known_logits():
    real, fake = torch.tensor([2.0, 0.5, -1.0]), torch.tensor([-2.0, 0.0, 1.5])
    # relu(1 - real) = 0, 0.5, 2 (mean 5/6); relu(1 + fake) = 0, 1, 2.5 (mean 7/6); half their sum: 1
    assert hinge_d_loss(real, fake).item() == pytest.approx(1.0)
    assert hinge_d_loss(torch.full((4,), 1.0), torch.full((4,), -3.0)).item() == 0  # beyond both margins
    assert hinge_d_loss(torch.zeros(2, 1, 3, 3), torch.zeros(2, 1, 3, 3)).item() == pytest.approx(1.0)


def test_adaptive_weight_is_the_ratio_of_gradient_norms_at_the_last_layer():
    torch.manual_seed(0)
    decoder = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.SiLU(), nn.Conv2d(4, 3, 3, padding=1))
    critic = nn.Conv2d(3, 1, 4)
    z, x = torch.randn(2, 2, 6, 6), torch.rand(2, 3, 6, 6)
    x_hat = decoder(z)
    rec, g_loss = (x - x_hat).abs().mean(), -critic(x_hat).mean()
    last = decoder[2].weight
    by_hand = [torch.autograd.grad(loss, last, retain_graph=True)[0].norm() for loss in (rec, g_loss)]
    weight = adaptive_weight(rec, g_loss, last, disc_weight=0.5)
    assert not weight.requires_grad
    assert weight.item() == pytest.approx(0.5 * (by_hand[0] / (by_hand[1] + 1e-4)).item(), rel=1e-6)
    flat = 0.0 * x_hat.sum()  # an adversarial term with no pull on the decoder: 1e4 at most, times disc_weight
    assert adaptive_weight(100 * rec, flat, last, disc_weight=0.5).item() == pytest.approx(0.5e4)


def test_the_models_lambda_is_computed_on_its_decoders_last_layer():
    model = tiny(disc_start=0)
    torch.manual_seed(1)
    x_hat, rec, _ = model.reconstruction_terms(batch()["images"])
    g_loss = -model.discriminator(x_hat).mean()  # in train mode BatchNorm uses the batch's statistics: the same
    last = model.decoder.out_conv.weight
    norms = [torch.autograd.grad(loss, last, retain_graph=True)[0].norm() for loss in (rec, g_loss)]
    _, _, logs = model.adversarial_terms(batch()["images"], x_hat, rec)
    assert logs["adaptive_weight"].item() == pytest.approx(0.5 * (norms[0] / (norms[1] + 1e-4)).item(), rel=1e-5)


def _discriminator_grads(model: nn.Module, step: int) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """The discriminator's gradients (by parameter name) of the whole loss at ``step``, and the logs."""
    model.zero_grad(set_to_none=True)
    model.begin_step(step)
    torch.manual_seed(0)
    loss, logs = model(batch())
    loss.backward()
    return {name: p.grad for name, p in model.discriminator.named_parameters()}, logs


def test_the_discriminator_trains_from_the_start_step_on_and_not_before():
    model = tiny(disc_start=5)
    before, logs = _discriminator_grads(model, 4)
    assert all(g is not None and not g.any() for g in before.values())  # zeros, not none: DDP needs every parameter
    assert "d_loss" not in logs and model.decoder.out_conv.weight.grad.any()
    after, logs = _discriminator_grads(model, 5)
    # Every weight learns; the last bias's gradient cancels while every logit is inside the hinge's margins (it
    # pulls that bias up for the real images as hard as down for the reconstructions).
    assert all(g.any() for name, g in after.items() if name.endswith("weight"))
    assert {"g_loss", "d_loss", "adaptive_weight", "logits_real", "logits_fake"} <= set(logs)
    model.eval()  # a held-out loss: reconstruction + KL, whatever the step
    with torch.no_grad():
        assert set(model(batch())[1]) == {"rec_loss", "kl_nats"}


def test_the_generators_adversarial_term_leaves_the_discriminators_gradient_alone():
    model = tiny(disc_start=0)
    torch.manual_seed(0)
    x = batch()["images"]
    x_hat, rec, _ = model.reconstruction_terms(x)
    g_term, d_loss, _ = model.adversarial_terms(x, x_hat, rec)
    discriminator = list(model.discriminator.parameters())
    assert all(g is None for g in torch.autograd.grad(g_term, discriminator, retain_graph=True, allow_unused=True))
    assert torch.autograd.grad(g_term, model.decoder.out_conv.weight, retain_graph=True)[0].any()
    alone = torch.autograd.grad(d_loss, discriminator)
    total, _ = _discriminator_grads(model, 0)  # the whole loss, same draws: its discriminator gradient is L_D's
    assert all(torch.allclose(a, b, atol=1e-7) for a, b in zip(alone, total.values(), strict=True))


def test_the_patch_discriminator_fits_the_image_size_or_says_what_to_set():
    assert patch_grid((16, 16), 2) == (2, 2) and patch_grid((12, 20), 2) == (1, 3) and most_layers((256, 256)) == 6
    assert PatchDiscriminator(3, 8, 2, (16, 16))(torch.zeros(2, 3, 16, 16)).shape == (2, 1, 2, 2)
    with pytest.raises(ConfigError, match=r"disc_layers=2 .* too deep for 8x8 images.*disc_layers=1"):
        tiny(disc_layers=2)
    with pytest.raises(ConfigError, match="disc_weight=0"):
        build_model("kl-ae", {"image_size": 5, "channels": (8,), "disc_layers": 1})
    assert build_model("kl-ae", {"image_size": 5, "channels": (8,), "disc_weight": 0}).discriminator is None


def test_bad_weights_are_refused_with_the_field_and_the_reason():
    with pytest.raises(ConfigError, match="perceptual_weight=0.1 .*not available offline.*perceptual_weight=0"):
        tiny(perceptual_weight=0.1)
    for field in ("kl_weight", "disc_weight", "perceptual_weight"):
        with pytest.raises(FieldRangeError, match=f"{field} must be a finite number >= 0"):
            tiny(**{field: -1.0})


def test_without_training_parts_drops_the_discriminator_and_shares_the_rest():
    model = tiny().eval()
    frozen = model.without_training_parts()
    assert frozen.discriminator is None and frozen.config.disc_weight == 0 and model.discriminator is not None
    assert not any(k.startswith("discriminator.") for k in frozen.state_dict())
    assert frozen.decoder.out_conv.weight.data_ptr() == model.decoder.out_conv.weight.data_ptr()
    x = batch()["images"]
    assert torch.equal(frozen.encode(x), model.encode(x)) and frozen.without_training_parts() is frozen


# --- a run, end to end ------------------------------------------------------------------------------------
def test_a_run_saves_its_discriminator_and_loads_from_its_folder_alone(run, tmp_path):
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert "d_loss" not in log[1] and {"g_loss", "d_loss", "adaptive_weight", "logits_fake"} <= set(log[2])
    # the default depth (2 stride-2 layers) leaves no patch of 8x8 images: a new run takes the most that fit
    assert json.loads((run / "config.json").read_text())["model"]["disc_layers"] == 1
    moved = shutil.copytree(run, tmp_path / "elsewhere")
    loaded = aediff.load(moved, weights="model", device="cpu").model
    stored = load_file(str(run / "model.safetensors"))
    assert any(k.startswith("discriminator.") for k in stored)
    assert all(torch.equal(stored[k], v) for k, v in loaded.state_dict().items())
    x = batch()["images"]
    again = aediff.load(run, weights="model", device="cpu").model
    assert torch.equal(loaded.reconstruct(x), again.reconstruct(x))
    mu, _ = loaded.encode_distribution(x)
    assert torch.equal(loaded.encode(x), mu) and loaded.encode(x).shape == (4, 2, 4, 4)
    assert loaded.sample(3, generator=torch.Generator().manual_seed(0)).shape == (3, 3, SIZE, SIZE)


def test_before_the_start_step_training_leaves_the_discriminator_as_it_was_built(data, tmp_path):
    train("kl-ae", tmp_path / "r", data, model=TINY, training={**TRAINING, "max_steps": 3}, progress=False)
    config = json.loads((tmp_path / "r" / "config.json").read_text())["model"]
    torch.manual_seed(0)  # the run's seed: the trainer builds the model right after seeding with it
    built = build_model("kl-ae", config).discriminator.state_dict()
    stored = load_file(str(tmp_path / "r" / "model.safetensors"))
    assert all(torch.equal(stored[f"discriminator.{k}"], v) for k, v in built.items())


def test_an_interrupted_run_resumes_exactly_across_the_start_step(data, tmp_path):
    """Stopped after the discriminator has trained a step: its Adam moments and BatchNorm statistics travel too."""
    model = {**TINY, "disc_start": 1}
    train("kl-ae", tmp_path / "full", data, model=model, training={**TRAINING, "max_steps": 4}, progress=False)
    train("kl-ae", tmp_path / "part", data, model=model, training={**TRAINING, "max_steps": 2}, progress=False)
    train(None, tmp_path / "part", training={"max_steps": 4}, resume=True, progress=False)
    for name in ("model.safetensors", "ema.safetensors"):
        a, b = load_file(str(tmp_path / "full" / name)), load_file(str(tmp_path / "part" / name))
        assert a.keys() == b.keys()
        tolerance = 1e-4 if torch.cuda.is_available() else 1e-6  # cuDNN's backward is not bitwise reproducible
        assert all(torch.allclose(a[k].float(), b[k].float(), atol=tolerance) for k in a), name


def test_onnx_export_has_the_encoder_and_decoder_and_no_discriminator(run, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    from aediff.export import export_onnx

    model = aediff.load(run, device="cpu").model
    result = export_onnx(model, tmp_path)
    assert set(result.max_abs_diff) == {"encoder.onnx", "decoder.onnx"} and max(result.max_abs_diff.values()) < 1e-4
    for file in result.max_abs_diff:
        assert not any("discriminator" in t.name for t in onnx.load(str(tmp_path / file)).graph.initializer)
    x = batch(3)["images"]
    encoder = ort.InferenceSession(str(tmp_path / "encoder.onnx"), providers=["CPUExecutionProvider"])
    (z,) = encoder.run(None, {"images": x.numpy()})
    with torch.no_grad():
        assert np.abs(z - model.encode(x).numpy()).max() < 1e-4  # the posterior mean


def test_latent_diffusion_in_a_kl_ae_latent_trains_and_samples_without_the_discriminator(run, data, tmp_path):
    unet = {"channels": (8, 8), "attention_resolutions": (), "embedding_dim": 8, "steps": 2}
    latent = {**unet, "autoencoder.path": str(run)}
    training = {**TRAINING, "max_steps": 2}
    train("latent-diffusion", tmp_path / "ld", data, model=latent, training=training, progress=False)
    loaded = aediff.load(tmp_path / "ld", device="cpu").model
    images = loaded.sample(2, generator=torch.Generator().manual_seed(0))
    assert images.shape == (2, 3, SIZE, SIZE) and images.abs().max() <= 1
    stored = load_file(str(tmp_path / "ld" / "model.safetensors"))
    assert any(k.startswith("autoencoder.") for k in stored) and not any("discriminator" in k for k in stored)
    source = json.loads((tmp_path / "ld" / "config.json").read_text())["model"]["autoencoder"]
    assert source["family"] == "kl-ae" and source["config"]["disc_weight"] == 0
    x = batch(2)["images"]
    with torch.no_grad():  # the latent diffusion's autoencoder is the run's, less the discriminator
        assert torch.equal(loaded.autoencoder.encode(x), aediff.load(run, device="cpu").model.encode(x))


def test_the_page_lists_it_with_the_autoencoders_and_it_denoises(run):
    from PIL import Image

    from aediff.app import handlers

    catalog = handlers.Catalog.open([run])
    assert catalog.names(Capability.LATENT) == catalog.names(Capability.GENERATE) == [run.name]
    assert "kl-ae" in handlers.describe(catalog)
    image = Image.fromarray(colour_images(1)[0])
    result = handlers.denoise_all(catalog, image, "gaussian", 0.3)
    assert [row[:2] for row in result.table if row[1] != "-"] == [[run.name, "kl-ae"]]  # [run, family, ...]
