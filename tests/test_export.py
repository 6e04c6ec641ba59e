"""ONNX export: each graph agrees with PyTorch in ONNX Runtime at several batch sizes (the batch axis is
dynamic), the ONNX-only sampler draws the images aediff's own Euler sampler draws, and `aediff export`
behaves as every command does (usage mistakes exit 2 in one line, an existing --out is kept)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import aediff
from aediff.diffusion.samplers import SamplerOptions, run_sampler
from aediff.models import CapabilityError, Condition

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from aediff.export import MANIFEST_FILE, export_onnx  # noqa: E402  (after the skip: needs onnx)
from aediff.export.onnx_sampler import karras_sigmas, sample_euler  # noqa: E402

V1 = Path(__file__).parent / "fixtures" / "v1-runs"
SMALL = ["channels=8,16"]
SMALL_DIFFUSION = [*SMALL, "attention_resolutions=4", "embedding_dim=16", "steps=3"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_runs):
    """An AE, a VAE and a class-conditioned diffusion model on digits (8x8), a few steps each."""
    root = tmp_path_factory.mktemp("export-runs")
    tiny_runs(
        root,
        [
            ("ae", "ae", {"bottleneck": 8}, SMALL),
            ("vae", "vae", {"bottleneck": 8}, SMALL),
            ("diffusion", "diffusion", {"condition": "class"}, SMALL_DIFFUSION),
        ],
        steps=10,
    )
    return root


@pytest.fixture(scope="module")
def exported(runs, tmp_path_factory):
    """run name -> (loaded model, export folder)."""
    out = tmp_path_factory.mktemp("exported")
    folders = {}
    for name in ("ae", "vae", "diffusion"):
        model = aediff.load(runs / name, device="cpu").model
        export_onnx(model, out / name)
        folders[name] = (model, out / name)
    return folders


def session(path: Path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("name", ["ae", "vae"])
def test_encoder_and_decoder_match_pytorch_at_any_batch_size(exported, name):
    model, folder = exported[name]
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    assert set(manifest["files"]) == {"encoder.onnx", "decoder.onnx"}
    assert all(f["max_abs_diff"] < 1e-4 for f in manifest["files"].values())
    encoder, decoder = session(folder / "encoder.onnx"), session(folder / "decoder.onnx")
    for n in (1, 5):
        images = torch.rand(n, *model.image_shape) * 2 - 1
        with torch.no_grad():
            z, back = model.encode(images), model.decode(model.encode(images))  # a VAE: the posterior mean
        (z_onnx,) = encoder.run(None, {"images": images.numpy()})
        (back_onnx,) = decoder.run(None, {"latent": z_onnx})
        assert z_onnx.shape == tuple(z.shape) and np.abs(z_onnx - z.numpy()).max() < 1e-4
        assert np.abs(back_onnx - back.numpy()).max() < 1e-4


def test_the_class_conditioned_denoiser_matches_pytorch_at_several_sigmas_and_batch_sizes(exported):
    model, folder = exported["diffusion"]
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    assert manifest["num_classes"] == 10 and manifest["sampler"]["null_class"] == 10
    low, high = manifest["sampler"]["sigma_range"]
    assert 0 < low < high
    assert list(manifest["files"]["denoiser.onnx"]["inputs"]) == ["x", "sigma", "class_labels"]
    denoiser = session(folder / "denoiser.onnx")
    for n, sigma in [(1, low), (4, 0.5), (7, 3.0), (2, high)]:
        x = torch.randn(n, *model.image_shape) * sigma
        labels = torch.arange(n) % 11  # 10 = the null class
        with torch.no_grad():
            expected = model.sampling_network()(x, torch.full((n,), sigma), class_labels=labels)
        (got,) = denoiser.run(
            None, {"x": x.numpy(), "sigma": np.full(n, sigma, np.float32), "class_labels": labels.numpy()}
        )
        assert np.abs(got - expected.numpy()).max() < 1e-4, (n, sigma)


@pytest.mark.parametrize("guidance", [1.0, 2.0])
def test_the_onnx_only_sampler_draws_the_images_pytorch_draws(exported, guidance):
    model, folder = exported["diffusion"]
    options = model.sampler_plan(SamplerOptions(sampler="euler", steps=6))
    sigmas = model.sampling_sigmas(options)
    noise = torch.randn(4, *model.image_shape, generator=torch.Generator().manual_seed(1))
    condition = Condition(class_labels=[3, 1, 4, 1], guidance=guidance)
    with torch.no_grad():
        x = run_sampler(options, model.guided_denoiser(4, condition), sigmas[0] * noise, sigmas)
        expected = model.output_images(x).numpy()
    got = sample_euler(folder, noise.numpy(), sigmas.numpy(), class_labels=np.array([3, 1, 4, 1]), guidance=guidance)
    assert got.shape == expected.shape and np.abs(got - expected).max() < 1e-3


@pytest.mark.parametrize("classes", ["cycle", "null"])
def test_asked_for_no_class_the_onnx_sampler_draws_what_sample_draws(exported, tmp_path, classes):
    """No class_labels: the export's own draw, as ``model.sample`` makes it (every class in turn, guided; or the
    null class, unguided), so a manifest edited to the other draw gives the other images."""
    import shutil

    model, folder = exported["diffusion"]
    assert json.loads((folder / MANIFEST_FILE).read_text())["sampler"]["classes"] == "cycle"
    copy = tmp_path / "export"
    shutil.copytree(folder, copy)
    manifest = json.loads((copy / MANIFEST_FILE).read_text())
    manifest["sampler"]["classes"] = classes
    (copy / MANIFEST_FILE).write_text(json.dumps(manifest))
    options = model.sampler_plan(SamplerOptions(sampler="euler", steps=4))
    sigmas = model.sampling_sigmas(options)
    noise = torch.randn(12, *model.image_shape, generator=torch.Generator().manual_seed(2))
    labels = torch.arange(12) % 10 if classes == "cycle" else None  # None: the null class, never guided
    condition = Condition(class_labels=labels, guidance=2.0)
    with torch.no_grad():
        x = run_sampler(options, model.guided_denoiser(12, condition), sigmas[0] * noise, sigmas)
        expected = model.output_images(x).numpy()
    got = sample_euler(copy, noise.numpy(), sigmas.numpy(), guidance=2.0)
    assert np.abs(got - expected).max() < 1e-3


def test_a_graph_that_fails_its_check_leaves_the_earlier_export_as_it_was(exported, tmp_path, monkeypatch):
    import shutil

    from aediff.export import onnx as onnx_export
    from aediff.export.onnx import ExportError

    model, folder = exported["vae"]
    copy = tmp_path / "export"
    shutil.copytree(folder, copy)
    before = {p.name: p.read_bytes() for p in copy.iterdir()}

    def unfaithful(graph, onnx_bytes):
        raise ExportError(f"{graph.file}: ONNX Runtime and PyTorch differ")

    monkeypatch.setattr(onnx_export, "_check", unfaithful)
    with pytest.raises(ExportError):
        export_onnx(model, copy)
    assert {p.name: p.read_bytes() for p in copy.iterdir()} == before  # no partial graph, no temporary


def test_karras_sigmas_are_aediffs():
    from aediff.diffusion.schedules import karras_sigmas as torch_karras

    assert np.allclose(karras_sigmas(5, 0.002, 80.0), torch_karras(5, 0.002, 80.0).numpy(), rtol=1e-12)


def test_a_latent_diffusion_model_exports_its_denoiser_and_its_way_to_images(tmp_path):
    model = aediff.load(V1 / "latent-diffusion", device="cpu").model
    result = export_onnx(model, tmp_path)
    assert set(result.max_abs_diff) == {"denoiser.onnx", "to_images.onnx"}
    assert max(result.max_abs_diff.values()) < 1e-4
    images = sample_euler(tmp_path, np.random.default_rng(0).standard_normal((2, *model.space_shape)), steps=3)
    assert images.shape == (2, *model.image_shape) and np.abs(images).max() <= 1


@pytest.mark.parametrize("guidance", [1.0, 2.0])
def test_a_text_conditioned_model_exports_its_caption_encoder_and_samples_from_prompts(tmp_path, guidance):
    """text_encoder.onnx is the learned encoder (checked on captions of other lengths than it was traced with,
    one longer than max_length), and the ONNX-only sampler draws from prompts what aediff draws."""
    from aediff.export.onnx import _TextEncoder
    from aediff.export.onnx_sampler import tokenize

    model = aediff.load(V1 / "diffusion-text", device="cpu").model
    result = export_onnx(model, tmp_path)
    assert set(result.max_abs_diff) == {"text_encoder.onnx", "denoiser.onnx"}
    assert max(result.max_abs_diff.values()) < 1e-4
    encoder = model.text_encoder
    captions = ["", "a seven", "x" * 200, "zero, drawn thick and round"]
    ids = tokenize(captions, result.manifest["text"]["max_length"])
    assert torch.equal(torch.from_numpy(ids), encoder.tokenizer(captions)[0])
    with torch.no_grad():
        tokens, pooled = _TextEncoder(encoder)(torch.from_numpy(ids))
        reference = encoder(captions)
    assert torch.allclose(tokens, reference.tokens, atol=1e-5) and torch.allclose(pooled, reference.pooled, atol=1e-5)
    got_tokens, _ = session(tmp_path / "text_encoder.onnx").run(None, {"ids": ids})
    assert np.abs(got_tokens - reference.tokens.numpy()).max() < 1e-4

    options = model.sampler_plan(SamplerOptions(sampler="euler", steps=5))
    sigmas = model.sampling_sigmas(options)
    noise = torch.randn(3, *model.space_shape, generator=torch.Generator().manual_seed(2))
    prompts = ["a three", "the digit one", "four"]
    with torch.no_grad():
        denoiser = model.guided_denoiser(3, Condition(prompts=prompts, guidance=guidance))
        expected = model.output_images(run_sampler(options, denoiser, sigmas[0] * noise, sigmas)).numpy()
    got = sample_euler(tmp_path, noise.numpy(), sigmas.numpy(), prompts=prompts, guidance=guidance)
    assert got.shape == expected.shape and np.abs(got - expected).max() < 1e-3
    with pytest.raises(ValueError, match="not class-conditioned"):
        sample_euler(tmp_path, noise.numpy(), steps=2, class_labels=3)


def test_what_cannot_be_exported_is_refused_by_name(tmp_path):
    from types import SimpleNamespace

    from aediff.export.onnx import _learned_text_encoder

    with pytest.raises(CapabilityError, match="encode and decode"):
        export_onnx(aediff.load(V1 / "classifier", device="cpu").model, tmp_path)
    frozen = SimpleNamespace(text_encoder=SimpleNamespace(name="minilm"))  # a model with the frozen MiniLM encoder
    with pytest.raises(CapabilityError, match="frozen 'minilm'"):
        _learned_text_encoder(frozen)


# --- the command line, as a user types it ---------------------------------------------------------------
def aediff_cli(*args) -> tuple[int, str]:
    env = {**os.environ, "COLUMNS": "80", "NO_COLOR": "1"}
    env.pop("AEDIFF_DEBUG", None)
    done = subprocess.run(
        [sys.executable, "-m", "aediff.cli", *map(str, args)], capture_output=True, text=True, timeout=120, env=env
    )
    return done.returncode, done.stdout + done.stderr


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.lower().startswith(("error", "internal error"))]


@pytest.mark.slow
def test_the_export_command_writes_checked_graphs_and_keeps_an_existing_out(runs, tmp_path):
    out = tmp_path / "onnx"
    code, text = aediff_cli("export", runs / "vae", "--format", "onnx", "--out", out)
    assert code == 0, text
    assert "encoder.onnx" in text and "decoder.onnx" in text and "max |ONNX Runtime - PyTorch|" in text
    assert sorted(p.name for p in out.iterdir()) == ["decoder.onnx", "encoder.onnx", MANIFEST_FILE]
    before = (out / MANIFEST_FILE).read_bytes()
    code, text = aediff_cli("export", runs / "vae", "--out", out)
    assert code == 1 and len(error_lines(text)) == 1 and "--overwrite" in text and "Traceback" not in text
    assert (out / MANIFEST_FILE).read_bytes() == before
    code, text = aediff_cli("export", runs / "vae", "--out", out, "--overwrite")
    assert code == 0, text


def test_an_unknown_format_is_a_usage_error(runs, tmp_path):
    code, text = aediff_cli("export", runs / "vae", "--format", "tflite", "--out", tmp_path / "x")
    assert code == 2 and len(error_lines(text)) == 1 and "'tflite' is not one of" in text, text
    assert "Traceback" not in text and not (tmp_path / "x").exists()


def test_without_onnxruntime_the_command_says_how_to_install_it(tmp_path):
    hide = "import sys; sys.modules['onnxruntime'] = None; sys.argv = sys.argv[1:]; from aediff.cli import main; main()"
    done = subprocess.run(
        [sys.executable, "-c", hide, "aediff", "export", V1 / "vae", "--out", tmp_path / "x"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "80", "NO_COLOR": "1"},
    )
    text = done.stdout + done.stderr
    assert done.returncode == 2 and len(error_lines(text)) == 1 and "pip install 'aediff[export]'" in text, text
