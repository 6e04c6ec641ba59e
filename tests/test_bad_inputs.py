"""Bad input through the command line, as a user types it: every case runs `aediff ...` through the entry point
a shell runs (``aediff.cli.main``, in a subprocess that runs half the cases one after another: tests/cli_batch.py)
and must end with a clear message, never a traceback, and leave every existing checkpoint as it was.

A usage mistake (a missing argument, an option that does not exist or a value of the wrong type) is Typer's:
exit 2 and its usage box. Every other mistake is aediff's: exit 1 and exactly one line on stderr, starting
"error:", that names the problem (each case names a word the line must hold). No case may print
"Traceback" or "internal error" (the CLI's words for a bug). The two halves run at the same time (the machine's
two cores) and are reported together, so one run of the test lists every case that fails.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

pytestmark = pytest.mark.slow  # end to end: `make test-full` and CI run it, `make test` leaves it out

AEDIFF = str(Path(sys.executable).with_name("aediff"))


@dataclass(frozen=True)
class Case:
    """argv after `aediff`, with {ae}, {diffusion}, {tmp} and {bad} (the folder ``setup`` made) filled in;
    ``names``: a word the error must hold (case-insensitive); ``code``: 2 for a usage mistake, else 1."""

    id: str
    argv: str
    names: str
    code: int = 1
    setup: Callable[[Path, Path], None] | None = None  # (copy of the AE run, tmp) -> damage it


# --- damage done to a copy of a run folder --------------------------------------------------------------------
def _config(edit: Callable[[dict], object]) -> Callable[[Path, Path], None]:
    def damage(run: Path, tmp: Path) -> None:
        config = json.loads((run / "config.json").read_text())
        edited = edit(config)
        (run / "config.json").write_text(json.dumps(config if edited is None else edited))

    return damage


def _set_model(key: str, value: object) -> Callable[[Path, Path], None]:
    return _config(lambda c: c["model"].__setitem__(key, value))


def _tensors(file: str, change: Callable[[dict[str, torch.Tensor]], None]) -> Callable[[Path, Path], None]:
    def damage(run: Path, tmp: Path) -> None:
        tensors = load_file(run / file)
        change(tensors)
        save_file(tensors, run / file)

    return damage


def _first_weight(value: float) -> Callable[[dict[str, torch.Tensor]], None]:
    def change(tensors: dict[str, torch.Tensor]) -> None:
        name = next(k for k, v in tensors.items() if v.is_floating_point() and v.numel() > 1)
        tensors[name] = torch.full_like(tensors[name], value)

    return change


def _wrong_shape(tensors: dict[str, torch.Tensor]) -> None:
    name = next(k for k, v in tensors.items() if v.ndim >= 2)
    tensors[name] = torch.zeros(3, 3)


def _replace(file: str, content: bytes | None) -> Callable[[Path, Path], None]:
    """content None: make ``file`` a folder."""

    def damage(run: Path, tmp: Path) -> None:
        target = run / file
        target.unlink(missing_ok=True)
        if content is None:
            target.mkdir()
        else:
            target.write_bytes(content)

    return damage


def _truncate(file: str) -> Callable[[Path, Path], None]:
    def damage(run: Path, tmp: Path) -> None:
        data = (run / file).read_bytes()
        (run / file).write_bytes(data[: len(data) // 2])

    return damage


def _state(edit: Callable[[dict], None] | None, raw: bytes | None = None) -> Callable[[Path, Path], None]:
    def damage(run: Path, tmp: Path) -> None:
        path = run / "training_state" / "state.json"
        if raw is not None:
            path.write_bytes(raw)
            return
        state = json.loads(path.read_text())
        edit(state)
        path.write_text(json.dumps(state))

    return damage


# --- bad data, made in tmp --------------------------------------------------------------------------------
def _npz(name: str, **arrays: np.ndarray) -> Callable[[Path, Path], None]:
    def make(run: Path, tmp: Path) -> None:
        np.savez(tmp / name, **arrays)

    return make


def _file(name: str, content: bytes) -> Callable[[Path, Path], None]:
    def make(run: Path, tmp: Path) -> None:
        (tmp / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp / name).write_bytes(content)

    return make


def _npy_as_npz(run: Path, tmp: Path) -> None:
    np.save(tmp / "arr.npy", np.zeros((4, 8, 8), np.uint8))
    (tmp / "arr.npy").rename(tmp / "arr.npz")


def _mask_png(name: str, pixels: np.ndarray) -> Callable[[Path, Path], None]:
    """A mask image (uint8 grey, white = fill) written into the case's folder."""

    def make(run: Path, tmp: Path) -> None:
        from PIL import Image

        Image.fromarray(pixels.astype(np.uint8)).save(tmp / name)

    return make


def _folder_with_metadata(entry: str, encoding: str = "utf-8") -> Callable[[Path, Path], None]:
    def make(run: Path, tmp: Path) -> None:
        from PIL import Image

        folder = tmp / "images"
        folder.mkdir()
        for i in range(4):
            Image.fromarray(np.full((8, 8), 40 * i, np.uint8)).save(folder / f"{i}.png")
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp / "outside.png")
        lines = [json.dumps({"file_name": f"{i}.png", "text": "caf\u00e9"}, ensure_ascii=False) for i in range(4)]
        lines.append(json.dumps({"file_name": entry, "text": "x"}))
        (folder / "metadata.jsonl").write_bytes("\n".join(lines).encode(encoding))

    return make


def _folder_of_every_mode(run: Path, tmp: Path) -> None:
    """RGB, greyscale and RGBA 8x8 PNGs and a palette one of 12x10, in that (sorted) order."""
    from PIL import Image

    folder = tmp / "mixed"
    folder.mkdir()
    pixels = np.full((8, 8, 3), 100, np.uint8)
    Image.fromarray(pixels).save(folder / "a_rgb.png")
    Image.fromarray(pixels[..., 0]).save(folder / "b_grey.png")
    Image.fromarray(np.dstack([pixels, pixels[..., :1]])).save(folder / "c_rgba.png")
    Image.fromarray(np.full((12, 10, 3), 100, np.uint8)).convert("P").save(folder / "d_palette.png")


TRAIN = "train ae --data digits --max-steps 2 --out {tmp}/new"
MIXED = "train ae --data folder:{tmp}/mixed --max-steps 1 --out {tmp}/new"
TRAIN_KL = "train kl-ae --data digits --max-steps 2 --out {tmp}/new"
RESTORE = "restore {ae} --out {tmp}/r.png"
RESTORE_DIFFUSION = "restore {diffusion} --out {tmp}/r.png"
CASES = [
    # usage mistakes: Typer's usage box, exit 2
    Case("no-command", "", "usage", 2),
    Case("sample-without-run", "sample", "RUN", 2),
    Case("samples-zero", "sample {ae} --samples 0", "--samples", 2),
    Case("samples-not-a-number", "sample {ae} --samples abc", "--samples", 2),
    Case("steps-zero", "sample {diffusion} --steps 0", "--steps", 2),
    Case("unknown-sampler", "sample {diffusion} --sampler foo", "--sampler", 2),
    Case("unknown-split", "reconstruct {ae} --split validation", "--split", 2),
    Case("frames-zero", "sample {diffusion} --trajectory {tmp}/t.png --frames 0", "--frames", 2),
    Case("unknown-option", "sample {ae} --bogus 1", "--bogus", 2),
    Case("unknown-family", "train gan --data digits --out {tmp}/new", "gan", 2),
    Case("max-steps-zero", "train ae --data digits --max-steps 0 --out {tmp}/new", "--max-steps", 2),
    Case("batch-size-zero", "train ae --data digits --batch-size 0 --out {tmp}/new", "--batch-size", 2),
    Case("negative-lr", "train ae --data digits --lr -1 --out {tmp}/new", "--lr", 2),
    Case("unknown-latent", "train ae --data digits --latent cube --out {tmp}/new", "--latent", 2),
    Case("unknown-tracker", "train ae --data digits --log-with tensorbored --out {tmp}/new", "--log-with", 2),
    Case("crop-above-one", "train ae --data digits --crop 1.5 --out {tmp}/new", "--crop", 2),
    Case("stream-in-memory-set", "train ae --data digits --stream --max-steps 1 --out {tmp}/new", "--stream", 1),
    Case(
        "accumulation-uneven",
        "train ae --data digits --grad-accumulation 3 --max-steps 1 --out {tmp}/new",
        "multiple of 3",
        1,
    ),  # fmt: skip
    Case(
        "shards-missing",
        "train ae --data wds:{tmp}/none/{{000..003}}.tar --max-steps 1 --out {tmp}/new",
        "do not exist",
        1,
    ),  # fmt: skip
    Case("seed-too-large", "sample {ae} --seed 100000000000000000000", "--seed", 2),
    Case("eval-one-sample", "eval {ae} --samples 1 --out {tmp}/m.json", "--samples", 2),
    Case("unknown-export-format", "export {ae} --format tflite --out {tmp}/x", "--format", 2),
    Case("repo-id-without-owner", "push {ae} noslash --dry-run", "owner/name", 2),
    Case("port-out-of-range", "serve {ae} --port 70000", "--port", 2),
    Case("sampler-without-diffusers", "export {diffusion} --sampler ddim --out {tmp}/x", "--format diffusers", 2),
    # values that pass the types but not the model's sense: one line, exit 1
    Case("checkpoint-every-zero", TRAIN + " --train-set checkpoint_every=0", "checkpoint_every"),
    Case("log-every-zero", TRAIN + " --train-set log_every=0", "log_every"),
    Case("train-set-batch-zero", TRAIN + " --train-set batch_size=0", "batch_size"),
    Case("train-set-batch-negative", TRAIN + " --train-set batch_size=-8", "batch_size"),
    Case("max-steps-negative", "train ae --data digits --out {tmp}/new --train-set max_steps=-5", "max_steps"),
    Case("ema-decay-five", TRAIN + " --train-set ema_decay=5", "ema_decay"),
    Case("adam-betas-out-of-range", TRAIN + " --train-set adam_betas=2,3", "adam_betas"),
    Case("lr-nan", TRAIN + " --train-set lr=nan", "lr"),
    Case("warmup-negative", TRAIN + " --train-set warmup_steps=-1", "warmup_steps"),
    Case("grad-clip-negative", TRAIN + " --train-set grad_clip=-1", "grad_clip"),
    Case("unknown-train-field", TRAIN + " --train-set learning_rate=1", "learning_rate"),
    Case("channels-zero", TRAIN + " --set channels=0", "channels"),
    Case("bottleneck-negative", TRAIN + " --set bottleneck_dim=-3", "bottleneck_dim"),
    Case("unknown-model-field", TRAIN + " --set depth=3", "depth"),
    Case("widths-not-numbers", TRAIN + " --widths 16,abc", "--widths"),
    Case("widths-empty", TRAIN + " --widths ''", "--widths"),
    Case("absurd-width", TRAIN + " --set channels=1000000000", "channels"),
    Case("vqvae-codebook-zero", "train vqvae --data digits --set codebook_size=0 --out {tmp}/new", "codebook_size"),
    Case(  # digits: 1,438 training images x 2x2 latent positions (three stages on 8x8) = 5,752 latent vectors
        "vqvae-codebook-beyond-the-data",
        "train vqvae --data digits --set codebook_size=6000 --max-steps 1 --out {tmp}/new",
        "5,752 latent vectors",
    ),
    Case("vqvae-vector-latent", "train vqvae --data digits --latent vector --out {tmp}/new", "--latent spatial"),
    Case("kl-ae-discriminator-too-deep", TRAIN_KL + " --set disc_layers=3", "disc_layers=1"),  # 8x8 images
    Case("kl-ae-perceptual-weight", TRAIN_KL + " --set perceptual_weight=1", "not available offline"),
    Case("kl-ae-negative-kl-weight", TRAIN_KL + " --set kl_weight=-1e-6", "kl_weight"),
    Case("kl-ae-negative-disc-weight", TRAIN_KL + " --set disc_weight=-0.5", "disc_weight"),
    Case("budget-infinite", "compare --data digits --budget inf --out {tmp}/c", "--budget"),
    Case("budget-zero", "compare --data digits --budget 0 --out {tmp}/c", "--budget"),
    Case("bottlenecks-not-numbers", "compare --data digits --bottlenecks 4,x --out {tmp}/c", "--bottlenecks"),
    Case("restore-spec-unknown", "compare --data digits --restore-specs blob:3 --out {tmp}/c", "unknown degradation"),
    Case("latent-autoencoder-unknown", "compare --latent-autoencoders kl-ae,vq --out {tmp}/c", "names vq;"),
    Case("restore-spec-not-a-number", "compare --data digits --restore-specs box:x --out {tmp}/c", "box:SIDE"),
    Case("restore-spec-too-big", "compare --data digits --restore-specs box:10 --out {tmp}/c", "does not fit"),
    Case("masking-out-of-range", "compare --data digits --masking 1.5 --out {tmp}/c", "--masking", 2),
    # run folders that are missing, damaged or not ours: which file, what is wrong
    Case("run-missing", "sample {tmp}/nothing", "does not exist"),
    Case("run-is-a-file", "sample {bad}/config.json", "config.json"),
    Case("config-a-list", "sample {bad}", "config.json", setup=_config(lambda c: [c])),
    Case("config-model-null", "sample {bad}", "config.json", setup=_config(lambda c: c.__setitem__("model", None))),
    Case("config-family-unknown", "sample {bad}", "gan", setup=_config(lambda c: c.__setitem__("family", "gan"))),
    Case(
        "config-version-string",
        "sample {bad}",
        "format_version",
        setup=_config(lambda c: c.__setitem__("format_version", "2")),
    ),
    Case("config-not-json", "sample {bad}", "config.json", setup=_replace("config.json", b"{not json")),
    Case("image-size-zero", "sample {bad}", "image_size", setup=_set_model("image_size", 0)),
    Case("bottleneck-a-bool", "sample {bad}", "bottleneck_dim", setup=_set_model("bottleneck_dim", True)),
    Case("absurd-config-width", "sample {bad}", "channels", setup=_set_model("channels", [10**9, 16])),
    Case("ema-tensor-wrong-shape", "sample {bad}", "ema.safetensors", setup=_tensors("ema.safetensors", _wrong_shape)),
    Case(
        "model-tensor-wrong-shape-on-resume",
        "train --resume --out {bad} --max-steps 5",
        "model.safetensors",
        setup=_tensors("model.safetensors", _wrong_shape),
    ),
    Case("ema-a-folder", "sample {bad}", "ema.safetensors", setup=_replace("ema.safetensors", None)),
    Case(
        "ema-all-nan", "sample {bad}", "ema.safetensors", setup=_tensors("ema.safetensors", _first_weight(float("nan")))
    ),
    Case("ema-huge-weight", "sample {bad}", "ema.safetensors", setup=_tensors("ema.safetensors", _first_weight(1e38))),
    Case("model-truncated", "sample {bad}", "model.safetensors", setup=_truncate("model.safetensors")),
    Case(
        "model-garbage",
        "reconstruct {bad} --out {tmp}/r.png",
        "model.safetensors",
        setup=_replace("model.safetensors", b"\x00garbage" * 9),
    ),
    Case("state-corrupt", "train --resume --out {bad}", "state.json", setup=_state(None, b"{oops")),
    Case("state-without-step", "train --resume --out {bad}", "step", setup=_state(lambda s: s.pop("step"))),
    Case(
        "state-step-a-string", "train --resume --out {bad}", "step", setup=_state(lambda s: s.__setitem__("step", "3"))
    ),
    Case(
        "train-into-a-run", "train ae --data digits --max-steps 2 --out {bad}", "--resume", setup=lambda run, tmp: None
    ),
    Case("resume-nothing", "train --resume --out {tmp}/nothing", "nothing"),
    # outputs: checked before any work, never a run's own file
    Case("out-is-run-model", "sample {bad} --out {bad}/model.safetensors --overwrite", "run", setup=lambda r, t: None),
    Case(
        "out-is-run-config",
        "encode {bad} --data digits --out {bad}/config.json --overwrite",
        "run",
        setup=lambda r, t: None,
    ),
    Case("out-is-a-folder", "sample {ae} --out {tmp}", "folder"),
    Case("eval-out-is-a-folder", "eval {ae} --out {tmp}", "folder"),
    Case("out-exists", "sample {ae} --out {tmp}/exists.png", "--overwrite", setup=_file("exists.png", b"keep me")),
    Case("out-under-a-file", "sample {ae} --out {tmp}/exists.png/s.png", "exists.png", setup=_file("exists.png", b"x")),
    Case("out-txt", "sample {ae} --out {tmp}/o.txt", ".png (a PNG image) or .npz"),  # once: a PNG named o.txt
    Case("out-no-extension", "reconstruct {ae} --out {tmp}/grid", "no extension"),
    Case("encode-out-png", "encode {ae} --data digits --out {tmp}/z.png", ".npz (NumPy arrays)"),
    Case("eval-out-csv", "eval {ae} --out {tmp}/m.csv", ".json"),
    Case("trajectory-npz", "sample {diffusion} --trajectory {tmp}/t.npz", "--trajectory"),
    # asking a model for what it cannot do
    Case("ae-with-a-class", "sample {ae} --class 3", "class"),
    Case("ae-with-a-sampler", "sample {ae} --sampler euler", "sampler"),
    Case("unconditional-with-guidance", "sample {diffusion} --guidance 3", "guidance"),
    Case("diffusion-encode", "encode {diffusion} --data digits --out {tmp}/z.npz", "encode"),
    Case("classifier-not-a-classifier", "eval {ae} --classifier {ae} --out {tmp}/m.json", "classif"),
    Case("ae-to-diffusers", "export {ae} --format diffusers --out {tmp}/x", "diffusion"),
    # data that is missing, malformed or leaves its folder
    Case("unknown-dataset", "train ae --data nosuchset --out {tmp}/new", "nosuchset"),
    Case("folder-missing", "train ae --data folder:{tmp}/nope --out {tmp}/new", "nope"),
    Case("npz-garbage", "train ae --data npz:{tmp}/g.npz --out {tmp}/new", "g.npz", setup=_file("g.npz", b"\x00" * 64)),
    Case("npy-renamed-npz", "train ae --data npz:{tmp}/arr.npz --out {tmp}/new", "arr.npz", setup=_npy_as_npz),
    Case(
        "npz-without-images",
        "train ae --data npz:{tmp}/e.npz --out {tmp}/new",
        "e.npz",
        setup=_npz("e.npz", labels=np.zeros(3)),
    ),
    Case("allow-changed-data-new-run", "train ae --out {tmp}/new --max-steps 1 --allow-changed-data", "--resume"),
    Case(  # once: "the loss became nan at step 2" (bf16, a third stage at 1x1)
        "ae-on-2x2-images",
        "train ae --data npz:{tmp}/tiny.npz --out {tmp}/new",
        "at most 2 stages",
        setup=_npz("tiny.npz", images=np.zeros((8, 2, 2), np.uint8)),
    ),
    Case(
        "folder-empty",
        "train ae --data folder:{tmp}/empty --out {tmp}/new",
        "empty",
        setup=lambda r, t: (t / "empty").mkdir(),
    ),
    Case(
        "metadata-leaves-the-folder",
        "train ae --data folder:{tmp}/images --max-steps 1 --out {tmp}/new",
        "outside.png",
        setup=_folder_with_metadata("../outside.png"),
    ),
    Case(
        "metadata-latin-1",
        "train ae --data folder:{tmp}/images --max-steps 1 --out {tmp}/new",
        "metadata.jsonl",
        setup=_folder_with_metadata("0.png", encoding="latin-1"),
    ),
    # a folder of every mode and size: the first file that differs, and the option that converts them all
    Case(
        "folder-greyscale-and-colour",
        MIXED,
        "b_grey.png has 1); pass channels=1 or channels=3 (--image-channels 1|3)",
        setup=_folder_of_every_mode,
    ),
    Case(
        "folder-of-every-size",
        MIXED + " --image-channels 3",
        "d_palette.png is 12x10); pass resolution=N or (H, W) (--resolution N",
        setup=_folder_of_every_mode,
    ),
    # aediff restore: the degradation, the method and its options
    Case("restore-images-zero", RESTORE + " --mask half --images 0", "--images", 2),
    Case("restore-nothing-asked", RESTORE, "--mask"),
    Case("restore-mask-and-upscale", RESTORE + " --mask half --upscale 2", "one of them"),
    Case("restore-unknown-mask", RESTORE + " --mask circle:3", "unknown mask"),
    Case("restore-box-too-big", RESTORE + " --mask box:8", "does not fit"),
    Case("restore-box-not-whole", RESTORE + " --mask box:2.5", "whole number"),
    Case("restore-random-rate", RESTORE + " --mask random:1.5", "fraction in (0, 1)"),
    Case("restore-upscale-3", RESTORE + " --upscale 3", "does not divide"),
    Case("restore-upscale-1", RESTORE + " --upscale 1", "whole number >= 2"),
    Case("restore-mask-missing", RESTORE + " --mask {tmp}/nope.png", "does not exist"),
    Case("restore-mask-not-image", RESTORE + " --mask {tmp}/m.png", "not an image", setup=_file("m.png", b"text")),
    Case(
        "restore-mask-other-size",
        RESTORE + " --mask {tmp}/m.png",
        "is 5x5 but the images are 8x8",
        setup=_mask_png("m.png", np.full((5, 5), 255)),
    ),
    Case(
        "restore-mask-hides-nothing",
        RESTORE + " --mask {tmp}/m.png",
        "hides no pixel",
        setup=_mask_png("m.png", np.zeros((8, 8))),
    ),
    Case(
        "restore-mask-hides-everything",
        RESTORE + " --mask {tmp}/m.png",
        "hides every pixel",
        setup=_mask_png("m.png", np.full((8, 8), 255)),
    ),
    Case("restore-ddnm-on-ae", RESTORE + " --mask half --method ddnm", "needs a diffusion model"),
    Case("restore-one-pass-without-sigma", RESTORE_DIFFUSION + " --mask half --method one-pass", "--sigma"),
    Case("restore-sigma-on-ae", RESTORE + " --mask half --sigma 0.5", "no noise level"),
    Case("restore-unknown-method", RESTORE + " --mask half --method inpaint", "unknown restoration method"),
    Case("restore-repaint-upscale", RESTORE_DIFFUSION + " --upscale 2 --method repaint", "RePaint fills masked"),
    Case("restore-jump-on-ddnm", RESTORE_DIFFUSION + " --mask half --jump-length 3", "RePaint's option"),
    Case("restore-steps-on-ae", RESTORE + " --mask half --steps 3", "runs no sampler"),
    Case("restore-class-on-ae", RESTORE + " --mask half --class 3", "draw a given class"),
    # aediff encode --features: a diffusion model's inner features
    Case("features-on-ae", "encode {ae} --features unet-mid --sigma 0.5 --out {tmp}/f.npz", "inner features"),
    Case("features-unknown-level", "encode {diffusion} --features unet-top --sigma 0.5 --out {tmp}/f.npz", "unet-top"),
    Case("features-without-sigma", "encode {diffusion} --features unet-mid --out {tmp}/f.npz", "--sigma"),
    Case("features-sigma-zero", "encode {diffusion} --features unet-mid --sigma 0 --out {tmp}/f.npz", "sigma > 0"),
    Case("sigma-without-features", "encode {ae} --sigma 0.5 --out {tmp}/f.npz", "--features"),
]


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_runs):
    from conftest import TINY, TINY_DIFFUSION

    root = tmp_path_factory.mktemp("bad-inputs")
    tiny_runs(
        root,
        [("ae", "ae", {"bottleneck": 8}, TINY), ("diffusion", "diffusion", {"condition": "none"}, TINY_DIFFUSION)],
        steps=3,
    )
    return root


CLI_BATCH = Path(__file__).with_name("cli_batch.py")


def _prepare(case: Case, runs: Path, tmp: Path) -> tuple[list[str], dict]:
    """Make the case's folder (and its damaged run): (argv after `aediff`, the damaged run's digest)."""
    tmp.mkdir(parents=True)
    bad = tmp / "run"
    if case.setup is not None:
        shutil.copytree(runs / "ae", bad)
        case.setup(bad, tmp)
    argv = case.argv.format(ae=runs / "ae", diffusion=runs / "diffusion", tmp=tmp, bad=bad)
    return shlex.split(argv), _digest(bad) if bad.exists() else {}


def _run_batch(argvs: list[list[str]], folders: list[Path], work: Path) -> list[subprocess.CompletedProcess]:
    """Each argv as `aediff ARGV` in its folder, all in one subprocess (tests/cli_batch.py)."""
    work.mkdir(parents=True)
    cases = [{"argv": a, "cwd": str(f)} for a, f in zip(argvs, folders, strict=True)]
    (work / "cases.json").write_text(json.dumps(cases))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200", "AEDIFF_DEBUG": "", "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, str(CLI_BATCH), str(work / "cases.json"), str(work / "results.json")]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=1800, cwd=work)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((work / "results.json").read_text())
    pairs = zip(argvs, results, strict=True)
    return [subprocess.CompletedProcess(a, r["returncode"], r["stdout"], r["stderr"]) for a, r in pairs]


def _problems(case: Case, done: subprocess.CompletedProcess, before: dict, after: dict) -> list[str]:
    out = done.stdout + done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    found = []
    if done.returncode != case.code:
        found.append(f"exit {done.returncode}, expected {case.code}")
    if "Traceback" in out or "internal error" in out:
        found.append("a traceback / internal error")
    if case.code == 1 and (len(lines) != 1 or not lines[0].startswith("error:")):
        found.append(f"{len(lines)} stderr lines, expected one 'error:' line")
    if case.names.lower() not in done.stderr.lower():
        found.append(f"the message does not name {case.names!r}")
    if before != after:
        found.append("the run folder changed")
    return found


def test_every_bad_input_gets_one_clear_line(runs, tmp_path):
    """All cases, two at a time; one failure message lists every case that went wrong."""
    protected = {name: _digest(runs / name) for name in ("ae", "diffusion")}
    prepared = [_prepare(case, runs, tmp_path / case.id) for case in CASES]
    folders = [tmp_path / case.id for case in CASES]
    halves = [slice(0, len(CASES) // 2), slice(len(CASES) // 2, None)]
    with ThreadPoolExecutor(max_workers=2) as pool:
        batches = pool.map(
            lambda h: _run_batch([a for a, _ in prepared[h]], folders[h], tmp_path / f"batch-{h.start}"), halves
        )
        done_all = [done for batch in batches for done in batch]
    failures = []
    for case, folder, (_, before), done in zip(CASES, folders, prepared, done_all, strict=True):
        bad = folder / "run"
        after = _digest(bad) if bad.exists() else {}
        problems = _problems(case, done, before, after)
        if problems:
            tail = (done.stderr.strip().splitlines() or [""])[-1][:300]
            failures.append(f"{case.id} (aediff {case.argv}): {'; '.join(problems)} | stderr: {tail}")
    assert {name: _digest(runs / name) for name in ("ae", "diffusion")} == protected, "a good run changed"
    assert not failures, f"{len(failures)} of {len(CASES)} cases:\n" + "\n".join(failures)


def test_the_table_is_big_enough_and_its_checks_can_fail():
    """At least 60 cases; and the checks flag a traceback, a second line, a wrong exit and an unnamed problem."""
    assert len(CASES) >= 60 and len({c.id for c in CASES}) == len(CASES)
    case = Case("x", "", "checkpoint_every")
    good = subprocess.CompletedProcess([], 1, "", "error: training.checkpoint_every must be >= 1, got 0\n")
    assert _problems(case, good, {}, {}) == []
    for stderr, code in [
        ("Traceback (most recent call last):\nerror: checkpoint_every\n", 1),
        ("error: checkpoint_every\nmore\n", 1),
        ("error: checkpoint_every\n", 0),
        ("error: something else\n", 1),
        ("internal error: ZeroDivisionError checkpoint_every\n", 1),
    ]:
        assert _problems(case, subprocess.CompletedProcess([], code, "", stderr), {}, {}), stderr
    assert _problems(case, good, {"a": "1"}, {"a": "2"}) == ["the run folder changed"]
