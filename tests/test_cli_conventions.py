"""The command line as a user types it, in a subprocess: usage mistakes print the usage and one line and exit
2; aediff's own errors print one line and exit 1; neither shows a Python traceback. `-h` works on every
command, `--version` prints the version."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from aediff import __version__
from aediff.cli import app

V1 = Path(__file__).parent / "fixtures" / "v1-runs"
SCRIPT = shutil.which("aediff", path=str(Path(sys.executable).parent))
COMMAND = [SCRIPT] if SCRIPT else [sys.executable, "-m", "aediff.cli"]


def aediff(*args: str, cwd: Path | None = None, debug: bool = False) -> tuple[int, str]:
    env = {**os.environ, "COLUMNS": "80", "NO_COLOR": "1"}  # a narrow terminal: still one line
    env.pop("AEDIFF_DEBUG", None)
    if debug:
        env["AEDIFF_DEBUG"] = "1"
    done = subprocess.run([*COMMAND, *map(str, args)], capture_output=True, text=True, timeout=120, cwd=cwd, env=env)
    return done.returncode, done.stdout + done.stderr


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.lower().startswith(("error", "internal error"))]


def command_names() -> list[str]:
    import typer.main

    return sorted(typer.main.get_command(app).commands)


USAGE_MISTAKES = [
    ([], "Usage"),  # no arguments: the help, as a usage error
    (["sample"], "Missing argument 'RUN'"),
    (["train", "ae", "--no-such-option"], "No such option"),
    (["sample", "runs/x", "--sampler", "foo"], "'foo' is not one of"),
    (["sample", "runs/x", "--samples", "0"], "'--samples': Input should be greater than or equal to 1"),
    (["sample", "runs/x", "--samples", "abc"], "'--samples': Input should be a valid integer"),
    (["train", "gan"], "'gan' is not one of"),
    (["reconstruct", "runs/x", "--split", "validation"], "'validation' is not one of"),
    (["sample", "runs/x", "--steps", "0"], "'--steps': Input should be greater than or equal to 1"),
    (["nosuchcommand"], "No such command"),
]


@pytest.mark.parametrize("args,message", USAGE_MISTAKES, ids=[" ".join(a) or "no-args" for a, _ in USAGE_MISTAKES])
def test_a_usage_mistake_prints_usage_and_exits_2(args, message, tmp_path):
    code, out = aediff(*args, cwd=tmp_path)
    assert code == 2, out
    assert message in out and "Usage" in out
    assert "Traceback" not in out


V1_DIFFUSION = V1 / "diffusion-class"
OWN_ERRORS = [
    (["sample", V1_DIFFUSION, "--eta", "0.5"], "--eta applies to ddim, not dpm++"),
    (["sample", V1_DIFFUSION, "--sampler", "ddim", "--s-churn", "1"], "--s-churn applies to euler and heun, not ddim"),
    (["sample", V1 / "vae", "--sampler", "ddim"], "diffusion sampler"),
    (["sample", V1 / "classifier"], "generate images"),
    (["sample", V1_DIFFUSION, "--class", "seven"], "class index"),
    (["sample", V1 / "diffusion-text", "--class", "3"], "draw a given class"),
    (["encode", V1_DIFFUSION], "encode images"),
    (["eval-nll", V1 / "ae"], "no likelihood bound"),
    (["sample", "no/such/run"], "does not exist"),
    (["train", "vae", "--data", "digits", "--noise", "gaussian:0.5"], "--noise does not apply to 'vae'"),
    (["train", "ae", "--data", "digits", "--set", "nosuchfield=3"], "no field 'nosuchfield'"),
    (["train", "ae", "--data", "digits", "--max-time", "soon"], "--max-time 'soon' is not a duration"),
    (["train", "ae", "--data", "digits", "--widths", "16,abc"], "--widths takes comma-separated whole numbers"),
    (["compare", "--budget", "inf"], "positive, finite duration"),
]


@pytest.mark.parametrize("args,message", OWN_ERRORS, ids=[" ".join(map(str, a[:3])) for a, _ in OWN_ERRORS])
def test_an_aediff_error_is_one_line_and_exits_1(args, message, tmp_path):
    code, out = aediff(*args, cwd=tmp_path)
    assert code == 1, out
    assert "Traceback" not in out
    lines = error_lines(out)
    assert len(lines) == 1 and message in out.replace("\n", " "), out


def test_an_existing_out_is_not_replaced_without_overwrite(tmp_path):
    (tmp_path / "samples.png").write_bytes(b"keep me")
    code, out = aediff("sample", V1 / "vae", "--samples", "2", cwd=tmp_path)
    assert code == 1 and "--overwrite" in out and (tmp_path / "samples.png").read_bytes() == b"keep me"
    code, out = aediff("sample", V1 / "vae", "--samples", "2", "--overwrite", cwd=tmp_path)
    assert code == 0, out
    assert (tmp_path / "samples.png").read_bytes()[:4] == b"\x89PNG"


def test_debug_mode_shows_the_traceback(tmp_path):
    code, out = aediff("sample", "no/such/run", cwd=tmp_path, debug=True)
    assert code == 1 and "Traceback" in out


def test_version():
    code, out = aediff("--version")
    assert code == 0 and out.strip() == f"aediff {__version__}"


@pytest.mark.parametrize("name", command_names())
def test_every_command_has_short_help(name):
    code, out = aediff(name, "-h")
    assert code == 0, out
    assert "Usage" in out and "--help" in out and "Traceback" not in out


def test_the_mode_names_are_the_registered_ones():
    from typing import get_args

    from aediff.diffusion.samplers import SAMPLER_NAMES
    from aediff.models import MODELS
    from aediff.modes import Family, SamplerName

    assert get_args(SamplerName) == tuple(SAMPLER_NAMES)
    assert sorted(get_args(Family)) == sorted(MODELS)


def test_env_lists_versions_and_offline_assets():
    code, out = aediff("env")
    assert code == 0, out
    for word in ("torch", "digits", "minilm"):
        assert word in out.lower()
