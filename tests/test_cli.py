"""The command line, end to end on `digits`: train, reconstruct, sample, encode, denoise, eval-nll, score;
and user errors that end in one clear message, not a stack trace."""

import json
import sys

import numpy as np
import pytest
from PIL import Image

from aediff import cli

TINY = [
    "--set",
    "channels=8,16",
    "--set",
    "bottleneck_dim=8",
    "--batch-size",
    "32",
    "--no-progress",
    "--train-set",
    "tensorboard=false",
]


# A diffusion model small enough to train in seconds on digits (8x8): two stages, attention at 4x4, 3 steps.
TINY_DIFFUSION = ["--set", "channels=8,16", "--set", "attention_resolutions=4", "--set", "embedding_dim=16",
                  "--set", "steps=3"]  # fmt: skip


def run_cli(monkeypatch, capsys, *args):
    """Run `aediff ARGS` in-process; returns (exit code, printed text)."""
    monkeypatch.setattr(sys, "argv", ["aediff", *map(str, args)])
    code = 0
    try:
        cli.main()
    except SystemExit as exc:
        code = exc.code or 0
    captured = capsys.readouterr()
    return code, captured.out + captured.err


@pytest.fixture(scope="module")
def trained_runs(tmp_path_factory):
    """A VAE, a DAE and a classifier on digits, trained for a few steps through the CLI."""
    root = tmp_path_factory.mktemp("runs")
    mp = pytest.MonkeyPatch()
    for family, extra in [
        ("vae", ["--likelihood", "bernoulli"]),
        ("dae", ["--noise", "mask:0.3"]),
        ("classifier", ["--set", "channels=8,16"]),
        ("diffusion", TINY_DIFFUSION),
    ]:
        args = [
            "aediff",
            "train",
            family,
            "--data",
            "digits",
            "--out",
            root / family,
            "--max-steps",
            "30",
            "--batch-size",
            "32",
            "--no-progress",
            "--train-set",
            "tensorboard=false",
            *extra,
        ]
        if family in ("vae", "dae"):
            args += ["--set", "channels=8,16", "--bottleneck", "8"]
        mp.setattr(sys, "argv", list(map(str, args)))
        try:
            cli.main()
        except SystemExit as exc:  # the command line ends with sys.exit, 0 on success
            assert not exc.code, f"training {family} failed"
    mp.undo()
    return root


def test_train_prints_a_summary_and_writes_the_run(tmp_path, monkeypatch, capsys):
    code, out = run_cli(
        monkeypatch, capsys, "train", "ae", "--data", "digits", "--out", tmp_path / "ae", "--max-steps", "5", *TINY
    )
    assert code == 0, out
    assert "done: 5 steps" in out
    config = json.loads((tmp_path / "ae" / "config.json").read_text())
    assert config["model"]["channels"] == [8, 16] and config["training"]["batch_size"] == 32


def test_reconstruct_writes_a_grid_and_reports_metrics(trained_runs, tmp_path, monkeypatch, capsys):
    out_png = tmp_path / "rec.png"
    code, out = run_cli(monkeypatch, capsys, "reconstruct", trained_runs / "vae", "--images", "6", "--out", out_png)
    assert code == 0, out
    assert '"psnr"' in out and '"ssim"' in out
    with Image.open(out_png) as img:  # 2 rows of 6 tiles of 8 px with 2 px padding
        assert img.size == (6 * 10 + 2, 2 * 10 + 2)


def test_sample_writes_png_and_npz(trained_runs, tmp_path, monkeypatch, capsys):
    code, out = run_cli(
        monkeypatch, capsys, "sample", trained_runs / "vae", "--samples", "5", "--out", tmp_path / "s.npz"
    )
    assert code == 0, out
    assert (tmp_path / "s.png").exists()  # the grid beside the arrays
    arrays = np.load(tmp_path / "s.npz")
    assert arrays["images"].shape == (5, 8, 8, 1) and arrays["images"].dtype == np.uint8
    # Same seed, same samples; the extension chooses the format in any case (z.NPZ is arrays, not a PNG).
    code, out = run_cli(
        monkeypatch, capsys, "sample", trained_runs / "vae", "--samples", "5", "--out", tmp_path / "t.NPZ"
    )
    assert code == 0, out
    assert (tmp_path / "t.NPZ").read_bytes()[:2] == b"PK" and (tmp_path / "t.png").exists()
    assert np.array_equal(np.load(tmp_path / "t.NPZ")["images"], arrays["images"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.npz", "s.png", "t.NPZ", "t.png"]  # no temporaries


def test_encode_writes_latents_with_labels(trained_runs, tmp_path, monkeypatch, capsys):
    code, out = run_cli(monkeypatch, capsys, "encode", trained_runs / "dae", "--out", tmp_path / "z.npz")
    assert code == 0, out
    arrays = np.load(tmp_path / "z.npz")
    assert arrays["latents"].shape[1:] == (8,) and len(arrays["labels"]) == len(arrays["latents"])


def test_denoise_reports_before_and_after(trained_runs, tmp_path, monkeypatch, capsys):
    code, out = run_cli(
        monkeypatch, capsys, "denoise", trained_runs / "dae", "--noise", "mask:0.3", "--out", tmp_path / "d.png"
    )
    assert code == 0, out
    payload = json.loads(out[out.index("{") :])
    assert payload["corruption"] == "mask:0.3" and payload["psnr"] > 0 and payload["psnr_noisy"] > 0


def test_eval_nll_and_score(trained_runs, monkeypatch, capsys):
    code, out = run_cli(monkeypatch, capsys, "eval-nll", trained_runs / "vae", "--k", "4", "--limit", "50")
    assert code == 0, out
    payload = json.loads(out[out.index("{") :])
    assert payload["nll_iwae_nats"] > 0 and payload["iwae_k"] == 4 and payload["num_images"] == 50
    code, out = run_cli(
        monkeypatch,
        capsys,
        "score",
        trained_runs / "vae",
        "--classifier",
        trained_runs / "classifier",
        "--samples",
        "50",
    )
    assert code == 0, out
    payload = json.loads(out[out.index("{") :])
    assert payload["fid"] > 0 and payload["num_samples"] == 50 and payload["reference"] == "digits:test"
    assert payload["feature_extractor"].startswith("classifier:")


def test_datasets_lists_the_builtins(monkeypatch, capsys):
    code, out = run_cli(monkeypatch, capsys, "datasets")
    assert code == 0
    for name in ("digits", "mnist5k", "mnist", "fashion-mnist", "cifar10"):
        assert name in out


# A usage mistake (a family that is not a choice) exits 2; aediff's own errors exit 1.
@pytest.mark.parametrize(
    "args,message,exit_code",
    [
        (["train", "gan", "--data", "digits", "--max-steps", "1"], "'gan' is not one of", 2),
        (["train", "vae", "--data", "digits", "--noise", "gaussian:0.5", "--max-steps", "1"], "does not apply", 1),
        (["train", "dae", "--data", "digits", "--noise", "blur:2", "--max-steps", "1"], "unknown corruption", 1),
        (["train", "ae", "--data", "nosuchset", "--max-steps", "1"], "nosuchset", 1),
        (["reconstruct", "no/such/run"], "does not exist", 1),
        (["score", "no/such/run"], "choose one feature space", 1),
    ],
)
def test_user_errors_give_one_clear_message(tmp_path, monkeypatch, capsys, args, message, exit_code):
    monkeypatch.chdir(tmp_path)
    code, out = run_cli(monkeypatch, capsys, *args)
    assert code == exit_code
    assert message in " ".join(out.split())
    assert "Traceback" not in out


def test_eval_nll_refuses_a_model_without_likelihood(trained_runs, monkeypatch, capsys):
    code, out = run_cli(monkeypatch, capsys, "eval-nll", trained_runs / "dae")
    assert code == 1 and "VAE" in out


def test_diffusion_sampling_options_trajectory_denoising_and_bound(trained_runs, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the commands below without --out would write their default file here
    run = trained_runs / "diffusion"
    code, out = run_cli(
        monkeypatch,
        capsys,
        "sample",
        run,
        "--samples",
        "4",
        "--sampler",
        "heun",
        "--steps",
        "2",
        "--out",
        tmp_path / "s.npz",
    )
    assert code == 0, out
    assert np.load(tmp_path / "s.npz")["images"].shape == (4, 8, 8, 1) and (tmp_path / "s.png").exists()
    code, out = run_cli(
        monkeypatch,
        capsys,
        "sample",
        run,
        "--samples",
        "2",
        "--steps",
        "5",
        "--sampler",
        "euler",
        "--trajectory",
        tmp_path / "strip.png",
    )
    assert code == 0, out
    with Image.open(tmp_path / "strip.png") as img:  # 2 samples x 2 rows; 5 frames + the final sample
        assert img.size == (6 * 10 + 2, 4 * 10 + 2)
    code, out = run_cli(
        monkeypatch, capsys, "denoise", run, "--noise", "gaussian:0.3", "--steps", "3", "--out", tmp_path / "d.png"
    )
    assert code == 0, out
    assert json.loads(out[out.index("{") :])["steps"] == 3
    code, out = run_cli(monkeypatch, capsys, "denoise", run, "--noise", "mask:0.3")
    assert code == 1 and "gaussian:SIGMA" in out
    code, out = run_cli(monkeypatch, capsys, "eval-nll", run, "--timesteps", "2", "--limit", "20")
    assert code == 0, out
    assert json.loads(out[out.index("{") :])["bits_per_dim"] > 0
    code, out = run_cli(monkeypatch, capsys, "sample", trained_runs / "vae", "--sampler", "ddim")
    assert code == 1 and "diffusion" in out


def test_error_messages_keep_their_brackets(tmp_path, monkeypatch, capsys):
    def refuse(run):
        raise cli.ConfigError("install the extra: pip install aediff[text]")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli, "_load", refuse)
    code, out = run_cli(monkeypatch, capsys, "sample", "runs/x")
    assert code == 1 and "aediff[text]" in out  # not swallowed as rich markup


def test_data_in_the_other_channels_is_converted_with_a_note(tmp_path, monkeypatch, capsys):
    """A greyscale model given colour files sees their luma, a colour model given greyscale data sees it on 3
    channels; each command says so in one line, and data in the model's channels gets no note."""
    rng = np.random.default_rng(0)
    for name, mode in (("colour", "RGB"), ("grey", "L")):
        (tmp_path / name).mkdir()
        for i in range(4):
            Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).convert(mode).save(
                tmp_path / name / f"{i}.png"
            )
    np.savez(tmp_path / "colour.npz", images=rng.integers(0, 256, (16, 8, 8, 3), dtype=np.uint8))
    for run, data in (("grey-ae", "digits"), ("colour-ae", f"npz:{tmp_path / 'colour.npz'}")):
        code, out = run_cli(monkeypatch, capsys, "train", "ae", "--data", data, "--out", tmp_path / run,
                            "--max-steps", "1", *TINY[:4], "--batch-size", "8", "--no-progress")  # fmt: skip
        assert code == 0, out
    lost = "4 of 4 images are colour, converted to greyscale (ITU-R 601 luma): their colour is lost, for a 1-channel"
    repeated = "images are greyscale, repeated on 3 channels (nothing is lost), for a 3-channel model"
    colour, grey = f"folder:{tmp_path / 'colour'}", f"folder:{tmp_path / 'grey'}"
    for args, note in [
        (["reconstruct", tmp_path / "grey-ae", "--data", colour, "--out", tmp_path / "r.png"], lost),
        (["encode", tmp_path / "grey-ae", "--data", colour, "--out", tmp_path / "z.npz"], lost),
        (["denoise", tmp_path / "colour-ae", "--data", grey, "--out", tmp_path / "d.png"], repeated),
        (
            ["restore", tmp_path / "colour-ae", "--data", "digits", "--mask", "half", "--out", tmp_path / "s.png"],
            repeated,
        ),
        (["reconstruct", tmp_path / "grey-ae", "--data", grey, "--out", tmp_path / "g.png"], None),
    ]:
        code, out = run_cli(monkeypatch, capsys, *args, "--split", "all", "--overwrite")
        assert code == 0, out
        notes = [line for line in out.splitlines() if line.startswith("note:")]
        assert (notes == []) if note is None else (len(notes) == 1 and note in notes[0]), out
