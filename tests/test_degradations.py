"""The known degradations of restoration (aediff.diffusion.degradations): each pseudo-inverse is the
Moore-Penrose one (checked against torch.linalg.pinv of the operator's matrix), the projection satisfies
A x = y and keeps every known pixel, the masks are seeded, and a degradation that cannot apply is refused."""

from __future__ import annotations

import pytest
import torch

from aediff.diffusion.degradations import (
    Downsample,
    Greyscale,
    Mask,
    box_mask,
    half_mask,
    line_mask,
    random_mask,
)
from aediff.errors import ConfigError


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


OPERATORS = {
    "box": lambda: box_mask(1, (6, 6), 3, seeded()),
    "random": lambda: random_mask(1, (6, 6), 0.5, seeded()),
    "half": lambda: half_mask(1, (6, 6), seeded()),
    "lines": lambda: line_mask(1, (6, 6), 2, seeded()),
    "downsample 2": lambda: Downsample(2),
    "downsample 3": lambda: Downsample(3),
    "grey": lambda: Greyscale(3),
}
CHANNELS = {"grey": 3}


def matrix_of(op, shape: tuple[int, ...]) -> torch.Tensor:
    """The operator as a matrix [outputs, inputs] of float64, column by column."""
    size = int(torch.tensor(shape).prod())
    basis = torch.eye(size, dtype=torch.float64).reshape(size, *shape)
    return torch.stack([op.forward(e[None]).flatten() for e in basis], dim=1)


@pytest.mark.parametrize("name", OPERATORS)
def test_the_pseudo_inverse_is_moore_penroses(name):
    op, shape = OPERATORS[name](), (CHANNELS.get(name, 1), 6, 6)
    a = matrix_of(op, shape)
    y = op.forward(torch.randn(1, *shape, dtype=torch.float64, generator=seeded(1)))
    assert torch.allclose(op.pseudo_inverse(y).flatten(), torch.linalg.pinv(a) @ y.flatten(), atol=1e-10)


@pytest.mark.parametrize("name", OPERATORS)
def test_the_projection_explains_the_measurement_exactly(name):
    op, shape = OPERATORS[name](), (CHANNELS.get(name, 1), 6, 6)
    x, guess = (torch.rand(1, *shape, generator=seeded(s)) * 2 - 1 for s in (2, 3))
    y = op.forward(x)
    restored = op.project(guess, y)
    assert torch.allclose(op.forward(restored), y, atol=1e-6)  # DDNM's range-space consistency A x_hat = y
    assert torch.allclose(op.forward(op.pseudo_inverse(y)), y, atol=1e-6)
    assert torch.allclose(op.project(restored, y), restored, atol=1e-6)  # a projection: twice is once


def test_a_masked_composite_keeps_every_known_pixel_bit_for_bit():
    mask = box_mask(4, (8, 8), 4, seeded())
    x, guess = torch.rand(4, 3, 8, 8, generator=seeded(4)), torch.rand(4, 3, 8, 8, generator=seeded(5))
    restored = mask.project(guess, mask.forward(x))
    keep = mask.keep.expand_as(x)
    assert torch.equal(restored[keep], x[keep]) and torch.equal(restored[~keep], guess[~keep])
    assert torch.equal(mask.missing(x), ~mask.keep)


def test_masks_are_seeded_and_have_their_shape():
    assert torch.equal(box_mask(5, (10, 10), 4, seeded(7)).keep, box_mask(5, (10, 10), 4, seeded(7)).keep)
    assert not torch.equal(box_mask(5, (10, 10), 4, seeded(7)).keep, box_mask(5, (10, 10), 4, seeded(8)).keep)
    box = box_mask(5, (10, 10), 4, seeded())
    assert (~box.keep).flatten(1).sum(1).tolist() == [16] * 5
    assert half_mask(8, (10, 10), seeded()).missing_fraction().tolist() == [0.5] * 8
    rate = random_mask(64, (28, 28), 0.3, seeded()).missing_fraction().mean().item()
    assert abs(rate - 0.3) < 0.01
    lines = line_mask(3, (28, 28), 3, seeded()).missing_fraction()
    assert bool(((lines > 0) & (lines < 0.3)).all())


def test_downsampling_is_the_block_mean():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    assert Downsample(2).forward(x).flatten().tolist() == [2.5, 4.5, 10.5, 12.5]
    assert Downsample(2).pseudo_inverse(torch.tensor([[[[1.0]]]])).flatten().tolist() == [1.0] * 4


REFUSED = [
    (lambda: Downsample(1), "whole number >= 2"),
    (lambda: Downsample(True), "whole number >= 2"),
    (lambda: Downsample(3).check((1, 1, 28, 28)), "does not divide the 28x28 images; use a factor that divides both"),
    (lambda: Downsample(3).check((1, 1, 28, 28)), "(e.g. 2 or 4 or 7)"),
    (lambda: box_mask(1, (8, 8), 8), "does not fit a 8x8 image"),
    (lambda: random_mask(1, (8, 8), 1.0), "fraction in (0, 1)"),
    (lambda: random_mask(1, (8, 8), 0.0), "fraction in (0, 1)"),
    (lambda: line_mask(1, (8, 8), 0), "1 to 64 scratches"),
    (lambda: Mask(torch.ones(1, 1, 4, 4, dtype=torch.bool)), "hides no pixel"),
    (lambda: Mask(torch.zeros(1, 1, 4, 4, dtype=torch.bool)), "hides every pixel"),
    (lambda: Mask(torch.ones(1, 4, 4)), "[N or 1, 1, H, W] bool"),
    (lambda: box_mask(1, (8, 8), 2).check((1, 1, 10, 10)), "the mask is 8x8 but the images are 10x10"),
    (lambda: box_mask(2, (8, 8), 2).check((3, 1, 8, 8)), "2 masks for 3 images"),
    (lambda: Greyscale(3).check((1, 1, 8, 8)), "restores colour images; these have 1 channel"),
]  # fmt: skip


@pytest.mark.parametrize("make,message", REFUSED, ids=[m for _, m in REFUSED])
def test_a_degradation_that_cannot_apply_is_refused_naming_the_fix(make, message):
    with pytest.raises(ConfigError) as refused:
        make()
    assert message in str(refused.value)


@pytest.mark.parametrize(
    "spec,message",
    [("box:x", "box:SIDE takes a whole number"), ("half:2", "half takes no value"), ("circle:3", "unknown degradation"),
     ("random:lots", "random:RATE takes the fraction"), ("upscale:1.5", "upscale:FACTOR takes a whole number")],
)  # fmt: skip
def test_a_bad_spec_is_refused_naming_the_form(spec, message):
    from aediff.diffusion.degradations import degradation_from_spec

    with pytest.raises(ConfigError, match=message):
        degradation_from_spec(spec, 1, (8, 8))


def test_every_spec_form_builds_its_degradation():
    from aediff.diffusion.degradations import degradation_from_spec

    built = {spec: degradation_from_spec(spec, 2, (8, 8), seeded()) for spec in
             ("box:3", "random:0.5", "half", "lines:2", "upscale:2")}  # fmt: skip
    assert [b.describe() for b in built.values()] == ["box 3", "random 0.5", "half", "lines 2", "2x super-resolution"]
    assert [b.kind for b in built.values()] == ["mask"] * 4 + ["downsample"]


def test_a_valid_degradation_passes_its_check():
    box_mask(3, (8, 8), 2).check((3, 1, 8, 8))
    box_mask(1, (8, 8), 2).check((5, 3, 8, 8))
    Downsample(4).check((1, 1, 28, 28))
    Greyscale(3).check((1, 3, 8, 8))
