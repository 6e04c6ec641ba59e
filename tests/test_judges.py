"""Judges (the feature spaces samples are scored in) and the sharpness gap, on real mnist5k digits.

A judge that sees blur must place blurred digits further from the data than other real digits are; an
untrained network could pass that by accident of its random filters, so the classifier here is trained
for a few hundred steps (a few seconds) and must beat chance clearly before its features are trusted.
"""

from __future__ import annotations

import pytest
import torch

from aediff.errors import ConfigError
from aediff.evaluation import Judge, gaussian_blur, high_frequency_share, judges_for, sharpness_gap
from aediff.metrics import extract_features, frechet_distance
from aediff.models.ae import AEConfig, Autoencoder
from aediff.models.classifier import Classifier, ClassifierConfig

TINY_CLASSIFIER = {"channels": (16, 32), "feature_dim": 32, "dropout": 0.0}


@pytest.fixture(scope="module")
def mnist():
    """mnist5k: (train dataset, test images, test labels); images [N, 1, 28, 28] in [-1, 1]."""
    from aediff.data import load_dataset

    train = load_dataset("mnist5k", "train")
    test = load_dataset("mnist5k", "test")
    test_batch = test.batch(torch.arange(len(test)))
    return train, test_batch["images"], test_batch["labels"]


def real_sets(train, n=500):
    """Two disjoint random sets of n train images: the splits are sorted by class, so slices would not do."""
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(1))
    return train.batch(order[:n])["images"], train.batch(order[n : 2 * n])["images"]


@pytest.fixture(scope="module")
def classifier(mnist):
    """A tiny classifier trained for 200 Adam steps of 32 images (seconds on a CPU), in eval mode."""
    train, test_images, test_labels = mnist
    torch.manual_seed(0)
    model = Classifier(ClassifierConfig(**TINY_CLASSIFIER))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(200):
        loss, _ = model(train.batch(torch.randint(len(train), (32,), generator=generator)))
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        accuracy = (model.logits(test_images).argmax(1) == test_labels).float().mean().item()
    assert accuracy > 0.35, (
        f"the tiny classifier did not train (test accuracy {accuracy:.2f}); its features prove nothing"
    )
    return model


def test_layer_features_shape_and_parts(classifier, mnist):
    _, images, _ = mnist
    x = images[:5]
    with torch.no_grad():
        feats = classifier.layer_features(x)
        penultimate = classifier.features(x)
    assert feats.shape == (5, classifier.layer_feature_dim) == (5, 2 * 16 + 32)
    assert torch.isfinite(feats).all()
    # the penultimate features are the last block, so the layers judge also sees class content
    torch.testing.assert_close(feats[:, -32:], penultimate)


def test_layer_features_finite_on_blank_images(classifier):
    with torch.no_grad():
        feats = classifier.layer_features(-torch.ones(2, 1, 28, 28))
    assert torch.isfinite(feats).all()


def test_judges_for_a_classifier_and_not_for_other_models(classifier):
    judges = judges_for(classifier)
    assert [j.name for j in judges] == ["classifier", "classifier-layers"]
    assert all(isinstance(j, Judge) and j.description for j in judges)
    # the blur-blind penultimate features vote on class content only (benchmarks/results/judges.md)
    assert [sorted(j.sees) for j in judges] == [["class content"], ["class content", "image quality"]]
    x = torch.zeros(3, 1, 28, 28)
    with torch.no_grad():
        assert judges[0].features(x).shape == (3, 32)
        assert judges[1].features(x).shape == (3, classifier.layer_feature_dim)
    with pytest.raises(ConfigError, match="aediff train classifier"):
        judges_for(Autoencoder(AEConfig(channels=(8, 16), bottleneck_dim=8)))


def test_layers_judge_places_blurred_digits_far_from_the_data(classifier, mnist):
    """Blur (sigma 1) of real digits moves them further from held-out real digits than a disjoint set of real
    digits is, in the layers judge, by a wide margin; and the layers judge reacts to blur more than the
    penultimate-features judge, relative to each one's real-vs-real distance (the reason it exists)."""
    train, reference, _ = mnist
    real, other_real = real_sets(train)
    blurred = gaussian_blur(real, 1.0)
    ratios = {}
    for judge in judges_for(classifier):
        ref = extract_features(judge.features, reference)
        fid_real = frechet_distance(extract_features(judge.features, other_real), ref)
        fid_blurred = frechet_distance(extract_features(judge.features, blurred), ref)
        ratios[judge.name] = fid_blurred / fid_real
    # measured: about 115 in the layers judge and 6 in the penultimate one
    assert ratios["classifier-layers"] > 10.0, ratios
    assert ratios["classifier-layers"] > 3.0 * ratios["classifier"], ratios


def test_sharpness_gap_is_zero_for_real_digits_and_negative_for_blurred(mnist):
    train, reference, _ = mnist
    real, _ = real_sets(train)
    same = sharpness_gap(real, reference)
    low, high = same.interval()
    assert abs(same.value) < 0.1 and low < 0 < high, same
    assert same.se > 0 and same.n == 200
    blurred = sharpness_gap(gaussian_blur(real, 1.0), reference)
    assert blurred.value < -0.5 and blurred.interval()[1] < -0.5, blurred
    # milder blur, smaller gap: the statistic is graded, not a blur detector
    assert blurred.value < sharpness_gap(gaussian_blur(real, 0.5), reference).value < same.value


def test_sharpness_gap_rejects_mismatched_sets():
    with pytest.raises(ConfigError, match="same|one size"):
        sharpness_gap(torch.zeros(4, 1, 28, 28), torch.zeros(4, 1, 32, 32))
    with pytest.raises(ConfigError, match="at least 2"):
        sharpness_gap(torch.randn(1, 1, 8, 8), torch.randn(4, 1, 8, 8))
    with pytest.raises(ConfigError, match="no spectral power"):
        sharpness_gap(torch.randn(4, 1, 8, 8), torch.zeros(4, 1, 8, 8))


def test_gaussian_blur_keeps_constants_and_removes_high_frequencies():
    constant = torch.full((2, 3, 9, 9), 0.25)
    torch.testing.assert_close(gaussian_blur(constant, 1.0), constant)
    noise = torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    blurred = gaussian_blur(noise, 1.0)
    assert blurred.shape == noise.shape
    assert high_frequency_share(blurred).mean() < 0.25 < 0.7 < high_frequency_share(noise).mean()
    with pytest.raises(ConfigError, match="sigma"):
        gaussian_blur(noise, 0.0)


def test_reference_features_are_computed_once_per_dataset_and_match_a_fresh_extraction(mnist):
    """A comparison scores dozens of sample sets against one test split: each judge extracts its features
    once. The kept features must equal a fresh extraction, and another dataset gets its own."""
    from aediff.data import load_dataset
    from aediff.evaluation import generation_score

    calls = []

    def features(images):
        calls.append(len(images))
        return images.flatten(1)[:, ::16]

    judge = Judge("pixels", features, "every 16th pixel")
    train, test_images, _ = mnist
    digits = load_dataset("digits", "test")
    first = judge.reference_features(train)
    count = len(calls)
    assert torch.equal(judge.reference_features(train), first) and len(calls) == count  # kept, not recomputed
    assert judge.reference_features(digits).shape[0] == len(digits) and len(calls) > count
    samples = test_images[:300]
    kept = generation_score(
        samples, features, train, feature_extractor="p", reference_name="r", reference_features=first
    )
    fresh = generation_score(samples, features, train, feature_extractor="p", reference_name="r")
    assert kept.fid == pytest.approx(fresh.fid)
