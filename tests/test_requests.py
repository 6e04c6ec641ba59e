"""aediff.requests: one parser from what a user asks for to a Condition and SamplerOptions. Every declared range
is accepted at its ends and refused just past them; the command line (in a subprocess, as a user types it) and
the page's handler give the same words for the same bad value."""

import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from aediff import load
from aediff.diffusion import SamplerOptions
from aediff.errors import ConfigError
from aediff.models import CapabilityError, build_model
from aediff.requests import (
    GUIDANCE_MAX,
    GUIDANCE_MIN,
    MAX_SAMPLING_STEPS,
    RequestError,
    parse_guidance,
    parse_sampler_options,
    parse_sampling,
    parse_steps,
)

V1 = Path(__file__).parent / "fixtures" / "v1-runs"
CLASSES = V1 / "diffusion-class"  # a class-conditioned diffusion run, classes 0..9
TINY = {"image_size": 8, "channels": (8, 16), "attention_resolutions": (4,), "embedding_dim": 16, "steps": 3}


@pytest.fixture(scope="module")
def classes():
    return load(CLASSES, device="cpu").model


@pytest.fixture(scope="module")
def unconditional():
    return build_model("diffusion", TINY)


@pytest.fixture(scope="module")
def ae():
    return load(V1 / "ae", device="cpu").model


# --- guidance ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("value", [GUIDANCE_MIN, 1, 3.5, GUIDANCE_MAX, "0", " 20 ", "7.5"])
def test_guidance_in_its_declared_range_is_taken(classes, value):
    assert parse_guidance(value, classes) == float(value)


@pytest.mark.parametrize("value", [-0.01, GUIDANCE_MAX + 0.01, math.inf, math.nan, "-1", "21", "1e9"])
def test_guidance_outside_its_range_is_refused(classes, value):
    with pytest.raises(RequestError, match=r"guidance must be from 0 to 20 \(1 = none\), got"):
        parse_guidance(value, classes)


def test_guidance_must_be_a_number_and_needs_a_conditioned_diffusion_model(classes, unconditional, ae):
    with pytest.raises(RequestError, match="guidance takes a number"):
        parse_guidance("strong", classes)
    assert parse_guidance(None, classes) is None and parse_guidance("", classes) is None
    assert parse_guidance(1, unconditional) == 1.0  # 1 is no guidance: any diffusion model takes it
    with pytest.raises(RequestError, match="guidance 3 needs a class- or text-conditioned run"):
        parse_guidance(3, unconditional)
    with pytest.raises(CapabilityError, match="guidance needs a model that can"):
        parse_guidance(1, ae)


# --- class, prompt -------------------------------------------------------------------------------------------
def test_a_class_is_an_index_of_the_model_or_all(classes):
    assert parse_sampling(classes, 4, class_=0).condition.class_labels == 0
    assert parse_sampling(classes, 4, class_="9").condition.class_labels == 9
    labels = parse_sampling(classes, 12, class_="all").condition.class_labels
    assert torch.equal(labels, torch.arange(12) % 10)
    for value in (-1, 10, "10"):
        with pytest.raises(RequestError, match="is not a class of this run: it has classes 0..9"):
            parse_sampling(classes, 4, class_=value)
    with pytest.raises(RequestError, match="class takes a class index or 'all', got 'seven'"):
        parse_sampling(classes, 4, class_="seven")
    with pytest.raises(RequestError, match="negative class takes a class index, got 'all'"):
        parse_sampling(classes, 4, negative_class="all")


def test_what_the_model_cannot_draw_is_refused(classes, ae):
    with pytest.raises(CapabilityError, match="draw a given caption"):
        parse_sampling(classes, 4, prompt="a seven")
    with pytest.raises(CapabilityError, match="draw a given class"):
        parse_sampling(ae, 4, class_=3)


def test_nothing_asked_leaves_everything_to_the_model(classes, ae):
    blank = parse_sampling(classes, 4, class_="", negative_class=" ", prompt=None, guidance="", sampler="")
    assert blank.condition is None and blank.options is None
    assert parse_sampling(ae, 4).condition is None
    guided = parse_sampling(classes, 4, class_=3, guidance=2)
    assert guided.condition.class_labels == 3 and guided.condition.guidance == 2.0


# --- sampler options -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("value,steps", [(1, 1), ("20", 20), (20.0, 20), (MAX_SAMPLING_STEPS, MAX_SAMPLING_STEPS)])
def test_steps_in_range_are_taken(value, steps):
    assert parse_steps(value) == steps


@pytest.mark.parametrize("value", [0, -3, MAX_SAMPLING_STEPS + 1, 2.5, "x", math.inf])
def test_steps_out_of_range_are_refused(value):
    with pytest.raises(RequestError, match=f"steps must be a whole number from 1 to {MAX_SAMPLING_STEPS}"):
        parse_steps(value)


def test_sampler_options_are_checked_against_the_chosen_sampler(classes, ae):
    assert parse_sampler_options(classes, "ddim", 5, eta=0.5) == SamplerOptions(sampler="ddim", steps=5, eta=0.5)
    with pytest.raises(ConfigError, match="--eta applies to ddim, not dpm\\+\\+"):  # the run's default sampler
        parse_sampler_options(classes, eta=0.5)
    with pytest.raises(ConfigError, match="--eta must be between 0"):
        parse_sampler_options(classes, "ddim", eta=1.5)
    with pytest.raises(ConfigError, match="unknown sampler 'plms'"):
        parse_sampler_options(classes, "plms")
    with pytest.raises(CapabilityError, match="sampler options"):
        parse_sampler_options(ae, "euler")


# --- both front ends, the same words -------------------------------------------------------------------------
SCRIPT = shutil.which("aediff", path=str(Path(sys.executable).parent))
COMMAND = [SCRIPT] if SCRIPT else [sys.executable, "-m", "aediff.cli"]


def cli_error(tmp_path: Path, *args: str) -> str:
    """The one error line of `aediff sample` with ``args``, typed as a user would (exit 1)."""
    env = {**os.environ, "COLUMNS": "300", "NO_COLOR": "1"}
    env.pop("AEDIFF_DEBUG", None)
    done = subprocess.run(
        [*COMMAND, "sample", *map(str, args), "--samples", "2", "--out", str(tmp_path / "s.png")],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.startswith("error: ")]
    assert done.returncode == 1 and len(lines) == 1, done.stdout + done.stderr
    return lines[0].removeprefix("error: ")


def page_error(catalog, **fields: str) -> str:
    from aediff.app import handlers

    with pytest.raises(ConfigError) as caught:
        next(handlers.generate(catalog, handlers.GenerateRequest(**fields)))
    return str(caught.value)


@pytest.mark.parametrize(
    "run,cli,page",
    [
        ("diffusion-class", ["--guidance", "25"], {"guidance": "25"}),
        ("diffusion-class", ["--class", "12"], {"class_index": "12"}),
        ("diffusion-class", ["--negative-class", "all"], {"negative_class": "all"}),
        ("ae", ["--guidance", "3"], {"guidance": "3"}),
    ],
)
def test_the_command_line_and_the_page_refuse_a_bad_value_in_the_same_words(tmp_path, run, cli, page):
    from aediff.app.handlers import Catalog

    catalog = Catalog.open([V1 / "diffusion-class", V1 / "ae"])
    assert cli_error(tmp_path, V1 / run, *cli) == page_error(catalog, run=run, **page)
