"""``model.restore`` (Capability.RESTORE) on every family that declares it, untrained and tiny: the known
pixels come back exactly, the measurement is explained, the result is seeded, and what a model cannot do
is refused naming what can."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from aediff.diffusion.degradations import Downsample, box_mask, random_mask
from aediff.diffusion.restoration import RestoreOptions
from aediff.diffusion.samplers import SamplerOptions
from aediff.errors import ConfigError
from aediff.models import Capability, CapabilityError, Condition, build_model

TINY = {
    "ae": {"image_size": 8, "channels": (8, 16), "bottleneck_dim": 4},
    "vae": {"image_size": 8, "channels": (8, 16), "bottleneck_dim": 4},
    "dae": {"image_size": 8, "channels": (8, 16), "bottleneck_dim": 4},
    "diffusion": {"image_size": 8, "channels": (8, 16), "attention_resolutions": (4,), "embedding_dim": 16},
}
QUICK = SamplerOptions(steps=4)


def images(n: int = 3) -> torch.Tensor:
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1


def model(family: str, **changes):
    torch.manual_seed(0)
    return build_model(family, {**TINY[family], **changes}).eval()


CASES = [
    ("ae", RestoreOptions()),
    ("vae", RestoreOptions()),
    ("dae", RestoreOptions(method="one-pass")),
    ("diffusion", RestoreOptions(sampler=QUICK)),
    ("diffusion", RestoreOptions(method="ddnm", sampler=SamplerOptions(sampler="heun", steps=3))),
    ("diffusion", RestoreOptions(method="repaint", sampler=QUICK, jump_length=2, jump_n_sample=2)),
    ("diffusion", RestoreOptions(method="one-pass", sigma=0.5)),
]


@pytest.mark.parametrize("family,options", CASES, ids=[f"{f}-{o.method or 'default'}" for f, o in CASES])
def test_a_restoration_keeps_every_known_pixel_and_is_seeded(family, options):
    net, truth = model(family), images()
    assert net.can(Capability.RESTORE)
    mask = random_mask(3, (8, 8), 0.4, torch.Generator().manual_seed(1))
    y = mask.forward(truth)
    restored = net.restore(y, mask, options, generator=torch.Generator().manual_seed(2))
    keep = mask.keep.expand_as(truth)
    assert restored.shape == truth.shape and torch.equal(restored[keep], truth[keep])
    assert restored.abs().max() <= 1
    again = net.restore(y, mask, options, generator=torch.Generator().manual_seed(2))
    assert torch.equal(restored, again)


@pytest.mark.parametrize("family,options", [("ae", None), ("diffusion", RestoreOptions(sampler=QUICK))])
def test_super_resolution_explains_the_low_resolution_image(family, options):
    truth = images() * 0.5  # inside [-1, 1] with room: clamping never binds
    y = Downsample(2).forward(truth)
    restored = model(family).restore(y, Downsample(2), options, generator=torch.Generator().manual_seed(3))
    assert restored.shape == truth.shape
    # A x = y wherever clamping to [-1, 1] did not bind (an untrained network saturates some pixels)
    free = Downsample(2).forward((restored.abs() < 1).float()) == 1
    assert free.float().mean() > 0.25
    assert torch.allclose(Downsample(2).forward(restored)[free], y[free], atol=1e-5)


def test_a_class_conditioned_model_restores_toward_the_class_it_is_given():
    net = model("diffusion", **{"conditioning.kind": "class", "num_classes": 3})
    mask = box_mask(2, (8, 8), 4, torch.Generator().manual_seed(4))
    y = mask.forward(images(2))
    given = Condition(class_labels=torch.tensor([0, 2]), guidance=2.0)
    seeded = dict(options=RestoreOptions(sampler=QUICK), generator=torch.Generator().manual_seed(5))
    one = net.restore(y, mask, condition=given, **seeded)
    seeded["generator"] = torch.Generator().manual_seed(5)
    other = net.restore(y, mask, condition=Condition(class_labels=torch.tensor([1, 1]), guidance=2.0), **seeded)
    assert not torch.equal(one, other)  # the label reaches the denoiser


REFUSED = [
    ("diffusion", RestoreOptions(method="one-pass"), "give --sigma"),
    ("ae", RestoreOptions(sigma=0.5), "has no noise level"),
    ("diffusion", RestoreOptions(method="ddnm", sigma=0.5), "--sigma is the one-pass method's noise level"),
    ("diffusion", RestoreOptions(method="one-pass", sigma=-1.0), "--sigma must be a noise level > 0"),
    ("ae", RestoreOptions(method="ddnm"), "ddnm needs a diffusion model"),
    ("ae", RestoreOptions(method="repaint"), "restores with one-pass, not repaint"),
    ("ae", RestoreOptions(method="inpaint"), "unknown restoration method 'inpaint'"),
    ("diffusion", RestoreOptions(method="ddnm", jump_length=5), "--jump-length is RePaint's option"),
    ("ae", RestoreOptions(sampler=QUICK), "runs no sampler"),
    ("diffusion", RestoreOptions(method="repaint", sampler=SamplerOptions(sampler="heun")), "only --steps applies"),
    ("diffusion", RestoreOptions(method="repaint", jump_n_sample=0), "resamplings must be a whole number >= 1"),
]


@pytest.mark.parametrize("family,options,message", REFUSED, ids=[m for _, _, m in REFUSED])
def test_a_method_the_model_cannot_run_is_refused_naming_what_can(family, options, message):
    mask = box_mask(3, (8, 8), 4)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        model(family).restore(mask.forward(images()), mask, options)


def test_repaint_refuses_a_degradation_that_hides_no_pixel_outright():
    y = Downsample(2).forward(images())
    with pytest.raises(ConfigError, match="RePaint fills masked pixels; 2x super-resolution hides none"):
        model("diffusion").restore(y, Downsample(2), RestoreOptions(method="repaint"))


def test_a_mask_or_factor_that_does_not_fit_the_model_is_refused():
    with pytest.raises(ConfigError, match="the mask is 6x6 but the images are 8x8"):
        mask = box_mask(3, (6, 6), 2)
        model("ae").restore(mask.forward(torch.zeros(3, 1, 6, 6)), mask)
    with pytest.raises(ConfigError, match="an upscale factor of 3 does not divide the 8x8 images"):
        model("ae").restore(torch.zeros(3, 1, 2, 2), Downsample(3))


def test_families_that_cannot_restore_say_who_can():
    classifier = build_model("classifier", {"image_size": 8, "channels": (8, 16), "feature_dim": 8})
    assert not classifier.can(Capability.RESTORE)
    with pytest.raises(CapabilityError, match="an autoencoder, or a diffusion model"):
        classifier.restore(images(), box_mask(3, (8, 8), 2))


# --- latent diffusion: DDNM by decode-project-encode ------------------------------------------------------------

V1_LATENT = Path(__file__).parent / "fixtures" / "v1-runs" / "latent-diffusion"


def latent_model():
    import aediff

    return aediff.load(V1_LATENT, device="cpu").model


def test_latent_diffusion_restores_with_ddnm_through_its_autoencoder():
    net, truth = latent_model(), images()
    assert net.can(Capability.RESTORE) and net.restore_methods == ("ddnm",)
    mask = box_mask(3, (8, 8), 4, torch.Generator().manual_seed(1))
    y = mask.forward(truth)
    restored = net.restore(y, mask, RestoreOptions(sampler=QUICK), generator=torch.Generator().manual_seed(2))
    keep = mask.keep.expand_as(truth)
    assert torch.equal(restored[keep], truth[keep])  # the last projection is in pixels: exact
    assert torch.equal(restored, net.restore(y, mask, RestoreOptions(sampler=QUICK),
                                             generator=torch.Generator().manual_seed(2)))  # fmt: skip
    low = Downsample(2).forward(truth * 0.5)
    upscaled = net.restore(low, Downsample(2), RestoreOptions(sampler=QUICK), generator=torch.Generator())
    free = Downsample(2).forward((upscaled.abs() < 1).float()) == 1  # where clamping did not bind
    assert free.float().mean() > 0.25
    assert torch.allclose(Downsample(2).forward(upscaled)[free], low[free], atol=1e-5)


def test_decode_project_encode_carries_the_constraint_only_as_far_as_the_autoencoder_inverts():
    """Each step's latent estimate, decoded, agrees with y about as well as the autoencoder reconstructs: the
    error is measured, not zero, and far below a blind guess's."""
    from aediff.diffusion.restoration import decoded_projected_denoiser

    net, truth = latent_model(), images()
    mask = box_mask(3, (8, 8), 4, torch.Generator().manual_seed(1))
    y = mask.forward(truth)
    blind = lambda z, sigma: torch.zeros_like(z)  # noqa: E731
    step = decoded_projected_denoiser(blind, mask, y, net.output_images, net.diffusion_input)
    z = step(torch.zeros(3, *net.space_shape), torch.tensor(1.0))
    error = (mask.forward(net.output_images(z)) - y).pow(2).mean().sqrt()
    guess = (mask.forward(net.output_images(torch.zeros_like(z))) - y).pow(2).mean().sqrt()
    assert 0 < error < guess


@pytest.mark.parametrize(
    "options,message",
    [(RestoreOptions(method="repaint"), "repaint needs a pixel diffusion model"),
     (RestoreOptions(method="one-pass", sigma=0.5), "this model restores with ddnm, not one-pass")],
)  # fmt: skip
def test_latent_diffusion_refuses_what_does_not_reach_its_latents(options, message):
    mask = box_mask(3, (8, 8), 4)
    with pytest.raises(ConfigError, match=message):
        latent_model().restore(mask.forward(images()), mask, options)
