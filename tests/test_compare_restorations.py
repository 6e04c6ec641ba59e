"""Section 10's plan: the masking DAE in the comparison, and the degradations it is measured on, sized to the
data's images by default so that any dataset runs (a box that does not fit, or a factor that does not divide,
is left out or refused before training)."""

from __future__ import annotations

import pytest

from aediff.errors import ConfigError
from aediff.reports.compare import CompareConfig, compare_plan


@pytest.mark.parametrize(
    "shape,expected",
    [
        ((1, 28, 28), ["random:0.3", "box:10", "half", "lines:3", "upscale:2"]),  # the demo's digits
        ((1, 8, 8), ["random:0.3", "box:3", "half", "lines:3", "upscale:2"]),  # sklearn's digits
        ((3, 27, 27), ["random:0.3", "box:10", "half", "lines:3"]),  # 2 does not divide 27: no 2x
    ],
)
def test_default_degradations_are_sized_to_the_images(shape, expected):
    assert CompareConfig().restorations_for(shape) == expected


def test_given_degradations_follow_the_masking_daes_own_and_are_checked_at_once():
    config = CompareConfig(masking=0.5, restore_specs=("half", "random:0.5", "upscale:4"))
    assert config.restorations_for((1, 28, 28)) == ["random:0.5", "half", "upscale:4"]  # its own masks once, first
    with pytest.raises(ConfigError, match="--restore-specs blob:3: unknown degradation"):
        CompareConfig(restore_specs=("blob:3",))
    with pytest.raises(ConfigError, match="--masking"):
        CompareConfig(masking=1.0)


def test_the_plan_has_one_masking_dae_and_names_each_restorer():
    plan = compare_plan(CompareConfig(masking=0.4))
    roles = {p.restorer: p.name for p in plan if p.restorer}
    assert roles == {"plain": "ae-16", "masking": "dae-mask", "diffusion": "diffusion"}
    dae = next(p for p in plan if p.name == "dae-mask")
    assert dae.model["corruption"] == "mask:0.4" and dae.sweep is None  # not one of section 3's noise sweep
