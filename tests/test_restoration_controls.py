"""The classical controls of restoration (aediff.evaluation.restoration): each restores what it should
(biharmonic inpainting recovers a smooth ramp inside a hole, bicubic upsampling beats copying on a smooth
image), keeps the measurement, and is refused for a degradation it does not apply to."""

from __future__ import annotations

import pytest
import torch

from aediff.diffusion.degradations import Downsample, Greyscale, box_mask
from aediff.errors import ConfigError
from aediff.evaluation.restoration import classical_controls, classical_restore
from aediff.metrics import region_psnr


def ramp(n: int = 2, size: int = 16) -> torch.Tensor:
    """Smooth images: a plane tilted differently per image, in [-0.8, 0.8]."""
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    return torch.stack([0.4 * (xx + yy), 0.6 * xx - 0.2 * yy][:n])[:, None]


def test_the_controls_are_the_ones_each_degradation_takes():
    assert classical_controls(box_mask(1, (8, 8), 2)) == ["mean fill", "biharmonic"]
    assert classical_controls(Downsample(2)) == ["nearest", "bicubic"]
    assert classical_controls(Greyscale(3)) == []
    with pytest.raises(ConfigError, match="'bicubic' is not a control for box 2; use mean fill, biharmonic"):
        classical_restore("bicubic", torch.zeros(1, 1, 8, 8), box_mask(1, (8, 8), 2))


def test_mean_fill_puts_each_images_known_mean_in_its_holes():
    x = ramp()
    mask = box_mask(2, (16, 16), 6, torch.Generator().manual_seed(0))
    filled = classical_restore("mean fill", mask.forward(x), mask)
    for i in range(2):
        known, hole = mask.keep[i, 0], ~mask.keep[i, 0]
        assert torch.allclose(filled[i, 0][hole], x[i, 0][known].mean().expand(int(hole.sum())), atol=1e-6)
        assert torch.equal(filled[i, 0][known], x[i, 0][known])


def test_biharmonic_inpainting_recovers_a_smooth_ramp_and_beats_mean_fill():
    x = ramp()
    mask = box_mask(2, (16, 16), 6, torch.Generator().manual_seed(1))
    y, hole = mask.forward(x), ~mask.keep
    biharmonic = region_psnr(classical_restore("biharmonic", y, mask), x, hole)
    mean = region_psnr(classical_restore("mean fill", y, mask), x, hole)
    assert bool((biharmonic > 40).all()) and bool((biharmonic > mean + 15).all())


def test_bicubic_beats_copying_on_a_smooth_image_and_both_explain_the_low_resolution():
    x = ramp() ** 3 + 0.3 * ramp()  # smooth but not linear
    y = Downsample(2).forward(x)
    bicubic, nearest = (classical_restore(name, y, Downsample(2)) for name in ("bicubic", "nearest"))
    everywhere = torch.ones(1, 1, 16, 16, dtype=torch.bool)
    assert bool((region_psnr(bicubic, x, everywhere) > region_psnr(nearest, x, everywhere) + 3).all())
    for restored in (bicubic, nearest):
        assert torch.allclose(Downsample(2).forward(restored), y, atol=1e-6)


def test_region_psnr_scores_the_region_alone():
    x, y = torch.zeros(2, 3, 4, 4), torch.zeros(2, 3, 4, 4)
    y[:, :, :2] = 0.2  # an error in the top half only
    top = torch.zeros(1, 1, 4, 4, dtype=torch.bool)
    top[..., :2, :] = True
    assert region_psnr(x, y, top).tolist() == pytest.approx([10 * torch.log10(torch.tensor(4 / 0.04)).item()] * 2)
    assert torch.isinf(region_psnr(x, y, ~top)).all()
    with pytest.raises(ConfigError, match="region is empty"):
        region_psnr(x, y, torch.zeros(1, 1, 4, 4, dtype=torch.bool))


def test_the_protocol_scores_every_method_and_control_on_the_same_holes():
    from aediff.diffusion.restoration import RestoreOptions
    from aediff.diffusion.samplers import SamplerOptions
    from aediff.evaluation.restoration import control_rows, restoration_rows
    from aediff.models import build_model

    torch.manual_seed(0)
    model = build_model("diffusion", {"image_size": 16, "channels": (8, 16), "attention_resolutions": (4,),
                                      "embedding_dim": 16}).eval()  # fmt: skip
    x = ramp()
    methods = [RestoreOptions(sampler=SamplerOptions(steps=3)),
               RestoreOptions(method="repaint", sampler=SamplerOptions(steps=4), jump_length=2, jump_n_sample=2),
               RestoreOptions(method="one-pass", sigma=0.5)]  # fmt: skip
    rows = restoration_rows(model, x, ["box:6", "upscale:2"], methods[:1], seed=3)
    rows += restoration_rows(model, x, ["box:6"], methods[1:], seed=3)
    controls = control_rows(x, ["box:6", "upscale:2"], seed=3)
    assert [(r.degradation, r.method) for r in rows] == [
        ("box 6", "ddnm"),
        ("2x super-resolution", "ddnm"),
        ("box 6", "repaint"),
        ("box 6", "one-pass"),
    ]
    assert [(r.degradation, r.method) for r in controls] == [
        ("box 6", "mean fill"), ("box 6", "biharmonic"), ("2x super-resolution", "nearest"),
        ("2x super-resolution", "bicubic")]  # fmt: skip
    # repaint, 4 steps, j = 2, r = 2: one jump point (level 0), one extra pass of 2 levels
    assert [r.network_evaluations for r in rows] == [3, 3, 4 + 2, 1] and controls[0].network_evaluations == 0
    box = [r for r in rows + controls if r.degradation == "box 6"]
    assert len({r.missing_fraction for r in box}) == 1  # the same holes for every method and control
    assert rows[1].missing_fraction == 1.0 and all(r.num_images == 2 for r in rows + controls)
    biharmonic = next(r for r in controls if r.method == "biharmonic")
    assert biharmonic.psnr > 40 and 0.99 < biharmonic.ssim <= 1 and biharmonic.per_image.psnr.shape == (2,)
