"""The VQ-VAE (aediff.models.vqvae): the quantiser against hand and brute-force computations, then the family end
to end on tiny colour images made here (train, load, resume exactly, export, serve, latent diffusion on it)."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import aediff
from aediff.errors import ConfigError
from aediff.evaluation import codebook_metrics
from aediff.evaluation.results import CodebookUsage, ModelEvaluation
from aediff.metrics import codebook_perplexity, codebook_usage
from aediff.models import Capability, VectorQuantizer, build_model
from aediff.training.train import train

TINY = {"channels": (8, 16), "latent_channels": 3, "codebook_size": 32}
QUICK = {"batch_size": 8, "lr": 3e-3, "warmup_steps": 2, "log_every": 1, "checkpoint_every": 1000,
         "preview_every": 0, "tensorboard": False}  # fmt: skip


def quantizer(codebook, decay=0.5, epsilon=1e-5, threshold=0.0) -> VectorQuantizer:
    """A quantiser whose codebook is ``codebook`` [K, D], in its initial EMA state (N_k = 1, m_k = e_k)."""
    codebook = torch.as_tensor(codebook, dtype=torch.float32)
    q = VectorQuantizer(len(codebook), codebook.shape[1], decay, epsilon, threshold)
    q.codebook.copy_(codebook)
    q.code_sum.copy_(codebook)
    return q


def as_latent(vectors) -> torch.Tensor:
    """Vectors [M, D] as a latent [1, D, 1, M] (M positions of one image)."""
    return torch.as_tensor(vectors, dtype=torch.float32).T[None, :, None, :]


# --- the quantiser ---------------------------------------------------------------------------------------------
def test_the_nearest_code_is_the_brute_force_argmin():
    g = torch.Generator().manual_seed(0)
    q = quantizer(torch.randn(64, 5, generator=g))
    z = torch.randn(6, 5, 3, 4, generator=g) * 1.5
    vectors = z.permute(0, 2, 3, 1).reshape(-1, 5).double()
    brute = ((vectors[:, None, :] - q.codebook.double()[None]) ** 2).sum(-1).argmin(1)
    assert torch.equal(q.indices(z).flatten(), brute)
    assert torch.equal(q.quantize(z).permute(0, 2, 3, 1).reshape(-1, 5), q.codebook[brute])


def test_the_straight_through_gradient_reaches_the_encoder():
    q = quantizer(torch.randn(8, 3)).eval()
    z = torch.randn(2, 3, 2, 2, requires_grad=True)
    weights = torch.randn(2, 3, 2, 2)
    (q(z).straight_through * weights).sum().backward()
    assert torch.equal(z.grad, weights)  # the decoder's gradient is copied onto z_e unchanged

    model = build_model("vqvae", {**TINY, "image_size": 8, "image_channels": 3})
    x = torch.rand(4, 3, 8, 8) * 2 - 1
    reconstruction = model.decoder_output(model.quantizer(model.encoder_head(x)).straight_through)
    torch.nn.functional.mse_loss(reconstruction, x).backward()  # the reconstruction term alone
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.encoder.parameters())


def test_the_ema_update_matches_a_hand_computation_on_two_codes():
    eps = 1e-3
    q = quantizer([[0.0, 0.0], [10.0, 10.0]], decay=0.5, epsilon=eps).train()
    out = q(as_latent([[1.0, 1.0], [2.0, 2.0], [9.0, 9.0]]))
    assert out.indices.flatten().tolist() == [0, 0, 1] and out.counts.tolist() == [2, 1]
    # N = 0.5 * 1 + 0.5 * (2, 1); m = 0.5 * e + 0.5 * (sum of the vectors assigned)
    n = torch.tensor([1.5, 1.0])
    m = torch.tensor([[1.5, 1.5], [9.5, 9.5]])
    smoothed = (n + eps) / (n.sum() + 2 * eps) * n.sum()
    assert torch.allclose(q.cluster_size, n) and torch.allclose(q.code_sum, m)
    assert torch.allclose(q.codebook, m / smoothed[:, None], atol=1e-6)
    # the commitment term is measured against the codes the batch was quantised with, before the update
    assert torch.isclose(out.commitment, torch.tensor((2 + 2 * 4 + 2) / 6))


def test_the_codebook_stays_put_in_eval_mode():
    q = quantizer([[0.0, 0.0], [10.0, 10.0]], threshold=5.0).eval()
    before = {k: v.clone() for k, v in q.state_dict().items()}
    q(as_latent([[1.0, 1.0], [2.0, 2.0]]))
    assert all(torch.equal(before[k], v) for k, v in q.state_dict().items())


@pytest.mark.parametrize("threshold,restarted", [(0.9, True), (0.4, False)])
def test_an_unused_code_below_the_threshold_restarts_at_a_batch_vector(threshold, restarted):
    """Code 1 is never picked: its EMA cluster size halves to 0.5, below 0.9 (restart) but not below 0.4. Code 0,
    picked three times (N = 0.5 * 1 + 0.5 * 3 = 2, m = 0.5 * 0 + 0.5 * 6 per coordinate), never restarts."""
    vectors = [[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]]
    q = quantizer([[0.0, 0.0], [100.0, 100.0]], decay=0.5, threshold=threshold).train()
    torch.manual_seed(7)
    q(as_latent(vectors))
    assert q.cluster_size[0] == 2 and torch.allclose(q.codebook[0], torch.tensor([1.5, 1.5]), atol=1e-4)
    if restarted:
        assert q.codebook[1].tolist() in vectors and torch.equal(q.code_sum[1], q.codebook[1])
        assert q.cluster_size[1] == 1
        again = quantizer([[0.0, 0.0], [100.0, 100.0]], decay=0.5, threshold=threshold).train()
        torch.manual_seed(7)
        again(as_latent(vectors))
        assert torch.equal(again.codebook, q.codebook)  # the same seed, the same restart
    else:
        assert q.cluster_size[1] == 0.5 and q.codebook[1, 0] > 90


def test_usage_and_perplexity_of_known_counts():
    assert codebook_usage(torch.tensor([2, 2, 0, 0])) == 0.5
    assert torch.isclose(codebook_perplexity(torch.tensor([2, 2, 0, 0])), torch.tensor(2.0))
    assert codebook_usage(torch.tensor([4, 0, 0, 0])) == 0.25 and codebook_perplexity(torch.tensor([4, 0, 0, 0])) == 1
    assert torch.isclose(codebook_perplexity(torch.ones(16)), torch.tensor(16.0))
    p = torch.tensor([0.5, 0.25, 0.25])
    assert torch.isclose(codebook_perplexity(torch.tensor([2, 1, 1])), torch.exp(-(p * p.log()).sum()))
    # the model logs the same numbers for a batch whose assignment is known
    model = build_model("vqvae", {**TINY, "image_size": 8, "image_channels": 3, "codebook_size": 4})
    model.quantizer.codebook.copy_(torch.eye(4, 3) * 10)
    out = model.quantizer.eval()(as_latent([[10.0, 0, 0], [10.0, 0, 0], [0, 10.0, 0], [0, 10.0, 0]]))
    assert codebook_usage(out.counts) == 0.5 and torch.isclose(codebook_perplexity(out.counts), torch.tensor(2.0))


# --- the family end to end, on tiny colour images ---------------------------------------------------------------
def colour_images(n: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """n RGB 8x8 images [n, 8, 8, 3] uint8: a flat colour with a 4x4 square, lighter (class 1) or darker (0)."""
    rng = np.random.default_rng(0)
    labels = np.arange(n) % 2
    images = np.zeros((n, 8, 8, 3), np.uint8)
    for i in range(n):
        colour = rng.integers(0, 256, 3)
        images[i] = colour
        r, c = rng.integers(0, 5, 2)
        images[i, r : r + 4, c : c + 4] = 255 - colour if labels[i] else colour // 3
    return images, labels


@pytest.fixture(scope="module")
def colour(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("colour") / "colour.npz"
    images, labels = colour_images()
    np.savez(path, images=images, labels=labels)
    return f"npz:{path}"


@pytest.fixture(scope="module")
def vq_run(colour, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("vq") / "vqvae"
    train("vqvae", out, colour, model=TINY, training={**QUICK, "max_steps": 8}, progress=False)
    return out


def test_a_trained_run_loads_from_its_folder_with_its_codebook(vq_run):
    config = json.loads((vq_run / "config.json").read_text())
    assert config["family"] == "vqvae" and config["model"]["codebook_size"] == 32
    assert config["model"]["image_channels"] == 3 and config["model"]["latent"] == "spatial"
    stored = load_file(str(vq_run / "ema.safetensors"))
    assert {"quantizer.codebook", "quantizer.cluster_size", "quantizer.code_sum"} <= set(stored)
    model = aediff.load(vq_run, device="cpu").model
    assert all(torch.equal(stored[k], v) for k, v in model.state_dict().items())
    assert not torch.equal(stored["quantizer.cluster_size"], torch.ones(32))  # the EMA moved
    again = aediff.load(vq_run, device="cpu").model
    x = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    z = model.encode(x)
    assert z.shape == (3, 3, 4, 4) and torch.equal(z, again.encode(x)) and torch.equal(model.decode(z), again.decode(z))
    # encode gives code vectors: each position is a row of the codebook, and decoding quantises (a no-op on codes)
    rows = z.permute(0, 2, 3, 1).reshape(-1, 3)
    assert torch.equal(rows, model.quantizer.codebook[model.code_indices(x).flatten()])
    assert torch.equal(model.decode(z + 1e-4), model.decode(z))
    assert model.sample(4, generator=torch.Generator().manual_seed(0)).shape == (4, 3, 8, 8)


def test_the_training_log_has_the_codebook_numbers(vq_run):
    log = [json.loads(line) for line in (vq_run / "log.jsonl").read_text().splitlines()]
    for record in log:
        assert {"mse", "commitment", "codebook_usage", "perplexity"} <= set(record)
        assert 0 < record["codebook_usage"] <= 1 and 1 <= record["perplexity"] <= 32


def test_an_interrupted_and_resumed_run_equals_an_uninterrupted_one(colour, tmp_path):
    """Dead codes restart in every step here (32 codes, 128 latent vectors per batch, threshold 1): the
    restarts' draws must come back on resume too."""
    config = {**QUICK, "max_steps": 6}
    train("vqvae", tmp_path / "full", colour, model=TINY, training=config, progress=False)

    def ctrl_c_at_step_3(trainer, step, logs):
        if step == 3:
            os.kill(os.getpid(), signal.SIGINT)  # a real Ctrl-C: the trainer finishes the step and saves

    part = train("vqvae", tmp_path / "part", colour, model=TINY, training=config, progress=False,
                 callbacks=[ctrl_c_at_step_3])  # fmt: skip
    assert part.interrupted and part.step == 3
    assert train(None, tmp_path / "part", resume=True, progress=False).step == 6
    for name in ("model.safetensors", "ema.safetensors"):
        a, b = load_file(str(tmp_path / "full" / name)), load_file(str(tmp_path / "part" / name))
        assert a.keys() == b.keys()
        for key in a:
            assert torch.allclose(a[key].float(), b[key].float(), atol=1e-4 if torch.cuda.is_available() else 1e-6), key


def test_codebook_usage_over_a_data_set_is_reported_typed(vq_run, colour):
    from aediff.data import load_dataset

    model = aediff.load(vq_run, device="cpu").model
    assert model.can(Capability.CODEBOOK) and model.codebook_size == 32
    test = load_dataset(colour, "test")
    measured = codebook_metrics(model, test, batch_size=3)
    counts = torch.bincount(model.code_indices(test.batch(torch.arange(len(test)))["images"]).flatten(), minlength=32)
    assert measured["num_images"] == len(test) and measured["num_vectors"] == len(test) * 16
    assert measured["codes_used"] == int((counts > 0).sum()) and measured["usage"] == measured["codes_used"] / 32
    assert measured["perplexity"] == pytest.approx(codebook_perplexity(counts).item())
    section = CodebookUsage(**measured)
    with pytest.raises(aediff.ConfigError, match="quantise"):
        codebook_metrics(build_model("ae", {"image_size": 8, "channels": (8, 16)}), test)
    evaluation = ModelEvaluation.from_json({**_minimal_evaluation(), "codebook": measured})
    assert evaluation.codebook == section and ModelEvaluation.from_json(evaluation.to_json()).codebook == section


def _minimal_evaluation() -> dict:
    return {
        "format_version": 1, "family": "vqvae", "capabilities": ["codebook"], "parameters": 1,
        "trainable_parameters": 1, "data": {"reference": "x:test", "num_test": 1, "num_train": 1},
        "settings": {"samples": 0, "seed": 0, "limit": None},
    }  # fmt: skip


def test_onnx_export_round_trip(vq_run, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from aediff.export import export_onnx

    model = aediff.load(vq_run, device="cpu").model
    export_onnx(model, tmp_path)
    encoder = ort.InferenceSession(str(tmp_path / "encoder.onnx"), providers=["CPUExecutionProvider"])
    decoder = ort.InferenceSession(str(tmp_path / "decoder.onnx"), providers=["CPUExecutionProvider"])
    x = torch.rand(5, 3, 8, 8, generator=torch.Generator().manual_seed(2)) * 2 - 1
    with torch.no_grad():
        z, back = model.encode(x), model.reconstruct(x)
    (z_onnx,) = encoder.run(None, {"images": x.numpy()})
    (back_onnx,) = decoder.run(None, {"latent": z_onnx})
    assert np.abs(z_onnx - z.numpy()).max() < 1e-5 and np.abs(back_onnx - back.numpy()).max() < 1e-4


def test_latent_diffusion_trains_on_a_vqvae_and_samples_images(vq_run, colour, tmp_path):
    model = {"channels": (8, 16), "attention_resolutions": (2,), "embedding_dim": 16, "steps": 3,
             "autoencoder.path": str(vq_run)}  # fmt: skip
    train("latent-diffusion", tmp_path / "ld", colour, model=model, training={**QUICK, "max_steps": 3}, progress=False)
    run = aediff.load(tmp_path / "ld", device="cpu")
    assert run.config.autoencoder.family == "vqvae" and run.model.space_shape == (3, 4, 4)
    x = torch.rand(2, 3, 8, 8) * 2 - 1
    latent = run.model.diffusion_input(x) / run.config.latent_scale
    assert torch.allclose(latent, run.model.autoencoder.encode(x))  # it diffuses in the quantised space
    samples = run.model.sample(2, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (2, 3, 8, 8) and samples.abs().max() <= 1


def test_the_web_page_lists_and_draws_from_a_vqvae(vq_run):
    from aediff.app import handlers

    catalog = handlers.Catalog.open([vq_run.parent])
    assert catalog.names(Capability.GENERATE) == ["vqvae"] and catalog.names(Capability.LATENT) == ["vqvae"]
    assert "vqvae" in handlers.describe(catalog)
    grid, _, text = list(handlers.generate(catalog, handlers.GenerateRequest("vqvae", count=4)))[-1]
    assert grid is not None and "vqvae" in text


# --- bad input -----------------------------------------------------------------------------------------------------
def test_bad_configs_are_refused_with_the_fix(colour, tmp_path):
    with pytest.raises(ConfigError, match=r"codebook_size must be a whole number in \[1, "):
        build_model("vqvae", {"codebook_size": 0})
    with pytest.raises(ConfigError, match="--latent spatial"):
        build_model("vqvae", {"latent": "vector"})
    with pytest.raises(ConfigError, match="codebook_decay"):
        build_model("vqvae", {"codebook_decay": 1.0})
    with pytest.raises(ConfigError, match="codebook_epsilon"):
        build_model("vqvae", {"codebook_epsilon": 0.0})
    # 32 training images x 4x4 latent positions = 512 latent vectors: 513 codes could never all be used
    with pytest.raises(ConfigError, match=r"codebook_size 513 is more than the 512 latent vectors.*codebook_size=512"):
        train("vqvae", tmp_path / "big", colour, model={**TINY, "codebook_size": 513}, training=QUICK, progress=False)
    assert not (tmp_path / "big").exists()  # refused before anything was written
