"""aediff export --format diffusers: diffusers loads the folder and its scheduler (Euler, DDIM or
DPM-Solver++(2M)), driving aediff's denoiser, draws the images `aediff sample` draws with the matching
sampler from the same noise."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch
from typer.testing import CliRunner

pytest.importorskip("diffusers")

from aediff import load  # noqa: E402
from aediff.cli import app  # noqa: E402
from aediff.diffusion.samplers import SamplerOptions  # noqa: E402
from aediff.models import Capability, Condition  # noqa: E402

TOLERANCE = 1e-4  # largest |pipeline - aediff sample| accepted, images in [0, 1]


RUNS = {  # name -> (CLI flags, model assignments): the default cosine / v model, and a class-conditioned edm one
    "cosine-v": ({}, []),
    "edm-class": ({"condition": "class"}, ["schedule=edm", "parameterization=edm"]),
}
EXPORTS = [  # (run, --sampler): ddim needs a discrete schedule, so the edm run has none
    ("cosine-v", "euler"),
    ("cosine-v", "ddim"),
    ("cosine-v", "dpm++"),
    ("edm-class", "euler"),
    ("edm-class", "dpm++"),
]
SCHEDULER_CLASSES = {"euler": "EulerDiscreteScheduler", "ddim": "DDIMScheduler", "dpm++": "DPMSolverMultistepScheduler"}


def export(run_dir, out, *flags):
    return CliRunner().invoke(app, ["export", str(run_dir), "--format", "diffusers", "--out", str(out), *flags])


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_runs):
    """(run name, sampler) -> (run folder, exported diffusers folder), made with `aediff export --format
    diffusers --sampler S`."""
    from conftest import TINY_DIFFUSION

    root = tmp_path_factory.mktemp("diffusers")
    specs = [(name, "diffusion", flags, [*TINY_DIFFUSION, *extra]) for name, (flags, extra) in RUNS.items()]
    tiny_runs(root, specs, steps=10)
    folders = {}
    for name, sampler in EXPORTS:
        out = root / f"{name}-{sampler}"
        result = export(root / name, out, "--sampler", sampler)
        assert result.exit_code == 0, result.output
        folders[name, sampler] = (root / name, out)
    return folders


def test_folder_layout(exported):
    _, out = exported["cosine-v", "euler"]
    index = json.loads((out / "model_index.json").read_text())
    assert index["scheduler"] == ["diffusers", "EulerDiscreteScheduler"]
    assert (out / "pipeline.py").is_file()
    assert (out / "denoiser" / "diffusion_pytorch_model.safetensors").is_file()
    assert json.loads((out / "scheduler" / "scheduler_config.json").read_text())["prediction_type"] == "sample"
    result = export(exported["cosine-v", "euler"][0], out)
    assert result.exit_code != 0 and "--overwrite" in str(result.exception)
    for (_, sampler), (_, folder) in exported.items():
        index = json.loads((folder / "model_index.json").read_text())
        assert index["scheduler"] == ["diffusers", SCHEDULER_CLASSES[sampler]]


@pytest.mark.parametrize("name,sampler", EXPORTS)
def test_pipeline_matches_aediff_sampler(exported, name, sampler):
    """diffusers' scheduler over aediff's denoiser draws aediff's images from the same noise. 5 steps: DDIM's
    trailing timesteps match aediff's only for a step count that divides the schedule's 1000."""
    from diffusers import DiffusionPipeline

    run_dir, out = exported[name, sampler]
    pipe = DiffusionPipeline.from_pretrained(out, custom_pipeline=str(out / "pipeline.py"), trust_remote_code=True)
    pipe.set_progress_bar_config(disable=True)
    model = load(run_dir).model.cpu()
    steps, n = 5, 4
    labels = torch.arange(n) % 10 if model.can(Capability.CLASS_CONDITION) else None
    condition = Condition(class_labels=labels) if labels is not None else None
    options = SamplerOptions(sampler=sampler, steps=steps)
    theirs = pipe(batch_size=n, num_inference_steps=steps, generator=torch.Generator().manual_seed(3),
                  class_labels=labels, output_type="pt").images  # fmt: skip
    ours = (model.sample(n, condition, options, generator=torch.Generator().manual_seed(3)) + 1) / 2
    assert theirs.shape == ours.shape == (n, *model.image_shape)
    assert torch.isfinite(theirs).all()
    difference = (theirs - ours).abs().max().item()
    print(f"{name} {sampler}: max |diffusers - aediff| = {difference:.3g}")
    assert difference < TOLERANCE
    other = (model.sample(n, condition, SamplerOptions(sampler="heun", steps=steps),
                          generator=torch.Generator().manual_seed(3)) + 1) / 2  # fmt: skip
    assert (theirs - other).abs().max() > 100 * TOLERANCE  # the tolerance tells samplers apart
    arrays = pipe(batch_size=2, num_inference_steps=3, output_type="np").images
    assert arrays.shape == (2, *model.image_shape[1:], model.image_shape[0])


def test_ddim_export_of_an_edm_run_is_refused_and_keeps_the_earlier_export(exported):
    run_dir, out = exported["edm-class", "euler"]
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    result = export(run_dir, out, "--sampler", "ddim", "--overwrite")
    assert result.exit_code != 0
    assert "edm" in str(result.exception) and "--sampler euler" in str(result.exception)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_sampler_needs_the_diffusers_format(exported, tmp_path):
    run_dir, _ = exported["cosine-v", "euler"]
    result = CliRunner().invoke(app, ["export", str(run_dir), "--sampler", "ddim", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "--format diffusers" in result.output
    assert not (tmp_path / "o").exists()


def test_export_refuses_non_diffusion(tmp_path, tiny_runs, monkeypatch, capsys):
    from aediff import cli
    from conftest import TINY

    tiny_runs(tmp_path, [("ae", "ae", {"bottleneck": 8}, TINY)], steps=2)
    monkeypatch.setattr(sys, "argv", ["aediff", "export", str(tmp_path / "ae"), "--format", "diffusers",
                                      "--out", str(tmp_path / "o")])  # fmt: skip
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    printed = capsys.readouterr()
    assert exit_info.value.code == 1
    assert "diffusion" in printed.err and "Traceback" not in printed.err
    assert len(printed.err.strip().splitlines()) == 1


# --- the other way: a diffusers UNet2DModel + DDPMScheduler folder, scored by aediff ------------------------
@pytest.fixture(scope="module")
def unet_folder(tmp_path_factory):
    """A tiny random UNet2DModel (8x8, 1 channel) and a DDPMScheduler, saved as diffusers saves them."""
    from conftest import save_diffusers_unet

    return save_diffusers_unet(tmp_path_factory.mktemp("unet") / "ddpm")


def test_a_fresh_process_loads_a_diffusers_folder_through_aediff_load(unet_folder):
    """runs sits below export, which registers its loaders: ``aediff.load`` alone must reach them."""
    code = f"import aediff; print(aediff.load({str(unet_folder)!r}, device='cpu').family)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "diffusers", done.stderr


def test_load_diffusers_folder_samples(unet_folder):
    run = load(unet_folder, device="cpu")
    assert run.model.can(Capability.GENERATE) and not run.model.can(Capability.DIFFUSION_SAMPLER)
    images = run.model.sample(3, options=SamplerOptions(steps=4), generator=torch.Generator().manual_seed(0))
    assert images.shape == (3, 1, 8, 8) and torch.isfinite(images).all()
    assert images.abs().max() <= 1


def test_aediff_eval_scores_a_diffusers_unet(unet_folder, tmp_path, tiny_runs, monkeypatch, capsys):
    from aediff import cli
    from conftest import TINY

    tiny_runs(tmp_path, [("classifier", "classifier", {}, TINY)], steps=5)
    out = tmp_path / "metrics.json"
    argv = ["aediff", "eval", str(unet_folder), "--data", "digits", "--classifier", str(tmp_path / "classifier"),
            "--samples", "64", "--limit", "64", "--out", str(out)]  # fmt: skip
    monkeypatch.setattr(sys, "argv", argv)
    try:
        cli.main()
    except SystemExit as exc:
        assert not exc.code, capsys.readouterr()
    metrics = json.loads(out.read_text())
    generation = metrics["generation"]
    assert {"fid", "kid_mean", "precision", "recall"} <= set(generation), generation
    assert all(math.isfinite(generation[k]) for k in ("fid", "kid_mean", "precision", "recall"))
    assert "sampling_speed" in metrics
