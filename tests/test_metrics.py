"""Tests for aediff.metrics against torchmetrics, scikit-image and direct numpy/scipy references."""

from __future__ import annotations

import json
import math
import sys
import types
import warnings

import numpy as np
import pytest
import scipy.linalg
import scipy.spatial
import torch

from aediff.errors import ConfigError
from aediff.metrics import (
    INCEPTION_WEIGHTS_ENV,
    FeatureScore,
    bits_per_dim,
    continuous_nll_to_discrete_bpd,
    dequantization_offset_bits,
    distances,
    extract_features,
    fid_bootstrap,
    frechet_distance,
    inception_extractor,
    kernel_inception_distance,
    kid_bootstrap,
    logmeanexp,
    mse,
    precision_recall,
    psnr,
    score_features,
    ssim,
    stats,
)

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from skimage import metrics as skm
    from torchmetrics.functional.image import peak_signal_noise_ratio as tm_psnr
    from torchmetrics.functional.image import structural_similarity_index_measure as tm_ssim
    from torchmetrics.functional.regression import mean_squared_error as tm_mse
    from torchmetrics.image.fid import _compute_fid
    from torchmetrics.image.kid import KernelInceptionDistance, poly_mmd


# --------------------------------------------------------------------------------------- image metrics


def _structured(n: int, c: int, size: int, seed: int) -> torch.Tensor:
    """Smooth images in [-1, 1]: random blobs and gradients, plus a little texture."""
    gen = torch.Generator().manual_seed(seed)
    coords = torch.linspace(-1, 1, size)
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    out = torch.empty(n, c, size, size)
    for i in range(n):
        for ch in range(c):
            cx, cy, w, a, b = (torch.rand(5, generator=gen) * 2 - 1).tolist()
            blob = torch.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (0.1 + 0.3 * abs(w)))
            out[i, ch] = 1.2 * blob + 0.4 * (a * xx + b * yy) - 0.5
    out += 0.05 * torch.randn(out.shape, generator=gen)
    return out.clamp(-1, 1)


def _pairs():
    """(name, x, y, ssim sigma for skimage/torchmetrics, border crop) over channels x sizes x content."""
    cases = []
    for c in (1, 3):
        for size in (28, 8):
            gen = torch.Generator().manual_seed(10 * c + size)
            rand_x = torch.rand(3, c, size, size, generator=gen) * 2 - 1
            rand_y = (rand_x + 0.4 * torch.randn(rand_x.shape, generator=gen)).clamp(-1, 1)
            struct_x = _structured(3, c, size, seed=size + c)
            struct_y = (struct_x + 0.1 * torch.randn(struct_x.shape, generator=gen)).clamp(-1, 1)
            # 8x8: window shrinks 11 -> 7 and sigma to 3/3.5 (same 3.5-sigma truncation as the references)
            sigma, crop = (1.5, 5) if size >= 11 else (3 / 3.5, 3)
            cases.append((f"random-c{c}-{size}", rand_x, rand_y, sigma, crop))
            cases.append((f"structured-c{c}-{size}", struct_x, struct_y, sigma, crop))
    return cases


PAIRS = _pairs()


@pytest.mark.parametrize("name,x,y,sigma,crop", PAIRS, ids=[p[0] for p in PAIRS])
def test_mse_psnr_match_references(name, x, y, sigma, crop):
    ours_mse, ours_psnr = mse(x, y), psnr(x, y)
    assert ours_mse.shape == ours_psnr.shape == (x.shape[0],)
    ref_psnr = tm_psnr(x, y, data_range=2.0, reduction="none", dim=(1, 2, 3))
    torch.testing.assert_close(ours_psnr, ref_psnr, atol=1e-4, rtol=1e-5)
    for i in range(x.shape[0]):
        a, b = x[i].double().numpy(), y[i].double().numpy()
        assert ours_mse[i].item() == pytest.approx(skm.mean_squared_error(a, b), rel=1e-5)
        assert ours_mse[i].item() == pytest.approx(tm_mse(x[i], y[i]).item(), rel=1e-5)
        assert ours_psnr[i].item() == pytest.approx(skm.peak_signal_noise_ratio(a, b, data_range=2.0), abs=1e-4)


def _to_unit(x: torch.Tensor) -> torch.Tensor:
    """aediff [-1, 1] images -> [0, 1], the conversion ssim's callers make."""
    return ((x + 1) / 2).clamp(0, 1)


def _skimage_ssim(x: torch.Tensor, y: torch.Tensor, sigma: float = 1.5, data_range: float = 1.0) -> np.ndarray:
    """scikit-image's SSIM per image of [N, C, H, W] batches (Wang et al.'s Gaussian-window settings)."""
    return np.array(
        [
            skm.structural_similarity(
                x[i].permute(1, 2, 0).double().numpy(),
                y[i].permute(1, 2, 0).double().numpy(),
                channel_axis=2,
                gaussian_weights=True,
                sigma=sigma,
                use_sample_covariance=False,
                data_range=data_range,
            )
            for i in range(x.shape[0])
        ]
    )


def _check_ssim_against_references(x: torch.Tensor, y: torch.Tensor, sigma: float, crop: int) -> torch.Tensor:
    ours = ssim(x, y)
    assert ours.shape == (x.shape[0],)
    # scikit-image: reflect-filter then crop (w-1)/2 -> identical valid-region mean.
    np.testing.assert_allclose(ours.numpy(), _skimage_ssim(x, y, sigma), atol=1e-5)
    # torchmetrics: same map, but its scalar averages over the whole reflect-padded image (border
    # included). Cropping its full map to the valid region reproduces ours exactly.
    tm_scalar, tm_map = tm_ssim(x, y, data_range=1.0, sigma=sigma, reduction="none", return_full_image=True)
    assert tm_map.shape == x.shape
    torch.testing.assert_close(ours, tm_map[..., crop:-crop, crop:-crop].mean(dim=(1, 2, 3)), atol=1e-5, rtol=0)
    # The known difference (border positions) is bounded but not small: only a loose check.
    assert (ours - tm_scalar).abs().max() < 0.5
    return ours


@pytest.mark.parametrize("name,x,y,sigma,crop", PAIRS, ids=[p[0] for p in PAIRS])
def test_ssim_matches_skimage_and_torchmetrics_valid_region(name, x, y, sigma, crop):
    _check_ssim_against_references(_to_unit(x), _to_unit(y), sigma, crop)


def _digits_28() -> torch.Tensor:
    """MNIST-like images [12, 1, 28, 28] in [0, 1]: scikit-learn's 8x8 digits (bundled, 0..16) upsampled."""
    from sklearn.datasets import load_digits

    small = torch.from_numpy(load_digits().images[:12]).float()[:, None] / 16
    return torch.nn.functional.interpolate(small, size=(28, 28), mode="bilinear", align_corners=False).clamp(0, 1)


def _blur(x: torch.Tensor, sigma: float = 1.0) -> torch.Tensor:
    g = torch.exp(-0.5 * (torch.arange(7.0) - 3) ** 2 / sigma**2)
    kernel = (g[:, None] * g[None, :] / g.sum() ** 2)[None, None]
    return torch.nn.functional.conv2d(torch.nn.functional.pad(x, (3, 3, 3, 3), mode="reflect"), kernel)


def test_ssim_on_blurred_and_noisy_digits_matches_references_in_unit_range():
    x = _digits_28()
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    blurred = _check_ssim_against_references(x, _blur(x), sigma=1.5, crop=5)
    noisy = _check_ssim_against_references(x, (x + 0.1 * noise).clamp(0, 1), sigma=1.5, crop=5)
    very_noisy = _check_ssim_against_references(x, (x + 0.3 * noise).clamp(0, 1), sigma=1.5, crop=5)
    assert (blurred < 1).all() and (noisy < 1).all()
    assert (very_noisy < noisy).all()
    # the tolerance band admits round-off and slightly unclamped outputs
    ssim(x * 1.005, x)


def test_ssim_convention_is_wang_unit_range_not_minus_one_to_one():
    """The luminance term (2 mu_x mu_y + C1) / (mu_x^2 + mu_y^2 + C1) is not shift-invariant: computing
    on [-1, 1] images with data range 2 (aediff's old convention) gives another number for a blurred
    digit. This pins ssim to Wang et al.'s [0, 1] convention."""
    x = _digits_28()
    y = _blur(x)
    ours = ssim(x, y).numpy()
    old = _skimage_ssim(2 * x - 1, 2 * y - 1, data_range=2.0)
    np.testing.assert_allclose(ours, _skimage_ssim(x, y), atol=1e-5)
    assert np.abs(ours - old).min() > 1e-3 and np.abs(ours - old).mean() > 0.03
    # torchmetrics agrees on the shift: its [-1, 1] / range 2 map differs from its [0, 1] map
    _, tm_unit = tm_ssim(x, y, data_range=1.0, reduction="none", return_full_image=True)
    _, tm_old = tm_ssim(2 * x - 1, 2 * y - 1, data_range=2.0, reduction="none", return_full_image=True)
    np.testing.assert_allclose(ours, tm_unit[..., 5:-5, 5:-5].mean(dim=(1, 2, 3)).numpy(), atol=1e-5)
    assert (tm_unit - tm_old)[..., 5:-5, 5:-5].mean(dim=(1, 2, 3)).abs().min() > 1e-3
    # [-1, 1] images are rejected with the fix in the message, whatever data_range is passed
    for data_range in (1.0, 2.0):
        with pytest.raises(ConfigError, match=r"ssim expects images in \[0, .*\(x \+ 1\) / 2"):
            ssim(2 * x - 1, 2 * y - 1, data_range=data_range)
    with pytest.raises(ConfigError, match=r"ssim expects images in \[0, 1\] \(Wang et al.\); convert aediff"):
        ssim(x, y * 1.2)
    # another range: images in [0, 255] with data_range 255 are the same SSIM
    torch.testing.assert_close(ssim(255 * x, 255 * y, data_range=255.0), ssim(x, y), atol=1e-5, rtol=0)


def test_identical_images_give_ssim_one_and_psnr_inf():
    for shape in [(2, 1, 28, 28), (2, 3, 8, 8)]:
        x = torch.rand(shape) * 2 - 1
        torch.testing.assert_close(ssim(_to_unit(x), _to_unit(x)), torch.ones(shape[0]), atol=1e-6, rtol=0)
        assert torch.isinf(psnr(x, x.clone())).all() and (psnr(x, x.clone()) > 0).all()
        assert (mse(x, x.clone()) == 0).all()


def test_noisier_images_score_lower():
    x = _structured(4, 1, 28, seed=3)
    gen = torch.Generator().manual_seed(0)
    noise = torch.randn(x.shape, generator=gen)
    levels = [0.05, 0.2, 0.6]
    ps = [psnr(x, (x + s * noise).clamp(-1, 1)) for s in levels]
    ss = [ssim(_to_unit(x), _to_unit(x + s * noise)) for s in levels]
    for i in range(1, len(levels)):
        assert (ps[i] < ps[i - 1]).all()
        assert (ss[i] < ss[i - 1]).all()


def test_image_metric_input_errors():
    x = torch.zeros(2, 1, 8, 8)
    with pytest.raises(ConfigError, match="identical shape"):
        mse(x, torch.zeros(2, 1, 8, 9))
    with pytest.raises(ConfigError, match="identical shape"):
        ssim(x[0], x[0])
    with pytest.raises(ConfigError, match="too small"):
        ssim(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2))
    with pytest.raises(ConfigError, match="odd"):
        ssim(x, x, window_size=4)


# ------------------------------------------------------------------------------------ feature metrics


def _scipy_fid(a: np.ndarray, b: np.ndarray) -> float:
    """pytorch-fid / TTUR reference: scipy sqrtm with the eps-offset fallback."""
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    if not np.isfinite(covmean).all():
        off = np.eye(s1.shape[0]) * 1e-6
        covmean = scipy.linalg.sqrtm((s1 + off) @ (s2 + off))
    covmean = np.real(covmean)
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def test_frechet_distance_matches_references():
    rng = np.random.default_rng(0)
    d = 16
    mix = rng.normal(size=(d, d)) / np.sqrt(d)
    a = rng.normal(size=(400, d)) @ mix
    b = rng.normal(size=(300, d)) @ (mix + 0.3 * rng.normal(size=(d, d)) / np.sqrt(d)) + 0.2
    ours = frechet_distance(a, b)
    ref = _scipy_fid(a, b)
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    tm = _compute_fid(ta.mean(0), torch.cov(ta.T), tb.mean(0), torch.cov(tb.T)).item()
    assert ours == pytest.approx(ref, rel=1e-3)
    assert ours == pytest.approx(tm, rel=1e-3)
    # tensors (float32) and arrays give the same value
    assert frechet_distance(ta.float(), tb.float()) == pytest.approx(ours, rel=1e-4)


def test_frechet_distance_identical_and_mean_shift():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(200, 8))
    assert frechet_distance(a, a.copy()) == pytest.approx(0.0, abs=1e-8)
    delta = rng.normal(size=8)
    # equal covariances (the same points, shifted): FID = ||delta||^2 exactly
    assert frechet_distance(a, a + delta) == pytest.approx(float(delta @ delta), rel=1e-8, abs=1e-8)


def test_frechet_distance_singular_covariance_is_finite():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(10, 32)), rng.normal(size=(12, 32))  # N < D: rank-deficient covariances
    value = frechet_distance(a, b)
    assert math.isfinite(value) and value > 0
    assert value == pytest.approx(_scipy_fid(a, b), rel=1e-3)


@pytest.mark.filterwarnings("ignore:Metric `Kernel Inception Distance` will save")
def test_kid_matches_torchmetrics():
    gen = torch.Generator().manual_seed(0)
    real = torch.randn(60, 12, generator=gen, dtype=torch.float64)
    fake = torch.randn(50, 12, generator=gen, dtype=torch.float64) * 1.2 + 0.3
    # N = M = subset_size (or larger): a "subset" of the whole set would be a permutation of it, the same
    # value every time and a std of 0. Subsets are halved to 25 rows instead: the same subsets as
    # torchmetrics with subset_size=25, and a real spread.
    real50 = real[:50]
    metric25 = KernelInceptionDistance(feature=torch.nn.Identity(), subsets=20, subset_size=25)
    metric25.update(real50, real=True)
    metric25.update(fake, real=False)
    torch.manual_seed(7)
    tm_mean25, tm_std25 = metric25.compute()
    for requested in (50, 10_000):
        mean50, std50 = kernel_inception_distance(fake, real50, num_subsets=20, subset_size=requested, seed=7)
        assert (mean50, std50) == pytest.approx((tm_mean25.item(), tm_std25.item()), rel=1e-6)
        assert std50 > 0.1 * abs(mean50)
    # The subset mean is unbiased for the full-set U-statistic (torchmetrics' poly_mmd on all rows).
    many_mean, many_std = kernel_inception_distance(fake, real50, num_subsets=150, subset_size=50)
    assert abs(many_mean - poly_mmd(real50, fake).item()) < 4 * many_std / math.sqrt(150)
    # random subsets: same seed -> same subsets as torchmetrics' metric (real drawn first, global RNG)
    metric = KernelInceptionDistance(feature=torch.nn.Identity(), subsets=20, subset_size=30)
    metric.update(real, real=True)
    metric.update(fake, real=False)
    torch.manual_seed(7)
    tm_mean, tm_std = metric.compute()
    mean, std = kernel_inception_distance(fake, real, num_subsets=20, subset_size=30, seed=7)
    assert mean == pytest.approx(tm_mean.item(), rel=1e-6)
    assert std == pytest.approx(tm_std.item(), rel=1e-6)


def test_kid_same_distribution_near_zero_and_shift_larger():
    gen = torch.Generator().manual_seed(1)
    a = torch.randn(300, 10, generator=gen)
    b = torch.randn(300, 10, generator=gen)
    same_mean, same_std = kernel_inception_distance(a, b, num_subsets=20, subset_size=100)
    shift_mean, _ = kernel_inception_distance(a, b + 0.5, num_subsets=20, subset_size=100)
    assert abs(same_mean) < 3 * same_std + 1e-3
    assert shift_mean > 10 * max(abs(same_mean), same_std)
    # subset size lowered below min(N, M) rather than raising
    assert math.isfinite(kernel_inception_distance(a[:20], b, num_subsets=2, subset_size=1000)[0])
    assert kernel_inception_distance(a[:3], b[:3], num_subsets=5, subset_size=1000)[1] > 0
    with pytest.raises(ConfigError, match="feature dimensions differ"):
        kernel_inception_distance(a, b[:, :5])


def test_kid_from_the_whole_kernels_equals_kid_from_each_subsets_kernels():
    rng = np.random.default_rng(11)
    a, b = rng.normal(size=(60, 7)), rng.normal(size=(90, 7)) + 0.2
    whole = kernel_inception_distance(a, b, num_subsets=30, subset_size=40, seed=3)
    per_subset = kernel_inception_distance(a, b, num_subsets=30, subset_size=40, seed=3, whole_kernel_entries=0)
    assert whole == pytest.approx(per_subset, rel=1e-12)
    # another seed draws other subsets: the comparison above could fail
    assert kernel_inception_distance(a, b, num_subsets=30, subset_size=40, seed=4) != pytest.approx(whole, rel=1e-6)


@pytest.mark.parametrize(
    "requested,n,m,expected",
    [(1000, 5000, 6000, 1000), (30, 50, 60, 30), (50, 50, 60, 25), (1000, 50, 60, 25), (1000, 60, 51, 25)]
    + [(1000, 3, 100, 2), (1000, 2, 2, 2), (49, 50, 50, 49)],
)
def test_kid_subsets_are_proper_subsets(requested, n, m, expected):
    assert distances._kid_subset_size(requested, n, m) == expected


def test_score_features_record():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(80, 6)), rng.normal(size=(90, 6)) + 0.1
    score = score_features(
        a,
        b,
        feature_extractor="classifier:mnist",
        reference="mnist5k:test",
        kid_subsets=5,
        kid_subset_size=40,
    )
    assert isinstance(score, FeatureScore)
    assert score.fid == pytest.approx(frechet_distance(a, b))
    assert (score.kid_mean, score.kid_std) == pytest.approx(
        kernel_inception_distance(a, b, num_subsets=5, subset_size=40, seed=0)
    )
    assert (score.kid_subset_size, score.kid_subsets, score.pr_set_size) == (40, 5, 80)
    # FID's bootstrap: 50 draws by default, seeded like the rest
    np.testing.assert_allclose(score.fid_draws_values, fid_bootstrap(a, b, draws=50, seed=0), rtol=1e-12)
    assert score.fid_se == pytest.approx(np.std(score.fid_draws_values, ddof=1)) and score.fid_se > 0
    estimate = score.fid_estimate()
    assert isinstance(estimate, stats.Estimate)
    assert (estimate.value, estimate.se, estimate.n) == (score.fid, score.fid_se, 50)
    assert score.warnings == []
    d = score.to_dict()
    assert set(d) == {
        "fid",
        "kid_mean",
        "kid_std",
        "feature_extractor",
        "num_samples",
        "num_reference",
        "reference",
        "precision",
        "recall",
        "pr_k",
        "kid_subset_size",
        "kid_subsets",
        "pr_set_size",
        "fid_se",
        "fid_draws_values",
        "warnings",
        "kid_draws_values",
        "precision_draws_values",
        "recall_draws_values",
    }
    # KID, precision and recall from the same bootstrap resamples as FID
    # (on the equal-size sets precision and recall use: b subsampled to a's 80 rows, as score_features does)
    rng = distances._draw_rng(0, distances._PR_STREAM, 0)
    equal_b = b[np.sort(rng.choice(len(b), len(a), replace=False))]
    np.testing.assert_allclose(score.kid_draws_values, kid_bootstrap(a, equal_b, draws=50, seed=0), rtol=1e-12)
    assert score.estimate("kid").se == pytest.approx(np.std(score.kid_draws_values, ddof=1))
    assert score.estimate("kid").se > 0
    assert score.estimate("precision").se > 0 and score.estimate("recall").se > 0
    assert d["pr_k"] == 3 and 0 <= d["precision"] <= 1 and 0 <= d["recall"] <= 1
    assert (d["num_samples"], d["num_reference"]) == (80, 90)
    assert d["reference"] == "mnist5k:test" and d["feature_extractor"] == "classifier:mnist"
    assert d["kid_subset_size"] == 40 and len(d["fid_draws_values"]) == 50
    assert json.loads(json.dumps(d, allow_nan=False)) == d
    assert all(type(v) is float for v in d["fid_draws_values"]) and type(d["fid_se"]) is float
    assert FeatureScore.from_dict(json.loads(json.dumps(d))) == score
    # an older record (no uncertainty fields) still reads, with defaults
    old = {k: d[k] for k in list(d)[:10]}
    assert FeatureScore.from_dict(old).fid_draws_values == [] and FeatureScore.from_dict(old).fid_se is None
    # two models against the same reference with the same seed: paired draws from the dicts alone
    other = score_features(a + 0.2, b, feature_extractor="classifier:mnist", reference="mnist5k:test", kid_subsets=2)
    paired = stats.difference_of_draws(d["fid"], d["fid_draws_values"], other.fid, other.to_dict()["fid_draws_values"])
    assert paired.value == pytest.approx(score.fid - other.fid) and paired.n == 50
    with pytest.raises(ConfigError, match="NaN"):
        score_features(a * np.nan, b, feature_extractor="x", reference="y")


def test_score_features_without_fid_draws():
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(30, 3)), rng.normal(size=(40, 3))
    score = score_features(a, b, feature_extractor="x", reference="y", kid_subsets=2, fid_draws=0)
    assert score.fid_se is None and score.fid_draws_values == []
    assert json.loads(json.dumps(score.to_dict(), allow_nan=False))["fid_se"] is None
    with pytest.raises(ConfigError, match="fid_draws=50"):
        score.fid_estimate()
    for bad in (1, -3):
        with pytest.raises(ConfigError, match="fid_draws must be 0"):
            score_features(a, b, feature_extractor="x", reference="y", fid_draws=bad)


def test_score_features_compares_precision_recall_on_equal_size_sets(monkeypatch):
    rng = np.random.default_rng(5)
    small, large = rng.normal(size=(40, 3)), rng.normal(size=(100, 3)) + 0.2
    seen = []

    def spy(sample_feats, reference_feats, k=3):
        seen.append((sample_feats, reference_feats))
        return precision_recall(sample_feats, reference_feats, k=k)

    monkeypatch.setattr(distances, "precision_recall", spy)
    large_rows = {tuple(row) for row in large}
    subsets = {}
    for samples, reference, seed in ((small, large, 0), (large, small, 0), (small, large, 1)):
        seen.clear()
        score = score_features(samples, reference, feature_extractor="x", reference="y", kid_subsets=2, seed=seed)
        ((pr_samples, pr_reference),) = seen
        assert pr_samples.shape == pr_reference.shape == (40, 3) and score.pr_set_size == 40
        assert (score.num_samples, score.num_reference) == (len(samples), len(reference))
        whole, subsampled = (pr_samples, pr_reference) if samples is small else (pr_reference, pr_samples)
        np.testing.assert_array_equal(whole, small)  # the smaller set is used whole
        rows = [tuple(row) for row in subsampled]
        assert set(rows) <= large_rows and len(set(rows)) == 40  # rows of the larger set, without replacement
        assert (score.precision, score.recall) == precision_recall(pr_samples, pr_reference, k=3)
        subsets[(samples is small, seed)] = frozenset(rows)
    # seeded: same seed, same subset whichever side it is on; another seed, another subset
    assert subsets[(True, 0)] == subsets[(False, 0)] != subsets[(True, 1)]
    # equal sizes: nothing is subsampled
    seen.clear()
    score = score_features(small, large[:40], feature_extractor="x", reference="y", kid_subsets=2)
    np.testing.assert_array_equal(seen[0][1], large[:40])
    assert score.pr_set_size == 40


def test_score_features_warns_about_small_sets():
    rng = np.random.default_rng(6)
    dim = 48
    big, small = rng.normal(size=(200, dim)), rng.normal(size=(80, dim))
    kwargs = {"feature_extractor": "x", "reference": "y", "kid_subsets": 2, "fid_draws": 0}
    assert score_features(big, big + 0.1, **kwargs).warnings == []
    assert score_features(big[:96], big[96:192], **kwargs).warnings == []  # exactly 2 * D is enough
    score = score_features(big, small, **kwargs)
    assert score.warnings == [
        "the reference set has 80 feature vectors, fewer than twice the feature dimension (48): FID is dominated "
        "by estimation error; use more images or a smaller feature space"
    ]
    assert score.to_dict()["warnings"] == score.warnings
    both = score_features(small, small[:50], **kwargs).warnings
    assert len(both) == 2 and both[0].startswith("the sample set has 80 ") and "reference set has 50 " in both[1]


# ------------------------------------------------------------------------------- FID bootstrap


def test_fid_bootstrap_draws_are_fids_of_resampled_sets():
    rng = np.random.default_rng(7)
    reference = rng.normal(size=(60, 5)) * 2 + 10  # large mean: the centred moment updates must not cancel
    samples_1, samples_2 = rng.normal(size=(50, 5)) + 10, rng.normal(size=(70, 5)) + 10.5
    draws_1 = fid_bootstrap(samples_1, reference, draws=4, seed=3)
    draws_2 = fid_bootstrap(torch.from_numpy(samples_2).float(), reference, draws=4, seed=3)
    assert draws_1.shape == (4,) and draws_1.dtype == np.float64 and (draws_1 > 0).all()
    for i in range(4):
        # the reference rows of draw i depend on (seed, i, M) only: the same for both sample sets
        ref_rows = distances._bootstrap_indices(3, distances._REFERENCE_STREAM, i, 60)
        for samples, draws in ((samples_1, draws_1), (samples_2.astype(np.float32), draws_2)):
            rows = distances._bootstrap_indices(3, distances._SAMPLE_STREAM, i, len(samples))
            assert draws[i] == pytest.approx(frechet_distance(samples[rows], reference[ref_rows]), rel=1e-6)
    np.testing.assert_array_equal(fid_bootstrap(samples_1, reference, draws=4, seed=3), draws_1)
    assert not np.allclose(fid_bootstrap(samples_1, reference, draws=4, seed=4), draws_1)
    assert fid_bootstrap(samples_1, reference, draws=0).shape == (0,)
    with pytest.raises(ConfigError, match="draws must be >= 0"):
        fid_bootstrap(samples_1, reference, draws=-1)
    with pytest.raises(ConfigError, match="feature dimensions differ"):
        fid_bootstrap(samples_1, reference[:, :3])


def test_the_reference_moments_are_computed_once_and_give_the_same_draws(monkeypatch):
    rng = np.random.default_rng(8)
    reference, samples = rng.normal(size=(80, 4)), rng.normal(size=(40, 4)) + 0.3
    distances._REFERENCE_MOMENTS.clear()
    fresh = fid_bootstrap(samples, reference, draws=6, seed=1)
    calls = []
    moments = distances._resampled_moments
    monkeypatch.setattr(distances, "_resampled_moments", lambda c, r: calls.append(len(c)) or moments(c, r))
    np.testing.assert_array_equal(fid_bootstrap(samples, reference, draws=6, seed=1), fresh)
    assert calls == [40] * 6  # the samples' moments only: the reference's were kept
    calls.clear()
    fid_bootstrap(samples, reference, draws=8, seed=1)  # two more draws of the same reference
    assert calls.count(80) == 2
    calls.clear()
    other = reference.copy()
    other[0, 0] += 1.0  # other content: other moments
    assert not np.array_equal(fid_bootstrap(samples, other, draws=6, seed=1), fresh)
    assert calls.count(80) == 6
    for k in range(6):  # a bounded cache
        fid_bootstrap(samples, reference + k + 1, draws=2, seed=1)
    assert len(distances._REFERENCE_MOMENTS) == distances._REFERENCES_KEPT


def test_fid_bootstrap_handles_singular_resampled_covariances():
    rng = np.random.default_rng(8)
    a, b = rng.normal(size=(10, 32)), rng.normal(size=(12, 32))  # N < D: every covariance is singular
    draws = fid_bootstrap(a, b, draws=5)
    assert np.isfinite(draws).all() and (draws > 0).all()
    rows_a = distances._bootstrap_indices(0, distances._SAMPLE_STREAM, 0, 10)
    rows_b = distances._bootstrap_indices(0, distances._REFERENCE_STREAM, 0, 12)
    assert draws[0] == pytest.approx(_scipy_fid(a[rows_a], b[rows_b]), rel=1e-3)


def test_fid_bootstrap_standard_error_shrinks_like_one_over_sqrt_n_and_is_calibrated():
    rng = np.random.default_rng(9)
    dim, shift = 4, 0.5  # distinct distributions: the mean term dominates and its spread is O(1 / sqrt(N))
    se = {}
    for n in (250, 4000):
        a, b = rng.normal(size=(n, dim)) + shift, rng.normal(size=(n, dim))
        se[n] = fid_bootstrap(a, b, draws=100, seed=1).std(ddof=1)
    # 16x the data: 4x smaller (1 / sqrt(N)); 1 / N would give 16, no shrinkage 1
    assert 2.8 < se[250] / se[4000] < 5.5
    # the bootstrap SE estimates the spread of FID over independent data sets of the same size
    replicate_fids = [
        frechet_distance(rng.normal(size=(400, dim)) + shift, rng.normal(size=(400, dim))) for _ in range(200)
    ]
    a, b = rng.normal(size=(400, dim)) + shift, rng.normal(size=(400, dim))
    assert fid_bootstrap(a, b, draws=200).std(ddof=1) == pytest.approx(np.std(replicate_fids, ddof=1), rel=0.3)


def test_fid_bootstrap_pairs_two_models_against_one_reference():
    rng = np.random.default_rng(10)
    dim = 4
    # a reference smaller than the sample sets: its noise is most of each FID's uncertainty, and shared
    reference = rng.normal(size=(300, dim))
    model_1, model_2 = rng.normal(size=(2000, dim)) + 0.3, rng.normal(size=(2000, dim)) + 0.35
    fid_1, fid_2 = frechet_distance(model_1, reference), frechet_distance(model_2, reference)
    draws_1, draws_2 = fid_bootstrap(model_1, reference, seed=0), fid_bootstrap(model_2, reference, seed=0)
    independent = math.hypot(draws_1.std(ddof=1), draws_2.std(ddof=1))
    paired = stats.difference_of_draws(fid_1, draws_1, fid_2, draws_2)
    assert paired.value == pytest.approx(fid_1 - fid_2)
    assert paired.se < 0.6 * independent
    # the cancellation comes from the shared reference resamples: different seeds do not pair
    unpaired = stats.difference_of_draws(fid_1, draws_1, fid_2, fid_bootstrap(model_2, reference, seed=1))
    assert unpaired.se > 0.7 * independent


def _modes(n_per_mode: int, modes: list[int], rng: np.random.Generator) -> np.ndarray:
    """Points around the corners of a 4-d cube scaled far apart (mode i at 20 * e_i), std 1."""
    centres = 20.0 * np.eye(4)
    return np.concatenate([centres[m] + rng.normal(size=(n_per_mode, 4)) for m in modes])


def test_precision_recall_of_identical_disjoint_and_half_covering_sets():
    rng = np.random.default_rng(0)
    reference = _modes(200, [0, 1, 2, 3], rng)
    assert precision_recall(reference, reference) == (1.0, 1.0)
    assert precision_recall(torch.from_numpy(reference) + 1000.0, reference) == (0.0, 0.0)
    # Samples from two of the four modes: realistic (high precision) but covering half the data.
    half = _modes(400, [0, 1], rng)
    precision, recall = precision_recall(half, reference, k=3)
    assert precision > 0.9 and abs(recall - 0.5) < 0.06
    # The roles are not symmetric: swapped, the reference covers all of the samples' manifold.
    assert precision_recall(reference, half)[1] > 0.9


def test_precision_recall_matches_a_direct_computation_and_is_chunked(monkeypatch):
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(70, 5)), rng.normal(size=(50, 5)) + 0.5
    k = 4
    radius_a = np.sort(scipy.spatial.distance.cdist(a, a), axis=1)[:, k]
    radius_b = np.sort(scipy.spatial.distance.cdist(b, b), axis=1)[:, k]
    d_ab = scipy.spatial.distance.cdist(a, b)
    expected = ((d_ab <= radius_b[None]).any(1).mean(), (d_ab.T <= radius_a[None]).any(1).mean())
    assert precision_recall(a, b, k=k) == pytest.approx(expected)
    monkeypatch.setattr(distances, "_PR_CHUNK_ROWS", 7)  # blocks of rows give the same answer
    assert precision_recall(a, b, k=k) == pytest.approx(expected)
    with pytest.raises(ConfigError, match="at least 5"):
        precision_recall(a[:4], b, k=4)
    # score_features lowers k for tiny sets and records it
    assert score_features(a[:3], b, feature_extractor="x", reference="y", kid_subsets=2).pr_k == 2


def test_extract_features_batches_without_grad():
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 5), torch.nn.Dropout(0.5))
    net.train()
    images = torch.rand(23, 1, 8, 8) * 2 - 1
    feats = extract_features(net, images, batch_size=10)
    assert feats.shape == (23, 5) and feats.dtype == torch.float32 and not feats.requires_grad
    assert net.training  # mode restored
    net.eval()
    with torch.no_grad():
        torch.testing.assert_close(feats, net(images))
    calls = []

    def fn(batch):
        calls.append(batch.shape[0])
        return batch.mean(dim=(2, 3)).double()

    out = extract_features(fn, images, batch_size=10)
    assert calls == [10, 10, 3] and out.dtype == torch.float32 and out.shape == (23, 1)


def test_inception_extractor_raises_without_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.delenv(INCEPTION_WEIGHTS_ENV, raising=False)
    with pytest.raises(ConfigError, match="aediff train classifier") as info:
        inception_extractor()
    assert "pip install aediff[inception]" in str(info.value)
    # torch-fidelity importable (faked) but weights missing -> still a ConfigError naming the path
    fake_mod = types.ModuleType("torch_fidelity.feature_extractor_inceptionv3")
    seen = {}

    class FakeInception(torch.nn.Module):
        def __init__(self, name, features_list, feature_extractor_weights_path=None):
            super().__init__()
            seen["args"] = (name, features_list, feature_extractor_weights_path)

        def forward(self, x):
            seen["input"] = x
            return (x.float().mean(dim=(2, 3)).repeat(1, 2),)

    fake_mod.FeatureExtractorInceptionV3 = FakeInception
    monkeypatch.setitem(sys.modules, "torch_fidelity", types.ModuleType("torch_fidelity"))
    monkeypatch.setitem(sys.modules, "torch_fidelity.feature_extractor_inceptionv3", fake_mod)
    with pytest.raises(ConfigError, match="not on disk"):
        inception_extractor()
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"")
    monkeypatch.setenv(INCEPTION_WEIGHTS_ENV, str(weights))
    extractor = inception_extractor(device="cpu")
    assert seen["args"] == ("inception-v3-compat", ["2048"], str(weights))
    feats = extract_features(extractor, torch.tensor([-1.0, 1.0]).view(2, 1, 1, 1).expand(2, 1, 4, 4))
    assert seen["input"].dtype == torch.uint8 and seen["input"].shape == (2, 3, 4, 4)
    assert seen["input"][0].max() == 0 and seen["input"][1].min() == 255
    assert feats.shape == (2, 6)


# ----------------------------------------------------------------------------------------- likelihood


def test_bits_per_dim_arithmetic():
    assert bits_per_dim(784 * math.log(2.0), 784) == pytest.approx(1.0)
    t = torch.tensor([0.0, 3072 * math.log(2.0) * 3.5])
    torch.testing.assert_close(bits_per_dim(t, 3072), torch.tensor([0.0, 3.5]))
    with pytest.raises(ConfigError):
        bits_per_dim(1.0, 0)


def test_dequantization_uniform_density_gives_num_bits():
    d = 784
    # uniform density on [-1, 1]^D: p = 2^-D, NLL = D ln 2 nats -> 1 bit/dim continuous, b bits/dim discrete
    nll = d * math.log(2.0)
    assert dequantization_offset_bits(8) == 7.0
    assert continuous_nll_to_discrete_bpd(nll, d, num_bits=8) == pytest.approx(8.0)
    assert continuous_nll_to_discrete_bpd(nll, d, num_bits=5) == pytest.approx(5.0)
    # hand case: D=2, density 4 on a small region (p = 2^2 -> -log2 p / D = -1) -> -1 + 7 = 6 bits/dim
    assert continuous_nll_to_discrete_bpd(-math.log(4.0), 2) == pytest.approx(6.0)
    # Monte-Carlo check of the bound: discrete uniform over 2^b levels has exactly b bits/dim
    b, dims = 3, 4
    k = torch.randint(0, 2**b, (1000, dims), generator=torch.Generator().manual_seed(0))
    x = 2 * (k + torch.rand(k.shape, generator=torch.Generator().manual_seed(1))) / 2**b - 1
    nll = -(torch.full_like(x, 0.5).log()).sum(dim=1)  # uniform density 1/2 per dim on [-1, 1]
    assert continuous_nll_to_discrete_bpd(nll, dims, num_bits=b).mean().item() == pytest.approx(b)


def test_logmeanexp():
    x = torch.tensor([[0.0, math.log(3.0)], [1000.0, 1000.0]])
    torch.testing.assert_close(logmeanexp(x, dim=1), torch.tensor([math.log(2.0), 1000.0]))
    assert logmeanexp(x, dim=0, keepdim=True).shape == (1, 2)


def test_kid_and_precision_recall_draws_centre_on_the_full_set_values_and_see_separation():
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=(200, 8)), rng.normal(size=(220, 8))
    draws = kid_bootstrap(a, b, draws=40)
    kernels = distances._polynomial_kernels(torch.from_numpy(a), torch.from_numpy(b[:200]), 3, 1 / 8, 1.0)
    full = distances._weighted_mmd2(
        kernels, torch.ones(1, 200, dtype=torch.float64), torch.ones(1, 200, dtype=torch.float64)
    )[0]
    assert abs(draws.mean() - full) < 3 * draws.std(ddof=1) and draws.std(ddof=1) > 0
    assert kid_bootstrap(a, b, draws=0).shape == (0,)  # no draws asked, none given
    far = b + 100.0  # no sample near any reference point, and the reverse
    precision, recall = distances.precision_recall_bootstrap(a, far, draws=10)
    assert precision.max() == 0.0 and recall.max() == 0.0
    precision, recall = distances.precision_recall_bootstrap(a, a.copy(), draws=10)
    assert precision.min() > 0.8 and recall.min() > 0.8  # the same set: its resamples lie in each other's balls
