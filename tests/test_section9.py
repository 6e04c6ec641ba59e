"""Section 9 compares like with like: class-conditional samples on both sides (labels drawn from the data's
class frequencies; an autoencoder samples a Gaussian fitted to each class's latents), the unconditional ones
kept for reference; unlabelled data stays unconditional."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from aediff.data import ImageDataset
from aediff.evaluation import class_frequency_labels, evaluate_model, sample_classes
from aediff.evaluation.judges import Judge
from aediff.evaluation.results import ComparisonSections, DataRecord, Generation, ModelEvaluation, Settings
from aediff.evaluation.suite import BY_DATA_CLASS
from aediff.metrics import FeatureScore
from aediff.models import Capability, build_model
from aediff.models import ae as ae_module
from aediff.models.ae import ClassGaussians, class_fit_indices
from aediff.models.diffusion import class_captions
from aediff.reports.compare import PlannedModel
from aediff.reports.evaluate import ComparisonArtifacts
from aediff.reports.sections import Measured, summary_section

TINY_AE = {"image_size": 8, "channels": (8, 16), "bottleneck_dim": 4}


# --- the per-class Gaussians and the labels ------------------------------------------------------------------


def test_each_class_samples_from_its_own_gaussian():
    g = torch.Generator().manual_seed(0)
    means = torch.tensor([[10.0, 0, 0], [0, 10.0, 0], [0, 0, -10.0]], dtype=torch.float64)
    labels = torch.arange(3).repeat_interleave(200)
    latents = means[labels] + 0.5 * torch.randn(len(labels), 3, generator=g, dtype=torch.float64)
    fits = ClassGaussians.fit(latents, labels)
    assert torch.allclose(fits.means, means.float(), atol=0.15)
    asked = torch.tensor([2, 0, 1, 1, 2, 0] * 50)
    drawn = fits.sample(asked, torch.Generator().manual_seed(1))
    nearest = torch.cdist(drawn, means.float()).argmin(1)
    assert torch.equal(nearest, asked)
    spread = drawn[asked == 1].std(0)  # the class's own covariance, not the pooled one (which spans 10s)
    assert torch.all((spread > 0.3) & (spread < 0.7))


def _labelled_images(n_per_class: int = 40, classes: int = 3) -> ImageDataset:
    """Class c: images near the constant 0.6 * c - 0.6 (well apart in any encoder's codes)."""
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(classes).repeat_interleave(n_per_class)
    images = (0.6 * labels - 0.6).view(-1, 1, 1, 1) + 0.02 * torch.randn(len(labels), 1, 8, 8, generator=g)
    pixels = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return ImageDataset(pixels, labels, name="toy", class_names=["a", "b", "c"])


def test_an_autoencoder_decodes_latents_of_the_asked_class():
    torch.manual_seed(0)
    model = build_model("ae", TINY_AE).eval()
    assert model.can(Capability.SAMPLE_CLASSES)
    train = _labelled_images()
    # a stand-in encoder whose codes keep the classes apart (an untrained one's group norms would not), and
    # a decoder that returns what it is given: the drawn latents themselves
    model.encode = lambda x: 10 * x.flatten(1)[:, :4]
    model.decode = lambda z: z
    codes = model.encode(train.batch(torch.arange(len(train)))["images"])
    class_means = torch.stack([codes[train.labels == c].mean(0) for c in range(3)])
    asked = torch.tensor([0, 2, 1, 2, 0, 1] * 10)
    drawn = model.class_sampler(train)(asked, torch.Generator().manual_seed(0))
    assert torch.equal(torch.cdist(drawn, class_means).argmin(1), asked)


def test_the_class_fit_sees_at_most_its_limit_of_images_and_every_class(monkeypatch):
    labels = torch.tensor([0] * 900 + [1] * 95 + [2] * 5)
    chosen = class_fit_indices(labels, 100)
    assert torch.bincount(labels[chosen]).tolist() == [90, 10, 1]  # each class its share, at least one
    assert torch.equal(chosen, chosen.unique()) and chosen[0] == 0 and chosen[89] == 899  # spread to both ends
    assert torch.equal(class_fit_indices(labels, 1000), torch.arange(1000))  # few enough: every image
    model = build_model("ae", TINY_AE).eval()
    train = _labelled_images(n_per_class=40)
    encoded = []
    encode = model.encode
    monkeypatch.setattr(model, "encode", lambda x: encoded.append(len(x)) or encode(x))
    monkeypatch.setattr(ae_module, "CLASS_FIT_IMAGES", 30)
    model.class_sampler(train)
    assert sum(encoded) == 30  # of 120 training images
    encoded.clear()
    monkeypatch.setattr(ae_module, "CLASS_FIT_IMAGES", 10_000)
    model.class_sampler(train)
    assert sum(encoded) == 120


def test_sample_classes_gives_images_of_every_asked_label_and_is_seeded():
    torch.manual_seed(0)
    model = build_model("vae", TINY_AE).eval()
    train = _labelled_images()
    labels = torch.tensor([0, 1, 2, 2, 1])
    a = sample_classes(model, labels, train, seed=3, batch_size=2)
    assert a.shape == (5, 1, 8, 8) and a.min() >= -1 and a.max() <= 1
    assert torch.equal(a, sample_classes(model, labels, train, seed=3, batch_size=2))


def test_labels_follow_the_class_frequencies_and_the_seed_alone():
    train_labels = torch.tensor([0] * 600 + [1] * 300 + [2] * 100)
    drawn = class_frequency_labels(train_labels, 20_000, seed=7)
    counts = np.bincount(drawn.numpy(), minlength=3)
    assert stats.chisquare(counts, 20_000 * np.array([0.6, 0.3, 0.1])).pvalue > 1e-3
    assert torch.equal(drawn, class_frequency_labels(train_labels, 20_000, seed=7))  # any model, same seed
    assert torch.equal(drawn[:100], class_frequency_labels(train_labels, 100, seed=7))  # curves: the first n
    assert not torch.equal(drawn, class_frequency_labels(train_labels, 20_000, seed=8))


def test_a_class_conditioned_diffusion_model_samples_its_labels_at_guidance_1(monkeypatch):
    model = build_model(
        "diffusion",
        {"image_size": 8, "channels": (8, 16), "attention_resolutions": (4,), "embedding_dim": 16,
         "kind": "class", "num_classes": 3},
    )  # fmt: skip
    assert model.can(Capability.SAMPLE_CLASSES)
    asked = []
    monkeypatch.setattr(model, "sample", lambda n, condition, generator=None: asked.append(condition) or None)
    labels = torch.tensor([2, 0, 1])
    model.class_sampler(_labelled_images())(labels, None)
    assert torch.equal(asked[0].class_labels, labels) and asked[0].guidance == 1.0
    unconditioned = build_model("diffusion", {"image_size": 8, "channels": (8, 16), "embedding_dim": 16})
    assert not unconditioned.can(Capability.SAMPLE_CLASSES)


def test_a_text_conditioned_diffusion_model_samples_the_captions_of_its_labels(monkeypatch):
    model = build_model("diffusion", {"image_size": 8, "channels": (8, 16), "embedding_dim": 16, "kind": "text"})
    assert model.can(Capability.SAMPLE_CLASSES)
    asked = []
    monkeypatch.setattr(model, "sample", lambda n, condition, generator=None: asked.append(condition) or None)
    model.class_sampler(_labelled_images())(torch.tensor([2, 0]), None)
    assert asked[0].prompts == class_captions(["a", "b", "c"], [2, 0]) and asked[0].guidance == 1.0


def test_captions_fill_the_first_template_with_each_label_s_name():
    assert class_captions(["cat", "dog"], [1, 0, 1]) == [
        class_captions(["cat", "dog"], [1])[0],
        class_captions(["cat", "dog"], [0])[0],
        class_captions(["cat", "dog"], [1])[0],
    ]
    assert "dog" in class_captions(["cat", "dog"], [1])[0]


# --- the protocol: by class on labelled data, unconditional without labels -----------------------------------


def _pixel_judge() -> Judge:
    return Judge("pixels", lambda x: x.flatten(1)[:, :8], "raw pixels")


@pytest.mark.parametrize("labelled", [True, False])
def test_labelled_data_scores_samples_by_class_and_unlabelled_data_unconditionally(labelled):
    torch.manual_seed(0)
    model = build_model("ae", TINY_AE).eval()
    train = _labelled_images()
    model.fit_latent_prior([train.batch(torch.arange(len(train)))["images"]])
    if not labelled:
        train = ImageDataset(train.images, name="toy")
    test = _labelled_images(20)
    result = evaluate_model(
        model, train, test, samples=60, limit=30, data_classes=True, cycle_classes=False, judges=[_pixel_judge()]
    )
    assert result.generation.condition == (BY_DATA_CLASS if labelled else "none")


# --- section 9's verdict follows the class-conditional scores ------------------------------------------------


def _score(fid: float, n: int = 500) -> FeatureScore:
    draws = list(fid + np.random.default_rng(0).normal(0, 0.5, 50))  # the same resamples for every model
    return FeatureScore(fid, 0.0, 0.0, "pixels", n, 500, "toy:test", 0.5, 0.5, 5, fid_se=0.5, fid_draws_values=draws)


def _model(family: str, capabilities: list[str], conditional: float, unconditional: float) -> ModelEvaluation:
    x = ModelEvaluation(family, capabilities, 10, 10, DataRecord("toy:test", 500, 5000), Settings(500, 0, 200))
    x.generation_by_judge = {"pixels": _score(conditional)}
    x.generation = Generation.of(x.generation_by_judge["pixels"], BY_DATA_CLASS)
    x.unconditional_by_judge = {"pixels": _score(unconditional, 200)}
    return x


def _measured(models: dict[str, ModelEvaluation]) -> Measured:
    plan = [PlannedModel(name, x.family, {}, name) for name, x in models.items()]
    sections = ComparisonSections(judges={"pixels": "raw pixels"})
    return Measured(models, sections, ComparisonArtifacts(torch.zeros(1, 1, 8, 8)), None, plan)


DIFFUSION = ["generate", "diffusion-sampler", "class-condition", "sample-classes"]
AE = ["latent", "generate", "sample-classes"]


@pytest.mark.parametrize(
    ("diffusion", "ae", "expected", "reference"),
    [
        ((10.0, 60.0), (40.0, 30.0), "holds", "does not hold"),  # conditional favours diffusion
        ((40.0, 10.0), (10.0, 40.0), "does not hold", "holds"),  # conditional favours the AE
    ],
)
def test_the_verdict_follows_the_class_conditional_fids(diffusion, ae, expected, reference):
    m = _measured({"ae": _model("ae", AE, *ae), "diffusion": _model("diffusion", DIFFUSION, *diffusion)})
    section, verdict = summary_section(m)
    assert verdict.verdict == expected
    assert f"would be '{reference}'" in section.notes
    assert "class-conditional samples on both sides" in section.notes
    assert [t.name for t in section.tables] == ["summary", "summary_unconditional"]
    reference_table = section.tables[1]
    assert reference_table.rows[0][:3] == ["ae", "ae", ae[1]] and reference_table.rows[0][-1] == 200


def test_unconditional_scores_stand_where_the_data_has_no_labels():
    models = {"ae": _model("ae", AE, 40.0, 40.0), "diffusion": _model("diffusion", DIFFUSION, 10.0, 10.0)}
    for x in models.values():
        x.unconditional_by_judge = None
        x.generation = Generation.of(x.generation_by_judge["pixels"], "none")
    section, verdict = summary_section(_measured(models))
    assert verdict.verdict == "holds"
    assert section.notes.startswith("Samples are unconditional")
    assert [t.name for t in section.tables] == ["summary"]


def test_the_class_balance_table_reads_each_models_samples_and_flips_with_the_histogram():
    from aediff.metrics.balance import class_balance

    data = np.repeat(np.arange(10), 100)

    def reading(counts: list[int]) -> np.ndarray:
        return np.eye(10)[np.repeat(np.arange(10), counts)] * 0.9 + 0.01

    models = {"ae": _model("ae", AE, 40.0, 40.0), "diffusion": _model("diffusion", DIFFUSION, 10.0, 10.0)}
    models["ae"].class_balance = class_balance(reading([51, 149] + [100] * 8), data)  # skewed: rejected
    models["diffusion"].class_balance = class_balance(reading([100] * 10), data)
    section, _ = summary_section(_measured(models))
    table = next(t for t in section.tables if t.name == "summary_class_balance")
    rows = {row[0]: row for row in table.rows}
    assert rows["ae"][6] == "rejects" and rows["ae"][7] == "51 / 149"
    assert rows["diffusion"][6] == "does not reject" and rows["diffusion"][2] == 1.0
