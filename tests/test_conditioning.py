"""Conditioned diffusion (class labels, captions, classifier-free guidance) and latent diffusion on a
trained autoencoder: every sampler and the CLI work the same with and without a condition."""

import json
import shutil

import pytest
import torch

import aediff
from aediff.diffusion import SamplerOptions
from aediff.errors import ConfigError
from aediff.models import Condition, UNet, UNetConfig, build_model
from aediff.models.diffusion import concat_conditions
from aediff.training.train import train
from test_cli import TINY_DIFFUSION, run_cli

TINY = {"image_size": 8, "channels": (8, 16), "attention_resolutions": (4,), "embedding_dim": 16, "steps": 3}
TINY_TEXT = {**TINY, "conditioning.kind": "text", "text_width": 16, "text_layers": 1, "text_max_length": 24}
QUICK = {"max_steps": 30, "batch_size": 32, "tensorboard": False}


def randomize(model: torch.nn.Module) -> torch.nn.Module:
    """Random weights everywhere (zero-initialized layers would hide a condition's effect)."""
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.2)
    return model


def test_unet_class_labels_change_the_output_and_none_means_the_null_class():
    net = randomize(
        UNet(UNetConfig(image_size=8, channels=(8, 16), attention_resolutions=(4,), embedding_dim=16, num_classes=3))
    )
    x, level = torch.randn(2, 1, 8, 8), torch.zeros(2)
    a, b = net(x, level, torch.tensor([0, 0])), net(x, level, torch.tensor([1, 1]))
    assert not torch.allclose(a, b, atol=1e-4)
    assert torch.allclose(net(x, level), net(x, level, torch.tensor([3, 3])))


def test_unet_text_condition_needs_its_inputs():
    net = UNet(UNetConfig(image_size=8, channels=(8, 16), attention_resolutions=(4,), embedding_dim=16, context_dim=6))
    with pytest.raises(ValueError, match="text-conditioned"):
        net(torch.randn(1, 1, 8, 8), torch.zeros(1))
    out = net(
        torch.randn(1, 1, 8, 8),
        torch.zeros(1),
        context=torch.randn(1, 3, 6),
        context_mask=torch.ones(1, 3, dtype=torch.bool),
        pooled=torch.randn(1, 6),
    )
    assert out.shape == (1, 1, 8, 8)


def test_condition_batches_are_padded_when_stacked():
    a = {"context": torch.ones(2, 3, 4), "context_mask": torch.ones(2, 3, dtype=torch.bool), "pooled": torch.ones(2, 4)}
    b = {"context": torch.ones(2, 5, 4), "context_mask": torch.ones(2, 5, dtype=torch.bool), "pooled": torch.ones(2, 4)}
    both = concat_conditions(a, b)
    assert both["context"].shape == (4, 5, 4) and both["pooled"].shape == (4, 4)
    assert both["context_mask"][:2, 3:].sum() == 0 and both["context_mask"][2:].all()


def test_guidance_extrapolates_from_the_null_to_the_conditional_prediction():
    model = randomize(
        build_model("diffusion", {**TINY, "conditioning.kind": "class", "num_classes": 4, "clip_denoised": False})
    ).eval()
    x, sigma = torch.randn(3, 1, 8, 8), torch.tensor(0.7)
    with torch.no_grad():
        cond = model.predict_x0(x, sigma, class_labels=torch.tensor([1, 2, 3]))
        null = model.predict_x0(x, sigma, class_labels=torch.tensor([4, 4, 4]))
        negative = model.predict_x0(x, sigma, class_labels=torch.tensor([0, 0, 0]))
        guided = model.guided_denoiser(3, Condition(class_labels=[1, 2, 3], guidance=3.0))(x, sigma)
        plain = model.guided_denoiser(3, Condition(class_labels=[1, 2, 3], guidance=1.0))(x, sigma)
        away = model.guided_denoiser(3, Condition(class_labels=[1, 2, 3], guidance=2.0, negative_class=0))(x, sigma)
    assert torch.allclose(guided, null + 3 * (cond - null), atol=1e-5)
    assert torch.allclose(plain, cond, atol=1e-6)
    assert torch.allclose(away, negative + 2 * (cond - negative), atol=1e-5)


def test_training_drops_the_condition_for_a_share_of_the_batch():
    model = build_model("diffusion", {**TINY, "conditioning.kind": "class", "num_classes": 4, "null_probability": 0.5})
    seen = []
    model.denoiser.network.embed_class.register_forward_hook(lambda m, args, out: seen.append(args[0].clone()))
    torch.manual_seed(0)
    model({"images": torch.zeros(200, 1, 8, 8), "labels": torch.zeros(200, dtype=torch.long)})
    share_null = (seen[0] == 4).float().mean().item()
    assert 0.4 < share_null < 0.6 and set(seen[0].tolist()) == {0, 4}


def test_wrong_conditions_are_refused_clearly():
    plain = build_model("diffusion", TINY)
    with pytest.raises(ConfigError, match="draw a given class"):
        plain.sample(2, Condition(class_labels=1))
    with pytest.raises(ConfigError, match="draw a given caption"):
        plain.sample(2, Condition(prompts="a seven"))
    with pytest.raises(ConfigError, match="needs a conditioned model"):
        plain.sample(2, Condition(guidance=3.0))
    classes = build_model("diffusion", {**TINY, "conditioning.kind": "class", "num_classes": 4})
    with pytest.raises(ConfigError, match=r"class labels in \[0, 3\]"):
        classes.sample(2, Condition(class_labels=7))
    with pytest.raises(ConfigError, match="needs labels"):
        classes({"images": torch.zeros(2, 1, 8, 8)})
    with pytest.raises(ConfigError, match="num_classes"):
        build_model("diffusion", {**TINY, "conditioning.kind": "class"})


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "euler", "heun", "dpm++"])
def test_every_sampler_takes_a_class_and_guidance(sampler):
    model = randomize(build_model("diffusion", {**TINY, "conditioning.kind": "class", "num_classes": 4})).eval()
    options = SamplerOptions(sampler=sampler)
    a = model.sample(
        4, Condition(class_labels=[0, 1, 2, 3], guidance=3), options, generator=torch.Generator().manual_seed(0)
    )
    b = model.sample(
        4, Condition(class_labels=[0, 1, 2, 3], guidance=3), options, generator=torch.Generator().manual_seed(0)
    )
    c = model.sample(
        4, Condition(class_labels=[3, 2, 1, 0], guidance=3), options, generator=torch.Generator().manual_seed(0)
    )
    assert a.shape == (4, 1, 8, 8) and torch.equal(a, b) and not torch.allclose(a, c)
    assert a.min() >= -1 and a.max() <= 1


def test_text_conditioned_model_learns_and_samples_from_prompts():
    model = build_model("diffusion", {**TINY_TEXT, "null_probability": 0.0})
    batch = {"images": torch.rand(16, 1, 8, 8) * 2 - 1, "captions": ["a bright one", "a dark one"] * 8}
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    before = model.text_encoder(["a bright one"]).pooled.detach().clone()
    history = []
    for step in range(40):
        torch.manual_seed(step % 2)  # two noise draws, repeated, so early and late losses compare
        loss, _ = model(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(loss.item())
    assert sum(history[-5:]) < sum(history[:5])
    assert not torch.allclose(model.text_encoder(["a bright one"]).pooled, before)  # the encoder trained too
    model.eval()
    out = model.sample(
        3,
        Condition(prompts=["a bright one", "a dark one", ""], guidance=2.0, negative_prompt="a dark one"),
        generator=torch.Generator().manual_seed(0),
    )
    assert out.shape == (3, 1, 8, 8)


def test_class_conditioned_run_trains_saves_and_reloads(tmp_path):
    result = train(
        "diffusion",
        tmp_path / "run",
        "digits",
        model={**TINY, "conditioning.kind": "class"},
        training=QUICK,
        progress=False,
    )
    model = aediff.load(result.run_dir).model
    assert model.num_classes == 10 and model.config.conditioning.kind == "class"
    from aediff.evaluation import sample_images

    images = sample_images(model, 5, 0, Condition(class_labels=torch.arange(5), guidance=2.0), batch_size=2)
    assert images.shape == (5, 1, 8, 8)
    again = sample_images(model, 5, 0, Condition(class_labels=torch.arange(5), guidance=2.0), batch_size=5)
    assert torch.allclose(images[:2], again[:2], atol=1e-5)  # per-image labels follow their batch


def test_text_conditioning_on_a_labelled_set_uses_generated_captions(tmp_path):
    result = train(
        "diffusion", tmp_path / "run", "digits", model=TINY_TEXT, training={**QUICK, "max_steps": 5}, progress=False
    )
    model = aediff.load(result.run_dir).model
    assert model.sample(2, Condition(prompts="the digit seven")).shape == (2, 1, 8, 8)


# --- latent diffusion ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def spatial_ae(tmp_path_factory):
    root = tmp_path_factory.mktemp("latent")
    train(
        "ae",
        root / "ae",
        "digits",
        model={"channels": (8, 16), "latent": "spatial", "latent_channels": 2},
        training={**QUICK, "max_steps": 40},
        progress=False,
    )
    return root / "ae"


def test_latent_diffusion_trains_in_the_autoencoders_latent_space(spatial_ae, tmp_path):
    result = train(
        "latent-diffusion",
        tmp_path / "ldm",
        "digits",
        model={
            "autoencoder.path": str(spatial_ae),
            "channels": (8, 16),
            "attention_resolutions": (2,),
            "embedding_dim": 16,
            "steps": 3,
            "conditioning.kind": "class",
        },
        training=QUICK,
        progress=False,
    )
    config = json.loads((result.run_dir / "config.json").read_text())["model"]
    assert config["image_channels"] == 1 and config["image_size"] == 8  # the images' shape, not the latent's
    assert config["autoencoder"]["family"] == "ae" and config["latent_scale"] > 0
    autoencoder = aediff.load(spatial_ae, device="cpu").model
    z = autoencoder.encode(
        torch.cat([b["images"] for b in [aediff.data.load_dataset("digits", "train").batch(torch.arange(512))]])
    ).detach()
    assert abs(z.std().item() * config["latent_scale"] - 1) < 0.1  # unit variance on the training data
    shutil.rmtree(spatial_ae.parent / "moved", ignore_errors=True)
    shutil.move(str(spatial_ae), spatial_ae.parent / "moved")  # the run folder alone rebuilds the pipeline
    try:
        model = aediff.load(result.run_dir, device="cpu").model
        assert model.space_shape == (2, 4, 4)
        images = model.sample(
            3, Condition(class_labels=[1, 2, 3], guidance=2), generator=torch.Generator().manual_seed(0)
        )
        assert images.shape == (3, 1, 8, 8) and images.min() >= -1 and images.max() <= 1
        for name, p in model.autoencoder.state_dict().items():
            assert torch.equal(p, autoencoder.state_dict()[name]), name  # training left the autoencoder alone
    finally:
        shutil.move(str(spatial_ae.parent / "moved"), spatial_ae)


def test_latent_diffusion_refuses_a_vector_latent(tmp_path):
    train(
        "ae",
        tmp_path / "ae",
        "digits",
        model={"channels": (8, 16), "bottleneck_dim": 4},
        training={**QUICK, "max_steps": 2},
        progress=False,
    )
    with pytest.raises(ConfigError, match="spatial"):
        train(
            "latent-diffusion",
            tmp_path / "ldm",
            "digits",
            model={"autoencoder.path": str(tmp_path / "ae")},
            training=QUICK,
            progress=False,
        )


# --- CLI -------------------------------------------------------------------------------------------------
def test_cli_trains_and_samples_conditioned_models(spatial_ae, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the refused `sample` calls below name no --out: their default is here
    tiny = [
        *TINY_DIFFUSION,
        "--batch-size",
        "32",
        "--no-progress",
        "--train-set",
        "tensorboard=false",
        "--max-steps",
        "5",
        "--data",
        "digits",
    ]
    code, out = run_cli(
        monkeypatch, capsys, "train", "diffusion", "--condition", "class", "--out", tmp_path / "c", *tiny
    )
    assert code == 0, out
    code, out = run_cli(
        monkeypatch,
        capsys,
        "sample",
        tmp_path / "c",
        "--class",
        "all",
        "--samples",
        "10",
        "--guidance",
        "3",
        "--out",
        tmp_path / "grid.npz",
    )
    assert code == 0, out
    import numpy as np

    assert np.load(tmp_path / "grid.npz")["images"].shape == (10, 8, 8, 1)
    code, out = run_cli(monkeypatch, capsys, "sample", tmp_path / "c", "--prompt", "a seven")
    assert code == 1 and "draw a given caption" in out
    code, out = run_cli(monkeypatch, capsys, "sample", tmp_path / "c", "--class", "seven")
    assert code == 1 and "'all'" in out
    code, out = run_cli(monkeypatch, capsys, "sample", tmp_path / "c", "--class", "10")
    assert code == 1 and "classes 0..9" in " ".join(out.split())  # the console may wrap the line
    code, out = run_cli(monkeypatch, capsys, "sample", tmp_path / "c", "--negative-class", "all")
    assert code == 1 and "class index" in out
    code, out = run_cli(
        monkeypatch,
        capsys,
        "train",
        "latent-diffusion",
        "--autoencoder",
        spatial_ae,
        "--out",
        tmp_path / "l",
        *tiny[:2],
        "--set",
        "attention_resolutions=2",
        *tiny[4:],
    )
    assert code == 0, out
    code, out = run_cli(
        monkeypatch,
        capsys,
        "sample",
        tmp_path / "l",
        "--samples",
        "2",
        "--trajectory",
        tmp_path / "strip.png",
        "--steps",
        "3",
    )
    assert code == 0, out
    code, out = run_cli(monkeypatch, capsys, "train", "latent-diffusion", "--out", tmp_path / "x", *tiny)
    assert code == 1 and "--autoencoder" in out


# --- the defaults: a labelled set trains a class-conditioned model, which draws every class in turn, guided ---
def test_a_new_run_on_labelled_data_is_class_conditioned_unless_told_otherwise(tmp_path):
    budget = {**QUICK, "max_steps": 2}
    labelled = train("diffusion", tmp_path / "a", "digits", model=TINY, training=budget, progress=False)
    chosen = train("diffusion", tmp_path / "b", "digits", model={**TINY, "conditioning.kind": "none"}, training=budget,
                   progress=False)  # fmt: skip
    assert aediff.load(labelled.run_dir).model.config.conditioning.kind == "class"
    assert aediff.load(chosen.run_dir).model.config.conditioning.kind == "none"


def test_a_new_run_on_unlabelled_data_is_unconditional(tmp_path, digits_train):
    import numpy as np

    np.savez(tmp_path / "plain.npz", images=digits_train.images[:64, 0].numpy())
    run = train("diffusion", tmp_path / "run", f"npz:{tmp_path / 'plain.npz'}", model=TINY,
                training={**QUICK, "max_steps": 2}, progress=False)  # fmt: skip
    config = aediff.load(run.run_dir).model.config
    assert config.conditioning.kind == "none"


class Recorder:
    """Wraps a model's denoiser network, recording the class labels of every call."""

    def __init__(self, model):
        self.labels, self.inner = [], model.denoiser.forward

        def forward(x, sigma, **condition):
            self.labels.append(condition.get("class_labels"))
            return self.inner(x, sigma, **condition)

        model.denoiser.forward = forward


def _class_model(**sampling):
    config = {**TINY, "conditioning.kind": "class", "num_classes": 4, **sampling}
    return randomize(build_model("diffusion", config)).eval()


def test_asked_for_no_class_the_model_draws_every_class_in_turn_guided():
    model = _class_model()
    assert model.config.sampling.guidance == 1.5 and model.config.sampling.classes == "cycle"
    calls = Recorder(model)
    model.sample(6, options=SamplerOptions(sampler="euler", steps=1))
    (labels,) = calls.labels
    assert labels.tolist() == [0, 1, 2, 3, 0, 1] + [4] * 6  # the classes in turn, then the null class (guidance)


def test_null_class_config_and_guidance_zero_draw_the_unconditional_model_in_one_call():
    options = SamplerOptions(sampler="euler", steps=1)
    null_config = _class_model(**{"sampling.classes": "null"})
    calls = Recorder(null_config)
    null_config.sample(3, options=options)
    assert [t.tolist() for t in calls.labels] == [[4, 4, 4]]  # guidance of D_null to D_null is skipped
    cycling = _class_model()
    calls = Recorder(cycling)
    a = cycling.sample(3, Condition(guidance=0.0), options, generator=torch.Generator().manual_seed(0))
    assert [t.tolist() for t in calls.labels] == [[4, 4, 4]]
    cycling.load_state_dict(null_config.state_dict())
    b = null_config.sample(3, options=options, generator=torch.Generator().manual_seed(0))
    c = cycling.sample(3, Condition(guidance=0.0), options, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(b, c, atol=1e-6) and not torch.allclose(a, c, atol=1e-3)


def test_configs_from_before_the_field_keep_drawing_the_null_class(tmp_path):
    result = train("diffusion", tmp_path / "run", "digits", model=TINY, training={**QUICK, "max_steps": 2},
                   progress=False)  # fmt: skip
    path = result.run_dir / "config.json"
    stored = json.loads(path.read_text())
    assert stored["model"]["sampling"]["classes"] == "cycle"
    del stored["model"]["sampling"]["classes"]
    path.write_text(json.dumps(stored))
    assert aediff.load(result.run_dir).model.config.sampling.classes == "null"
