"""`aediff compare` end to end on `digits` with a budget of a few steps per model: every section, figure,
table and number of the report is there, finite, and the HTML renders in headless Chromium."""

from __future__ import annotations

import json
import math
import shutil

import pytest

from aediff.config import Budget, parse_duration
from aediff.errors import AediffError, ConfigError
from aediff.evaluation.results import FORMAT_VERSION
from aediff.reports.compare import CompareConfig, compare_plan, parse_runs, run_compare
from aediff.reports.record import ComparisonReport
from conftest import save_diffusers_unet

pytestmark = pytest.mark.slow  # end to end: `make test-full` and CI run it, `make test` leaves it out

TINY_UNET = {"channels": (8, 16), "attention_resolutions": (), "embedding_dim": 16, "steps": 3}
TINY = {
    "classifier": {"channels": (8, 16), "feature_dim": 16},
    "ae": {"channels": (8, 16)},
    "vae": {"channels": (8, 16)},
    "dae": {"channels": (8, 16)},
    "diffusion": TINY_UNET,
    "latent-diffusion": {**TINY_UNET, "text_width": 16, "text_layers": 1},
}
SECTIONS = ["bottleneck", "vae", "dae", "manifold", "noise_levels", "blur", "skips", "conditioning", "summary",
            "restoration", "diffusion_manifold"]  # fmt: skip
RESTORE_SPECS = ("box:3", "half", "lines:2", "upscale:2")  # digits are 8x8
FIGURES = [
    "bottleneck_psnr",
    "bottleneck_reconstructions",
    "vae_samples",
    "ae_samples",
    "vae_interpolation",
    "dae_denoising",
    "probe_accuracy",
    "latent_maps_pca",
    "denoising_sweep",
    "denoising_table",
    "predicted_x0",
    "high_frequency_share",
    "skip_loss",
    "gradient_norms",
    "class_grid",
    "guidance",
    "guidance_fid",
    "prompt_grid",
    "fid_classifier",
    "fid_classifier_layers",
    "budget_curve_classifier",
    "budget_curve_classifier_layers",
    *(f"restoration_{i}" for i in range(1 + len(RESTORE_SPECS))),
]


def _numbers(obj, path=""):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _numbers(v, f"{path}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _numbers(v, f"{path}[{i}]")
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        yield path, obj


def tiny_config(**changes) -> CompareConfig:
    """A comparison of tiny models on digits that trains in seconds."""
    settings = dict(data="digits", budget=Budget(minutes=0.5), max_steps=4, bottlenecks=(2, 4, 8), samples=40, limit=60,
                    denoise_steps=2, batch_size=32, model_overrides=TINY, restore_specs=RESTORE_SPECS,
                    restore_images=20, restore_steps=3)  # fmt: skip
    return CompareConfig(**{**settings, **changes})


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("compare")
    record = run_compare(tiny_config(guidances=(1.0, 3.0)), out, progress=False)
    return out, record.to_json()


def test_compare_writes_every_section_figure_and_table(report):
    out, metrics = report
    assert list(metrics["verdicts"]) == SECTIONS
    for key, verdict in metrics["verdicts"].items():
        assert verdict["verdict"] in ("holds", "does not hold", "inconclusive"), key
        assert any(ch.isdigit() for ch in verdict["reason"]), key  # the verdict cites its numbers
        assert verdict["control"], key  # ... and names the control it had to beat
    for name in FIGURES:
        assert (out / "figures" / f"{name}.png").stat().st_size > 1000, name
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == len(FIGURES)
    for key in SECTIONS:
        assert f'id="{key}"' in html
    assert (out / "tables" / "summary.csv").read_text().count("\n") >= 12  # header + 12 models
    bottleneck = (out / "tables" / "bottleneck.csv").read_text().splitlines()
    assert bottleneck[0].endswith(",rFID (classifier),rFID (classifier-layers)")  # the AEs' reconstructions
    assert all(float(line.split(",")[-1]) > 0 for line in bottleneck[1:-1]) and bottleneck[-1].endswith("n/a,n/a")
    on_disk = json.loads((out / "metrics.json").read_text())
    assert on_disk == metrics and on_disk["format_version"] == FORMAT_VERSION
    assert ComparisonReport.read(out / "metrics.json").to_json() == on_disk  # it reads back, typed
    old = {k: v for k, v in on_disk.items() if k != "format_version"}  # as aediff at 704866e wrote it
    assert ComparisonReport.from_json(old).to_json() == on_disk
    names = set(on_disk["models"])
    assert {
        "ae-2",
        "ae-4",
        "ae-8",
        "vae",
        "dae-0.3",
        "dae-0.5",
        "dae-0.75",
        "dae-mask",
        "diffusion",
        "diffusion-noskip",
        "ae-spatial",
        "latent-diffusion",
        "classifier",
    } == names


def test_every_number_in_metrics_is_finite_and_records_its_protocol(report):
    out, _ = report
    metrics = json.loads((out / "metrics.json").read_text())
    numbers = list(_numbers(metrics))
    assert len(numbers) > 200
    bad = [p for p, v in numbers if not math.isfinite(v)]
    assert not bad, bad[:5]
    generation = metrics["models"]["diffusion"]["generation"]
    assert generation["num_samples"] == 40 and generation["reference"] == "digits:test"
    assert generation["feature_extractor"] == "classifier"
    assert set(metrics["models"]["diffusion"]["generation_by_judge"]) == {"classifier", "classifier-layers"}
    assert generation["fid_se"] > 0 and len(generation["fid_draws_values"]) > 1  # an interval, not a point
    curve = metrics["sections"]["curves"]["diffusion"]
    assert [p["fraction"] for p in curve] == [0.25, 0.5, 1.0]  # snapshots along the budget, then the end
    assert [p["steps"] for p in curve] == [1, 2, 4]
    assert 0 <= generation["precision"] <= 1 and 0 <= generation["recall"] <= 1
    assert metrics["models"]["diffusion"]["sampling_speed"]["nfe"] >= 3
    assert metrics["models"]["vae"]["likelihood"]["iwae_bits_per_dim"] > 0


def test_every_verdict_rests_on_controls_and_intervals(report):
    _, metrics = report
    sections, verdicts = metrics["sections"], metrics["verdicts"]
    assert sections["controls"]["mean_image_psnr"]["se"] > 0
    assert {"raw pixels", "random projection 2", "untrained ae-2", "untrained vae"} <= set(
        sections["manifold_controls"]
    )
    controls = {p["control"] for p in verdicts["manifold"]["parts"]}
    assert {"raw pixels", "random projection to 2-d", "the untrained network"} <= controls
    for part in verdicts["bottleneck"]["parts"]:
        assert part["gap"]["low"] <= part["gap"]["value"] <= part["gap"]["high"]
    assert sections["x0"]["rho"]["n"] > 1  # bootstrap draws behind the trend
    assert set(sections["guidance"]["rows"]) == {"1", "3"}
    assert [p.get("judge") for p in verdicts["summary"]["parts"]] == ["classifier", "classifier-layers"]


def test_report_renders_in_headless_chromium(report, tmp_path):
    from aediff.reports.html import render_in_chromium

    if shutil.which("chromium") is None:
        pytest.skip("needs Debian's chromium (apt-get install chromium)")
    out, _ = report
    rendered = render_in_chromium(out / "report.html")
    assert rendered["errors"] == []
    assert rendered["figures_total"] == len(FIGURES) == rendered["figures_loaded"]


def test_reused_runs_are_not_retrained_and_peers_are_scored_beside_them(report, tmp_path):
    """--runs reuses every model; --peer adds a diffusers UNet folder and an aediff run, scored with the same
    protocol and listed in section 9's table, while every verdict stays what it was without them."""
    pytest.importorskip("diffusers")
    out, first = report
    config = tiny_config(guidances=(1.0, 3.0))
    config.runs = {p.name: str(out / "runs" / p.name) for p in compare_plan(config)}
    unet = save_diffusers_unet(tmp_path / "unet", "DDIMScheduler")
    config.peers = {"ddim-unet": str(unet), "vae-again": str(out / "runs" / "vae")}
    metrics = run_compare(config, tmp_path / "again", progress=False).to_json()
    assert not (tmp_path / "again" / "runs").exists()
    assert metrics["meta"]["runs"]["vae"] == str(out / "runs" / "vae")
    # same weights, same seeds: the same reconstruction numbers
    assert metrics["models"]["ae-4"]["reconstruction"]["psnr"] == pytest.approx(
        first["models"]["ae-4"]["reconstruction"]["psnr"], rel=1e-5
    )
    peer = metrics["models"]["ddim-unet"]
    assert peer["family"] == "diffusers" and peer["generation"]["fid"] > 0
    assert metrics["models"]["vae-again"]["generation"]["fid"] == pytest.approx(
        first["models"]["vae"]["generation"]["fid"], rel=1e-4
    )
    assert {k: v["verdict"] for k, v in metrics["verdicts"].items()} == {
        k: v["verdict"] for k, v in first["verdicts"].items()
    }
    summary = (tmp_path / "again" / "tables" / "summary.csv").read_text()
    assert "ddim-unet,diffusers" in summary and "vae-again,vae" in summary
    assert "Peers (--peer: ddim-unet, vae-again)" in (tmp_path / "again" / "report.html").read_text()


def test_runs_and_peers_are_checked_before_training(report, tmp_path):
    pytest.importorskip("diffusers")
    out, _ = report
    unet = save_diffusers_unet(tmp_path / "unet", "DDIMScheduler")
    for runs, peers, message in [
        ({"diffusion": str(unet)}, {}, "diffusers UNet2DModel folder"),
        ({"diffusion": str(out / "runs" / "vae")}, {}, "--peer NAME="),
        ({}, {"vae": str(out / "runs" / "vae")}, "which the comparison trains itself"),
        ({}, {"other": str(tmp_path)}, "not an aediff run folder"),
    ]:
        with pytest.raises(AediffError, match=message):
            run_compare(tiny_config(runs=runs, peers=peers), tmp_path / "refused", progress=False)
        assert not (tmp_path / "refused" / "runs").exists()  # refused before anything trained


def test_budget_and_runs_parsing(tmp_path):
    assert parse_duration("90s") == pytest.approx(1.5)
    assert parse_duration("10m") == 10 and parse_duration("1h") == 60 and parse_duration("2.5") == 2.5
    for bad in ("ten minutes", "-1m", "0"):
        with pytest.raises(ConfigError):
            parse_duration(bad)
    (tmp_path / "vae").mkdir()
    assert parse_runs([f"vae={tmp_path / 'vae'}"]) == {"vae": str(tmp_path / "vae")}
    with pytest.raises(ConfigError, match="NAME=RUN_FOLDER"):
        parse_runs(["vae"])
    with pytest.raises(ConfigError, match="not a run folder"):
        parse_runs([f"vae={tmp_path / 'missing'}"])


def test_cli_compare_reuses_runs_and_refuses_bad_options(report, monkeypatch, capsys, tmp_path):
    from test_cli import run_cli

    out, _ = report
    monkeypatch.chdir(tmp_path)  # the refused calls name no --out: the default report folder is here
    code, text = run_cli(monkeypatch, capsys, "compare", "--data", "digits", "--budget", "soon")
    assert code == 1 and "90s, 10m or 1.5h" in text
    code, text = run_cli(monkeypatch, capsys, "compare", "--data", "digits", "--bottlenecks", "4,x")
    assert code == 1 and "--bottlenecks" in text
    code, text = run_cli(monkeypatch, capsys, "compare", "--data", "digits", "--runs", f"gan={out / 'runs' / 'vae'}")
    assert code == 1 and "gan" in text and "latent-diffusion" in text
    every = [f"{p.name}={out / 'runs' / p.name}" for p in compare_plan(CompareConfig(bottlenecks=(2, 4, 8)))]
    args = [arg for run in every for arg in ("--runs", run)]
    code, text = run_cli(
        monkeypatch,
        capsys,
        "compare",
        "--data",
        "digits",
        "--bottlenecks",
        "2,4,8",
        "--samples",
        "20",
        "--limit",
        "30",
        "--out",
        tmp_path / "cli",
        "--no-progress",
        *args,
    )
    assert code == 0, text
    assert "training 0 models" in text and (tmp_path / "cli" / "report.html").exists()
    assert json.loads((tmp_path / "cli" / "metrics.json").read_text())["meta"]["command"].startswith("aediff compare")


def test_compare_on_unlabelled_images_drops_the_judge_and_says_why(tmp_path):
    import numpy as np

    from aediff.data import load_dataset

    digits = load_dataset("digits", "all")
    np.savez(tmp_path / "plain.npz", images=digits.images[:400, 0].numpy())  # no labels, no captions
    config = CompareConfig(
        data=f"npz:{tmp_path / 'plain.npz'}",
        budget=Budget(steps=3),  # a step budget: no judge to train here, so every model trains exactly 3 steps
        bottlenecks=(2, 4, 8),
        samples=30,
        limit=40,
        denoise_steps=2,
        batch_size=32,
        model_overrides=TINY,
    )
    assert "classifier" not in {p.name for p in compare_plan(config, labelled=False)}
    said = []
    record = run_compare(config, tmp_path / "out", progress=False, announce=said.append)
    trained = len(compare_plan(config, labelled=False))  # once: "training 12 models (the judge among them)"
    assert said[0].startswith(f"training {trained} models, 3 steps") and "judging classifier among" not in said[0]
    assert "has no labels, so the judging classifier, class conditioning" in said[0]
    assert record.models["vae"].generation is None and record.sections.guidance is None
    metrics = record.to_json()
    verdicts = metrics["verdicts"]
    assert {"bottleneck", "noise_levels", "blur", "skips", "summary"} <= set(verdicts)
    assert "conditioning" not in verdicts and "manifold" not in verdicts  # both need labels
    assert verdicts["summary"]["verdict"] == "inconclusive" and "no FID" in verdicts["summary"]["reason"]
    assert "generation" in metrics["models"]["vae"]["skipped"]
    assert {name: m["training_speed"]["steps"] for name, m in metrics["models"].items()} == dict.fromkeys(
        record.models, 3
    )
    assert metrics["meta"]["budget_steps"] == 3 and metrics["meta"]["budget_minutes"] is None
    html = (tmp_path / "out" / "report.html").read_text()
    assert "<dd>3 steps per model</dd>" in html and 'data-name="training"' in html
    training = (tmp_path / "out" / "tables" / "training.csv").read_text().splitlines()
    assert training[0] == "model,family,steps,images seen,train seconds,wall seconds"
    assert len(training) == 1 + len(record.models) and training[1].startswith("ae-2,ae,3,96,")


def test_runs_left_by_an_earlier_comparison_are_refused_or_replaced(tmp_path):
    from aediff.reports.compare import _clear_old_runs

    config = CompareConfig(data="digits", runs={"vae": str(tmp_path / "elsewhere")})
    plan = compare_plan(config)
    for name in ("ae-4", "vae"):
        (tmp_path / "runs" / name).mkdir(parents=True)
        (tmp_path / "runs" / name / "config.json").write_text("{}")
    with pytest.raises(ConfigError, match="ae-4.*--overwrite"):
        _clear_old_runs(plan, config, tmp_path, replace=False)
    assert (tmp_path / "runs" / "ae-4").exists()  # refused: nothing deleted
    _clear_old_runs(plan, config, tmp_path, replace=True)
    assert not (tmp_path / "runs" / "ae-4").exists()
    assert (tmp_path / "runs" / "vae").exists()  # reused with --runs: never touched
