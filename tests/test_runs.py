"""The run folder and the model interface: `aediff.load` returns a Run record; version-1 folders (made by the
code of their time, see tests/fixtures/README.md) load and compute what they computed then; every family
declares its capabilities and implements exactly the methods they promise."""

import json
from pathlib import Path

import pytest
import torch

import aediff
from aediff.models import MODELS, Capability, CapabilityError, Condition, Model, build_model
from aediff.models.interface import METHODS

V1 = Path(__file__).parent / "fixtures" / "v1-runs"
EXPECTED = json.loads((V1 / "expected.json").read_text())


def _outputs(run: aediff.Run) -> torch.Tensor:
    """What tests/fixtures/v1-runs/expected.json recorded for this run (seed 0)."""
    model, g = run.model, torch.Generator().manual_seed(0)
    if model.can(Capability.CLASSIFY):
        return model.logits(torch.linspace(-1, 1, 64).reshape(1, 1, 8, 8))
    if model.can(Capability.TEXT_CONDITION):
        return model.sample(2, Condition(prompts="the digit 3", guidance=2.0), generator=g)
    if model.can(Capability.CLASS_CONDITION):
        return model.sample(2, Condition(class_labels=[1, 2], guidance=2.0), generator=g)
    return model.sample(2, generator=g)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_a_version_1_run_folder_loads_and_computes_what_it_did(name):
    run = aediff.load(V1 / name, device="cpu")
    assert run.format_version == 1 and run.path == V1 / name and run.config is run.model.config
    assert run.model.family == run.family and not run.model.training
    with torch.no_grad():
        out = _outputs(run)
    # 1e-4: room for another CPU's float rounding; a wrong upgrade of the config changes the outputs entirely
    assert torch.allclose(out.flatten(), torch.tensor(EXPECTED[name]), atol=1e-4)


def test_a_version_1_latent_diffusion_keeps_the_images_shape_and_its_autoencoder():
    run = aediff.load(V1 / "latent-diffusion", device="cpu")
    assert run.model.image_shape == (1, 8, 8)  # v1 stored the latent's shape (2x4x4) in these fields
    assert run.model.space_shape == (2, 4, 4)
    assert run.config.autoencoder.family == "ae" and run.config.autoencoder.config["latent"] == "spatial"


def test_the_run_record_carries_typed_configs_and_a_training_summary(tmp_path):
    from aediff.training.train import train

    train(
        "ae",
        tmp_path / "ae",
        "digits",
        model={"channels": (8, 16), "bottleneck_dim": 4},
        training={"max_steps": 3, "batch_size": 32, "tensorboard": False},
        progress=False,
    )
    run = aediff.load(tmp_path / "ae", device="cpu")
    assert run.format_version == aediff.runs.FORMAT_VERSION == 2
    assert run.training.max_steps == 3 and run.data.spec == "digits" and run.weights == "ema"
    assert run.summary.steps == 3 and run.summary.images_seen == 96
    assert aediff.load(tmp_path / "ae", weights="model", device="cpu").weights == "model"


def test_a_newer_format_is_refused_with_the_fix(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"format_version": 99, "family": "ae", "model": {}}))
    with pytest.raises(aediff.RunError, match="newer aediff"):
        aediff.load(folder)


# --- the interface ---------------------------------------------------------------------------------------
TINY = {
    "ae": {"image_size": 8, "channels": (8, 16), "bottleneck_dim": 4},
    "vae": {"image_size": 8, "channels": (8, 16), "bottleneck_dim": 4},
    "dae": {"image_size": 8, "channels": (8, 16), "bottleneck_dim": 4},
    "classifier": {"image_size": 8, "channels": (8, 16), "feature_dim": 8},
    "diffusion": {"image_size": 8, "channels": (8, 16), "attention_resolutions": (4,), "embedding_dim": 16},
}


def _declared_methods_are_implemented(cls: type[Model], capabilities) -> None:
    """A family overrides a method or property exactly when it declares a capability that promises it."""
    for method in {m for methods in METHODS.values() for m in methods}:
        overridden = getattr(cls, method) is not getattr(Model, method)
        promised = {c for c in capabilities if method in METHODS.get(c, ())}
        assert overridden == bool(promised), (cls.family, method, promised)


@pytest.mark.parametrize("family", sorted(MODELS))
def test_every_family_implements_exactly_what_it_declares(family):
    _declared_methods_are_implemented(MODELS[family], MODELS[family].declared)


def test_the_declaration_check_catches_a_family_that_overrides_an_undeclared_method():
    class Liar(Model):
        family, config_class, declared = "liar", dict, frozenset({Capability.GENERATE})

        def encode(self, x):
            return x

    with pytest.raises(AssertionError):
        _declared_methods_are_implemented(Liar, Liar.declared)

    class Forgetful(Model):  # promises the diffusion bound but has no schedule
        family, config_class, declared = "forgetful", dict, frozenset({Capability.DIFFUSION_BOUND})

        @property
        def denoiser(self):
            return None

    with pytest.raises(AssertionError):
        _declared_methods_are_implemented(Forgetful, Forgetful.declared)


def test_a_missing_capability_is_a_clear_error_naming_who_can():
    classifier = build_model("classifier", TINY["classifier"])
    with pytest.raises(CapabilityError, match="generate images.*'classifier' model"):
        classifier.sample(2)
    with pytest.raises(CapabilityError, match="encode images"):
        classifier.require(Capability.LATENT, "aediff encode")


def test_conditions_extend_the_declared_capabilities():
    plain = build_model("diffusion", TINY["diffusion"])
    by_class = build_model("diffusion", {**TINY["diffusion"], "conditioning.kind": "class", "num_classes": 3})
    assert not plain.can(Capability.CLASS_CONDITION) and by_class.can(Capability.CLASS_CONDITION)
    assert by_class.num_classes == 3 and plain.num_classes == 0
    with pytest.raises(CapabilityError, match="class"):
        plain.sample(1, Condition(class_labels=1))


def test_an_autoencoder_refuses_a_condition_or_sampler_options_rather_than_ignoring_them():
    from aediff.diffusion import SamplerOptions

    ae = build_model("ae", TINY["ae"])
    ae.prior_fitted.fill_(True)
    assert ae.sample(2).shape == (2, 1, 8, 8)
    with pytest.raises(CapabilityError, match="class"):
        ae.sample(2, Condition(class_labels=1))
    with pytest.raises(CapabilityError, match="sampler options"):
        ae.sample(2, options=SamplerOptions(steps=5))
    with pytest.raises(aediff.ConfigError, match="one pass"):
        ae.denoise(torch.zeros(1, 1, 8, 8), 0.3, steps=4)


@pytest.mark.parametrize("family", ["ae", "diffusion"])
def test_denoise_means_the_same_for_every_family_that_can(family):
    """x = clean + sigma * noise in pixels -> a clean estimate of the same shape, in [-1, 1]."""
    model = build_model(family, TINY[family]).eval()
    noisy = torch.randn(3, 1, 8, 8) * 0.3
    out = model.denoise(noisy, sigma=0.3)
    assert out.shape == noisy.shape and out.abs().max() <= 1


def test_latent_diffusion_denoises_pixels_through_its_autoencoder():
    run = aediff.load(V1 / "latent-diffusion", device="cpu")
    noisy = torch.zeros(2, 1, 8, 8) + 0.3 * torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    one, many = run.model.denoise(noisy, 0.3), run.model.denoise(noisy, 0.3, steps=3)
    assert one.shape == many.shape == noisy.shape and not torch.equal(one, many)
    # the latent noise level grows with the pixel noise level
    assert run.model.latent_noise_level(noisy, 0.1) < run.model.latent_noise_level(noisy, 1.0)


@pytest.mark.parametrize("labels", [3, torch.tensor(3), [3, 3, 3, 3]])
def test_a_condition_for_all_or_for_each_image_is_split_with_the_batches(labels):
    import numpy as np

    from aediff.evaluation import sample_images

    run = aediff.load(V1 / "diffusion-class", device="cpu")
    images = sample_images(run.model, 4, 0, Condition(class_labels=labels), batch_size=3)
    assert images.shape == (4, 1, 8, 8)
    assert Condition(class_labels=np.int64(2)).rows(0, 2, 4).class_labels == 2
    assert Condition(prompts=["a", "b", "c"]).rows(1, 3, 3).prompts == ["b", "c"]
