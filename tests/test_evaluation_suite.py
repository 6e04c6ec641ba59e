"""The evaluation suite: denoising sweeps, latent probes, spectra, gradient norms, speed and
``evaluate_model`` / `aediff eval`, on tiny models trained for a few steps on 8x8 digits."""

import json
import math

import numpy as np
import pytest
import torch

import aediff
from aediff.diffusion import SamplerOptions
from aediff.errors import ConfigError, RunError
from aediff.evaluation import (
    ModelEvaluation,
    denoising_metrics,
    denoising_sweep,
    evaluate_model,
    gradient_norms,
    high_frequency_share,
    interpolation_grid,
    knn_accuracy,
    latent_codes,
    latent_map,
    latent_space_metrics,
    linear_probe_accuracy,
    predicted_x0_sweep,
    sampling_speed,
    spread_indices,
    umap_available,
)
from aediff.evaluation.results import encode
from aediff.models import CapabilityError, Condition, build_model
from aediff.runs import read_training_summary
from aediff.training.train import train
from test_cli import run_cli

AE_TINY = {"channels": (8, 16), "bottleneck_dim": 8}
DIFFUSION_TINY = {"image_size": 8, "channels": (8, 16), "attention_resolutions": (4,), "embedding_dim": 16, "steps": 3}
QUICK = {"max_steps": 5, "batch_size": 32, "tensorboard": False}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Run folders of a VAE, a DAE, a diffusion model, a class-conditioned one and a classifier."""
    root = tmp_path_factory.mktemp("suite")
    for name, family, model in [
        ("vae", "vae", AE_TINY),
        ("dae", "dae", AE_TINY),
        ("diffusion", "diffusion", {**DIFFUSION_TINY, "conditioning.kind": "none"}),
        ("class_diffusion", "diffusion", {**DIFFUSION_TINY, "conditioning.kind": "class"}),
        ("classifier", "classifier", {"channels": (8, 16)}),
    ]:
        torch.manual_seed(0)
        train(family, root / name, "digits", model=model, training=QUICK, progress=False)
    return root


@pytest.fixture(scope="module")
def loaded(runs):
    """The run records (``aediff.load``) of the run folders."""
    return {
        name: aediff.load(runs / name, device="cpu")
        for name in ("vae", "dae", "diffusion", "class_diffusion", "classifier")
    }


@pytest.fixture(scope="module")
def models(loaded):
    return {name: run.model for name, run in loaded.items()}


@pytest.fixture(scope="module")
def latent_diffusion():
    """An untrained latent diffusion model on an untrained spatial AE (built directly: no run folders)."""
    model = build_model(
        "latent-diffusion",
        {
            "autoencoder.family": "ae",
            "latent_scale": 1.0,
            "image_channels": 1,
            "image_size": 8,
            "autoencoder.config": {"image_size": 8, "channels": [8, 16], "latent": "spatial", "latent_channels": 2},
            "channels": (8, 16),
            "attention_resolutions": (2,),
            "embedding_dim": 16,
            "steps": 3,
        },
    ).eval()
    assert model.space_shape == (2, 4, 4) and model.image_shape == (1, 8, 8)
    return model


def numbers(value):
    """Every number inside a nested dict / list."""
    if isinstance(value, dict):
        return [n for v in value.values() for n in numbers(v)]
    if isinstance(value, list):
        return [n for v in value for n in numbers(v)]
    return [value] if isinstance(value, (int, float)) and not isinstance(value, bool) else []


# --- denoising sweep ----------------------------------------------------------------------------------
def test_denoising_sweep_of_an_autoencoder_has_one_row_per_corruption(models, digits_test):
    rows = denoising_sweep(models["dae"], digits_test, steps=(1, 3), limit=40)
    assert [r.corruption for r in rows] == [
        "gaussian:0.05",
        "gaussian:0.1",
        "gaussian:0.2",
        "gaussian:0.3",
        "gaussian:0.5",
        "gaussian:0.75",
        "gaussian:1",
        "mask:0.1",
        "mask:0.3",
        "mask:0.5",
        "mask:0.7",
    ]
    assert {r.steps for r in rows} == {1}  # the reconstruction ignores steps: no duplicate rows
    assert all(
        r.num_images == 40 and all(math.isfinite(v) for v in (r.psnr, r.psnr_noisy, r.ssim, r.mse)) for r in rows
    )
    for kind in ("gaussian", "mask"):
        noisy = [r.psnr_noisy for r in rows if r.kind == kind]
        assert all(a > b for a, b in zip(noisy, noisy[1:], strict=False))  # more corruption, worse input
    assert rows[3].level == 0.3 and rows[8].kind == "mask"
    direct = denoising_metrics(models["dae"], digits_test, "mask:0.3", seed=0, limit=40)
    assert rows[8].psnr == direct["psnr"] and rows[8].ssim_noisy == direct["ssim_noisy"]
    # Every model sees the same noisy images at a level.
    vae_rows = denoising_sweep(models["vae"], digits_test, sigmas=(0.3,), mask_probabilities=(0.5,), limit=40)
    assert [r.psnr_noisy for r in vae_rows] == [rows[3].psnr_noisy, rows[9].psnr_noisy]


def test_denoising_sweep_of_diffusion_models(models, latent_diffusion, digits_test):
    rows = denoising_sweep(models["diffusion"], digits_test, sigmas=(0.1, 0.5, 1.0), steps=(1, 2), limit=16)
    assert [(r.level, r.steps) for r in rows] == [(0.1, 1), (0.1, 2), (0.5, 1), (0.5, 2), (1.0, 1), (1.0, 2)]
    assert all(r.kind == "gaussian" for r in rows)  # masking does not apply
    assert all(math.isfinite(n) for r in rows for n in numbers(encode(r)))
    assert rows[0].psnr_noisy == rows[1].psnr_noisy > rows[2].psnr_noisy
    # Latent diffusion denoises pixels too (encode, denoise the latent, decode): Gaussian rows, no masking.
    latent_rows = denoising_sweep(latent_diffusion, digits_test, sigmas=(0.1, 0.5), steps=(1, 2), limit=8)
    assert [(r.level, r.steps) for r in latent_rows] == [(0.1, 1), (0.1, 2), (0.5, 1), (0.5, 2)]
    assert all(r.kind == "gaussian" and r.num_images == 8 for r in latent_rows)
    assert all(math.isfinite(n) for r in latent_rows for n in numbers(encode(r)))
    # The same noisy images as the pixel model's at a level.
    assert (
        latent_rows[2].psnr_noisy
        == denoising_sweep(models["diffusion"], digits_test, sigmas=(0.5,), limit=8)[0].psnr_noisy
    )


# --- latent space ----------------------------------------------------------------------------------------
def test_latent_codes_are_posterior_means_with_labels(models, digits_test):
    vae = models["vae"]
    codes, labels = latent_codes(vae, digits_test, limit=50)
    assert codes.shape == (50, 8) and codes.dtype == np.float32 and labels.dtype == np.int64
    picked = spread_indices(len(digits_test), 50)
    assert np.array_equal(labels, digits_test.labels[picked].numpy())
    with torch.no_grad():
        mean, _ = vae.encode_distribution(digits_test.batch(picked)["images"])
    assert np.allclose(codes, mean.numpy(), atol=1e-6)
    noisy, _ = latent_codes(vae, digits_test, limit=50, corruption="gaussian:0.5", seed=3)
    again, _ = latent_codes(vae, digits_test, limit=50, corruption="gaussian:0.5", seed=3)
    assert np.array_equal(noisy, again) and not np.allclose(noisy, codes, atol=1e-3)


def test_probes_read_separable_blobs_and_not_random_labels():
    rng = np.random.default_rng(0)
    centres = rng.normal(scale=6.0, size=(10, 16))

    def blobs(n):
        labels = rng.integers(0, 10, n)
        return centres[labels] + rng.normal(size=(n, 16)), labels

    (x_train, y_train), (x_test, y_test) = blobs(500), blobs(300)
    assert knn_accuracy(x_train, y_train, x_test, y_test) > 0.97
    assert linear_probe_accuracy(torch.from_numpy(x_train), y_train, x_test, y_test) > 0.97
    shuffled_train, shuffled_test = rng.permutation(y_train), rng.permutation(y_test)
    assert knn_accuracy(x_train, shuffled_train, x_test, shuffled_test) < 0.25  # chance is 0.1
    assert linear_probe_accuracy(x_train, shuffled_train, x_test, shuffled_test) < 0.25


def test_latent_map_pca_and_umap():
    rng = np.random.default_rng(0)
    codes = rng.normal(size=(60, 5)) * np.array([5.0, 2.0, 0.1, 0.1, 0.1])
    coords = latent_map(codes)
    assert coords.shape == (60, 2) and coords.dtype == np.float32
    assert coords[:, 0].var() > coords[:, 1].var() > 1.0  # the two large directions, largest first
    assert latent_map(codes[:, :1]).shape == (60, 2)
    if umap_available():
        assert latent_map(codes, method="umap").shape == (60, 2)
    else:
        with pytest.raises(ConfigError, match="pip install umap-learn"):
            latent_map(codes, method="umap")
    with pytest.raises(ConfigError, match="pca"):
        latent_map(codes, method="tsne")


def test_latent_space_metrics_of_a_vae(models, digits_train, digits_test):
    result = latent_space_metrics(models["vae"], digits_train, digits_test, limit=200)
    assert (result.latent_dim, result.num_train, result.num_test) == (8, 200, 200)
    for accuracy in (result.knn_accuracy, result.linear_probe_accuracy):
        assert 0.0 <= accuracy <= 1.0
    assert result.linear_probe_accuracy > 0.2  # even 5 steps of training leave codes above chance (0.1)
    assert list(result.probe_accuracy_noisy) == ["0.2", "0.4", "0.6"]  # fixed in advance, not the model's
    assert result.per_image is None and "per_image" not in encode(result)
    kept = latent_space_metrics(models["vae"], digits_train, digits_test, limit=200, keep_per_image=True)
    assert kept.per_image.knn.mean() == pytest.approx(kept.knn_accuracy)
    assert kept.per_image.probe_noisy["0.6"].shape == (200,)
    assert "per_image" not in encode(kept)  # per-image arrays are never JSON


def test_knn_controls_rank_raw_pixels_above_a_tiny_random_projection(digits_train, digits_test):
    from aediff.evaluation.latents import knn_controls

    controls = knn_controls(digits_train, digits_test, dims=(1, 32), limit=300)
    assert set(controls) == {"raw pixels", "random projection 1", "random projection 32"}
    assert controls["raw pixels"].shape == (300,) and controls["raw pixels"].dtype == bool
    # one random direction loses most of the label; 64 pixels of 8x8 digits keep it
    assert controls["random projection 1"].mean() < controls["raw pixels"].mean() - 0.3


def test_interpolation_walks_from_one_reconstruction_to_another(models, digits_test):
    from aediff.evaluation.latents import _interpolation_pairs

    vae = models["vae"]
    grid = interpolation_grid(vae, digits_test, pairs=3, steps=5, seed=2)
    assert grid.shape == (15, 1, 8, 8) and grid.min() >= -1 and grid.max() <= 1
    pairs = _interpolation_pairs(digits_test.labels, len(digits_test), 3, torch.Generator().manual_seed(2))
    assert all(digits_test.labels[a] != digits_test.labels[b] for a, b in pairs)
    with torch.no_grad():
        ends = vae.reconstruct(digits_test.batch(torch.tensor([i for p in pairs for i in p]))["images"])
    assert torch.allclose(grid[0::5], ends[0::2], atol=1e-5) and torch.allclose(grid[4::5], ends[1::2], atol=1e-5)
    assert not torch.allclose(grid[1], grid[0], atol=1e-4)  # the path moves
    spatial = build_model("ae", {**AE_TINY, "image_size": 8, "latent": "spatial", "latent_channels": 2})
    assert interpolation_grid(spatial, digits_test, pairs=2, steps=4).shape == (8, 1, 8, 8)


# --- spectra ---------------------------------------------------------------------------------------------
def test_high_frequency_share_separates_smooth_from_noisy_images(digits_test):
    coords = torch.linspace(-1, 1, 16)
    smooth = torch.cos(torch.pi * coords)[None, None, :, None] * torch.cos(torch.pi * coords)[None, None, None, :]
    noise = torch.randn(64, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    share_smooth, share_noise = high_frequency_share(smooth), high_frequency_share(noise)
    assert share_smooth.shape == (1,) and share_noise.shape == (64,)
    assert share_smooth.item() < 0.01 and abs(share_noise.mean().item() - 0.80) < 0.05  # bins above 0.5 Nyquist
    assert high_frequency_share(torch.zeros(2, 1, 8, 8)).tolist() == [0.0, 0.0]  # no power: no share
    images = digits_test.batch(torch.arange(32))["images"]
    kernel = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]])[None, None] / 16
    blurred = torch.nn.functional.conv2d(images, kernel, padding=1)
    assert (high_frequency_share(blurred) < high_frequency_share(images)).all()
    shares = high_frequency_share(torch.cat([images, noise[:, :1, :8, :8]]))
    assert ((shares >= 0) & (shares <= 1)).all()


def test_predicted_x0_sweep_uses_one_noise_draw_and_the_null_condition(models, latent_diffusion, digits_test):
    model, images = models["diffusion"], digits_test.batch(torch.arange(6))["images"]
    sweep = predicted_x0_sweep(model, images, [0.2, 1.0, 5.0], seed=1)
    assert sweep.predictions.shape == sweep.noisy.shape == (3, 6, 1, 8, 8)
    eps = (sweep.noisy - images) / torch.tensor([0.2, 1.0, 5.0])[:, None, None, None, None]
    assert torch.allclose(eps[0], eps[2], atol=1e-4)
    with torch.no_grad():
        assert torch.allclose(sweep.predictions[1], model.predict_x0(sweep.noisy[1], 1.0), atol=1e-6)
    assert len(sweep.high_frequency_share) == 3 and 0 <= sweep.data_high_frequency_share <= 1
    conditioned = models["class_diffusion"]
    sweep = predicted_x0_sweep(conditioned, images, [0.5])
    null = conditioned.condition_inputs(6)["class_labels"]
    with torch.no_grad():
        expected = conditioned.predict_x0(sweep.noisy[0], 0.5, class_labels=null)
    assert torch.allclose(sweep.predictions[0], expected, atol=1e-6)
    # Latent diffusion denoises pixels too: its sweep is of images, told the pixel noise level.
    latent = predicted_x0_sweep(latent_diffusion, images, [0.5, 2.0])
    assert latent.predictions.shape == latent.noisy.shape == (2, 6, 1, 8, 8)
    with torch.no_grad():
        assert torch.allclose(latent.predictions[0], latent_diffusion.denoise(latent.noisy[0], 0.5), atol=1e-6)
    with pytest.raises(CapabilityError, match="noise level"):  # an autoencoder is not told the level
        predicted_x0_sweep(models["dae"], images, [0.5])


# --- gradient norms --------------------------------------------------------------------------------------
def test_gradient_norms_of_a_unet_in_network_order(models, digits_train):
    model = models["class_diffusion"]
    batch = digits_train.batch(torch.arange(16))
    model.eval()
    norms = gradient_norms(model, batch, seed=4)
    names = list(norms)
    assert names[0] == "embed_noise" and names[-1] == "decoder.out_conv"
    order = [
        names.index(n)
        for n in (
            "embed_class",
            "encoder.stem",
            "encoder.blocks.0",
            "encoder.downsamples.0",
            "encoder.attentions.1",
            "middle.0",
            "middle.1",
            "middle.2",
            "decoder.blocks.0",
            "decoder.upsamples.0",
            "decoder.out_norm",
        )
    ]
    assert order == sorted(order)
    assert "encoder.attentions.0" not in norms  # an identity slot has nothing to train
    assert all(math.isfinite(v) and v >= 0 for v in norms.values()) and sum(norms.values()) > 0
    assert gradient_norms(model, batch, seed=4) == norms  # seeded
    assert not model.training and all(p.grad is None for p in model.parameters())


def test_gradient_norms_match_a_direct_backward_and_keep_existing_grads(models, digits_train):
    model = models["dae"]
    model.train()
    batch = digits_train.batch(torch.arange(16))
    torch.manual_seed(9)
    loss, _ = model(batch)
    loss.backward()
    expected = torch.cat([p.grad.flatten() for p in model.decoder.out_conv.parameters()]).norm().item()
    before = [p.grad.clone() for p in model.parameters()]
    norms = gradient_norms(model, batch, seed=9)
    assert norms["decoder.out_conv"] == pytest.approx(expected, rel=1e-5)
    assert list(norms)[:2] == ["encoder.stem", "encoder.blocks.0"] and "to_latent" in norms
    assert model.training and all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), before, strict=True))
    model.zero_grad(set_to_none=True)
    model.eval()
    assert "log_sigma" in gradient_norms(models["vae"], batch)  # a parameter outside any block


# --- speed -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "sampler, steps, guidance, nfe",
    [("euler", 3, None, 3), ("heun", 3, None, 5), ("ddim", 4, None, 4), ("dpm++", 3, 2.0, 6)],
)
def test_sampling_speed_counts_network_evaluations(models, sampler, steps, guidance, nfe):
    from aediff.diffusion.samplers import SAMPLERS

    model = models["class_diffusion" if guidance else "diffusion"]
    condition = Condition(class_labels=3, guidance=guidance) if guidance else None
    result = sampling_speed(
        model, n=4, repeats=2, condition=condition, options=SamplerOptions(sampler=sampler, steps=steps)
    )
    assert result.nfe == nfe == SAMPLERS[sampler].evaluations(steps) * (2 if guidance else 1)
    assert result.images_per_second > 0
    assert result.seconds_per_image * result.images_per_second == pytest.approx(1.0)
    assert result.options["sampler"] == sampler and result.num_images == 4
    assert encode(result)["sampler"] == sampler  # the options sit beside the timings in metrics.json


def test_sampling_speed_of_a_vae_is_one_decoder_call(models):
    assert sampling_speed(models["vae"], n=8, repeats=1).nfe == 1


def test_training_summary_reads_the_run_folder(runs, loaded, tmp_path):
    result = read_training_summary(runs / "vae", batch_size=32)
    assert result.steps == 5 and result.images_seen == 5 * 32
    assert result.images_per_second == pytest.approx(160 / result.train_seconds)
    assert result.wall_seconds >= result.train_seconds > 0
    assert loaded["vae"].summary == result  # what aediff.load reports
    # Without the training state: the last line of log.jsonl
    (tmp_path / "config.json").write_text((runs / "vae" / "config.json").read_text())
    (tmp_path / "log.jsonl").write_text(
        json.dumps({"step": 25, "train_seconds": 2.0}) + "\n" + json.dumps({"step": 50, "train_seconds": 4.0}) + "\n"
    )
    result = read_training_summary(tmp_path, batch_size=32)
    assert (result.steps, result.images_per_second) == (50, 50 * 32 / 4.0)
    # No training record: no summary; a damaged one: a clear error.
    assert read_training_summary(tmp_path / "nothing", batch_size=32) is None
    (tmp_path / "log.jsonl").write_text('{"step": 50}\n')
    with pytest.raises(RunError, match="log.jsonl lacks 'train_seconds'"):
        read_training_summary(tmp_path, batch_size=32)


# --- evaluate_model and `aediff eval` --------------------------------------------------------------------
def test_evaluate_model_of_a_vae_has_every_section_and_only_finite_numbers(models, loaded, digits_train, digits_test):
    result = evaluate_model(
        loaded["vae"], digits_train, digits_test, classifier=loaded["classifier"], samples=30, limit=24
    )
    for section in (
        result.reconstruction,
        result.denoising,
        result.likelihood,
        result.latent_space,
        result.generation,
        result.sampling_speed,
        result.training_speed,
    ):
        assert section is not None, result.skipped
    assert result.skipped == {}
    text = json.dumps(result.to_json(), allow_nan=False)
    assert all(math.isfinite(n) for n in numbers(json.loads(text))) and "null" not in text
    generation = result.generation
    assert generation.num_samples == 30 and generation.num_reference == len(digits_test)
    assert 0 <= generation.precision <= 1 and 0 <= generation.recall <= 1 and generation.pr_k == 3
    assert generation.feature_extractor == "classifier" and generation.reference == "digits:test"
    assert list(result.generation_by_judge) == ["classifier", "classifier-layers"]  # a second judge sees blur
    balance = result.class_balance  # the judge's reading of the same 30 samples, against the test split's classes
    assert sum(balance.counts) == 30 and len(balance.counts) == 10 and 0 <= balance.p_value <= 1
    assert sum(balance.expected) == pytest.approx(30) and 0 <= balance.confident_share <= 1
    assert result.likelihood.num_images == 24 and result.reconstruction.num_images == 24
    assert result.parameters == sum(p.numel() for p in models["vae"].parameters())
    assert result.training_speed.steps == 5 and result.training_speed.images_seen == 5 * 32
    # Training speed comes from a run's record: a bare model has none.
    bare = evaluate_model(models["vae"], digits_train, digits_test, samples=20, limit=8)
    assert bare.training_speed is None and "training_speed" not in bare.skipped
    assert "training_speed" not in bare.to_json()


@pytest.mark.slow
def test_evaluate_model_of_diffusion_models(models, latent_diffusion, digits_train, digits_test):
    result = evaluate_model(
        models["class_diffusion"],
        digits_train,
        digits_test,
        classifier=models["classifier"],
        samples=20,
        limit=8,
        condition=Condition(guidance=2.0),
        options=SamplerOptions(steps=2),
    )
    assert {"denoising", "likelihood", "generation", "conditional", "sampling_speed"} <= set(result.to_json())
    assert result.latent_space is None and result.reconstruction is None
    assert result.conditional.per_class == 10 and 0 <= result.conditional.accuracy <= 1
    assert result.conditional.guidance == 2.0 and result.sampling_speed.nfe == 4
    assert result.generation.condition == "classes cycled"
    json.dumps(result.to_json(), allow_nan=False)
    result = evaluate_model(latent_diffusion, digits_train, digits_test, samples=4, limit=8)
    assert "generation" in result.skipped and "denoising" not in result.skipped
    assert result.denoising and all(r.kind == "gaussian" and r.num_images == 8 for r in result.denoising)
    assert result.sampling_speed.nfe == 3 and result.likelihood is None
    assert {"generate", "diffusion-sampler", "denoise", "noise-level"} <= set(result.capabilities)
    assert "diffusion-bound" not in result.capabilities and "latent" not in result.capabilities
    assert all(math.isfinite(n) for n in numbers(result.to_json()))


def test_eval_command_writes_the_metrics(runs, tmp_path, monkeypatch, capsys):
    out = tmp_path / "metrics.json"
    code, text = run_cli(
        monkeypatch,
        capsys,
        "eval",
        runs / "dae",
        "--data",
        "digits",
        "--classifier",
        runs / "classifier",
        "--samples",
        "20",
        "--limit",
        "16",
        "--out",
        out,
    )
    assert code == 0, text
    result = json.loads(out.read_text())
    assert result["format_version"] == 1 and ModelEvaluation.read(out).to_json() == result  # it reads back
    assert result["family"] == "dae" and result["generation"]["num_samples"] == 20
    assert result["reconstruction"]["num_images"] == 16 and result["run"] == str(runs / "dae")
    assert result["latent_space"]["num_test"] == len(aediff.data.load_dataset("digits", "test"))  # probes: >= 2,000
    assert "all numbers ->" in text and "denoising" in text
    assert result["reconstruction_fid_by_judge"]["classifier"]["num_samples"] == 20  # --samples reconstructions
    assert "rFID (classifier judge)" in text and "rFID (classifier-layers judge)" in text


def test_limited_evaluations_spread_over_a_split_stored_class_by_class():
    from aediff.data import ImageDataset
    from aediff.evaluation import iterate_images

    labels = torch.arange(10).repeat_interleave(50)  # sorted by class, like mnist5k
    dataset = ImageDataset(torch.zeros(500, 1, 4, 4, dtype=torch.uint8), labels)
    seen = torch.cat([b["labels"] for b in iterate_images(dataset, batch_size=7, limit=40)])
    assert len(seen) == 40 and set(seen.tolist()) == set(range(10))
    assert spread_indices(500, 40).unique().numel() == 40
    assert torch.equal(spread_indices(30, 100), torch.arange(30))
