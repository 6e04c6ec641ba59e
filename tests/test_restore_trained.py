"""Trained tiny models fill holes better than the trivial control: a masking DAE and a diffusion model (DDNM)
trained briefly on digits beat mean fill on the missing pixels of test images, paired over the same images
and masks; an untrained network does not (the check can fail)."""

from __future__ import annotations

import pytest
import torch

import aediff
from aediff.data import load_dataset
from aediff.diffusion.degradations import degradation_from_spec
from aediff.diffusion.restoration import RestoreOptions
from aediff.diffusion.samplers import SamplerOptions
from aediff.evaluation.restoration import classical_restore
from aediff.metrics import region_psnr
from aediff.models import build_model

pytestmark = pytest.mark.slow  # trains two models: `make test-full` and CI run it

TINY_AE = {"channels": (16, 32), "bottleneck_dim": 16}
TINY_UNET = {"channels": (16, 32), "attention_resolutions": (), "embedding_dim": 32}


def _gain_over_mean_fill(model, spec: str, options=None) -> tuple[float, float]:
    """Mean and standard error of (model's PSNR - mean fill's) on the missing pixels of 120 test images."""
    x = load_dataset("digits", "test").batch(torch.arange(120))["images"]
    operator = degradation_from_spec(spec, len(x), (8, 8), torch.Generator().manual_seed(0))
    y = operator.forward(x)
    restored = model.restore(y, operator, options, generator=torch.Generator().manual_seed(0))
    missing = operator.missing(x)
    gap = region_psnr(restored, x, missing) - region_psnr(classical_restore("mean fill", y, operator), x, missing)
    return float(gap.mean()), float(gap.std() / len(gap) ** 0.5)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("trained")
    training = {"batch_size": 64, "warmup_steps": 10, "snapshots": ()}
    aediff.train("dae", out / "dae", "digits", model={**TINY_AE, "corruption": "mask:0.3"}, progress=False,
                 training={**training, "max_steps": 600})  # fmt: skip
    aediff.train("diffusion", out / "diffusion", "digits", model=TINY_UNET, progress=False,
                 training={**training, "max_steps": 600})  # fmt: skip
    return aediff.load(out / "dae").model, aediff.load(out / "diffusion").model


def test_a_trained_masking_dae_beats_mean_fill_on_its_own_masks(trained):
    mean, se = _gain_over_mean_fill(trained[0], "random:0.3")
    assert mean - 2 * se > 0.5, (mean, se)


def test_a_trained_diffusion_model_beats_mean_fill_with_ddnm(trained):
    mean, se = _gain_over_mean_fill(trained[1], "box:3", RestoreOptions(sampler=SamplerOptions(steps=10)))
    assert mean - 2 * se > 0.5, (mean, se)


def test_the_same_untrained_networks_do_not():
    torch.manual_seed(0)
    dae = build_model("dae", {**TINY_AE, "image_size": 8, "corruption": "mask:0.3"}).eval()
    assert _gain_over_mean_fill(dae, "random:0.3")[0] < 0.5
    diffusion = build_model("diffusion", {**TINY_UNET, "image_size": 8}).eval()
    assert _gain_over_mean_fill(diffusion, "box:3", RestoreOptions(sampler=SamplerOptions(steps=10)))[0] < 0.5
