"""Feature-space sample quality, the statistics: Frechet distance (FID), kernel distance (KID), precision and
recall, and ``score_features`` that computes them all. The features come from ``extractors.py``.

All metrics compare two sets of feature vectors, ``[N, D]`` and ``[M, D]`` (torch tensors or numpy arrays),
typically the pool features of a pretrained network applied to generated samples and to reference data.
aediff uses Inception-v3 pool features (the published FID/KID convention) when its weights are on disk
(:func:`inception_extractor`) and otherwise the penultimate features of the dataset classifier trained by
``aediff train classifier``. Values computed with different extractors or reference sets are not
comparable, which is why :class:`FeatureScore` records both.

Uncertainty: :func:`fid_bootstrap` resamples both sets to give FID a standard error
(:meth:`FeatureScore.fid_estimate`); its reference resamples depend only on the seed, the draw and the
reference size, so two models scored against the same reference get paired draws
(:func:`aediff.metrics.stats.difference_of_draws`). KID's spread is over random proper subsets.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import asdict, dataclass, field, fields

import numpy as np
import torch
from torch import Tensor

from aediff.errors import ConfigError
from aediff.metrics.stats import Estimate

__all__ = [
    "FeatureScore",
    "fid_bootstrap",
    "frechet_distance",
    "kernel_inception_distance",
    "precision_recall",
    "score_features",
]

ArrayLike = Tensor | np.ndarray


def _as_float64(feats: ArrayLike, name: str) -> np.ndarray:
    if isinstance(feats, Tensor):
        arr = feats.detach().to("cpu", torch.float64).numpy()
    elif isinstance(feats, np.ndarray):
        arr = feats.astype(np.float64, copy=False)
    else:
        raise ConfigError(
            f"{name}: expected a torch tensor or numpy array of features [N, D], got {type(feats).__name__}."
        )
    if arr.ndim != 2:
        raise ConfigError(
            f"{name}: expected features of shape [N, D], got shape {arr.shape}; flatten them with "
            "feats.reshape(len(feats), -1)."
        )
    if not np.all(np.isfinite(arr)):
        raise ConfigError(
            f"{name}: features contain NaN or inf; the samples or the feature extractor produced non-finite "
            "values (check the model/sampler for divergence and that images are in [-1, 1])."
        )
    return arr


def _check_pair(a: np.ndarray, b: np.ndarray, fn: str, min_rows: int) -> None:
    if a.shape[1] != b.shape[1]:
        raise ConfigError(
            f"{fn}: feature dimensions differ ({a.shape[1]} vs {b.shape[1]}); both sets must come from the "
            "same feature extractor."
        )
    if a.shape[0] < min_rows or b.shape[0] < min_rows:
        raise ConfigError(
            f"{fn}: need at least {min_rows} feature vectors per set, got {a.shape[0]} and {b.shape[0]}; "
            "generate/load more samples."
        )


def _psd_sqrt(mat: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric PSD matrix (negative round-off eigenvalues clipped to 0)."""
    vals, vecs = np.linalg.eigh(mat)
    return (vecs * np.sqrt(np.clip(vals, 0.0, None))) @ vecs.T


def frechet_distance(feats_a: ArrayLike, feats_b: ArrayLike) -> float:
    """Frechet distance between Gaussians fitted to two feature sets (FID when features are Inception's).

    Heusel, Ramsauer, Unterthiner, Nessler & Hochreiter, "GANs Trained by a Two Time-Scale Update Rule
    Converge to a Local Nash Equilibrium", NeurIPS 2017::

        d^2 = ||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^{1/2})

    with sample means and unbiased (``N - 1``) sample covariances, as in the reference implementations
    (TTUR, pytorch-fid, torch-fidelity, torchmetrics). Computed in float64. The trace of the matrix square
    root uses the eigenvalue identity ``Tr (S_a S_b)^{1/2} = sum_i sqrt(lambda_i(R^T S_b R))`` for any
    ``R`` with ``S_a = R R^T`` (``S_a S_b`` and the symmetric PSD matrix ``R^T S_b R`` share their
    eigenvalues; ``R`` is a Cholesky factor of either covariance, or the symmetric root
    ``S_a^{1/2}`` when both are singular), so no non-symmetric ``sqrtm``, no complex round-off and no
    eps-offset retry are needed, and singular covariances (``N <= D``) are handled. Tiny negative results
    from round-off are clipped to 0.

    Args:
        feats_a: ``[N, D]`` features (e.g. of generated samples), N >= 2.
        feats_b: ``[M, D]`` features (e.g. of reference data), M >= 2.

    Returns:
        The squared Frechet distance (the number reported as "FID"), >= 0, in squared feature units.
        Note it is biased upwards for small N; compare values at equal sample sizes.
    """
    a = _as_float64(feats_a, "frechet_distance(feats_a)")
    b = _as_float64(feats_b, "frechet_distance(feats_b)")
    _check_pair(a, b, "frechet_distance", min_rows=2)
    cov_a = np.atleast_2d(np.cov(a, rowvar=False))
    cov_b = np.atleast_2d(np.cov(b, rowvar=False))
    return _frechet_from_moments(a.mean(axis=0) - b.mean(axis=0), cov_a, cov_b)


def _trace_sqrt_product(cov_a: np.ndarray, cov_b: np.ndarray) -> float:
    """``Tr (S_a S_b)^{1/2}`` for symmetric PSD ``[D, D]`` covariances, as the sum of the square roots of
    the eigenvalues of the symmetric PSD matrix ``R^T S_b R`` (or ``R^T S_a R``), ``R`` a root of the other.

    A Cholesky factor (``S = L L^T``, so ``L^T S_b L`` has the eigenvalues of ``S_a S_b``) is ~100x cheaper
    than an eigendecomposition at D = 1024, which matters for the bootstrap's 50 draws; a singular
    covariance (N <= D, or a resample with many duplicates) has none, so the other side is tried, then the
    eigendecomposition root of ``S_a``.
    """
    for first, second in ((cov_a, cov_b), (cov_b, cov_a)):
        try:
            root = np.linalg.cholesky(first)
        except np.linalg.LinAlgError:
            continue
        middle = root.T @ second @ root
        break
    else:
        root = _psd_sqrt(cov_a)
        middle = root @ cov_b @ root
    middle = 0.5 * (middle + middle.T)
    return float(np.sqrt(np.clip(np.linalg.eigvalsh(middle), 0.0, None)).sum())


def _frechet_from_moments(mean_diff: np.ndarray, cov_a: np.ndarray, cov_b: np.ndarray) -> float:
    """``||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^{1/2})`` from ``mu_a - mu_b`` [D] and [D, D]
    covariances, clipped at 0 (round-off)."""
    tr_covmean = _trace_sqrt_product(cov_a, cov_b)
    value = float(mean_diff @ mean_diff + np.trace(cov_a) + np.trace(cov_b) - 2.0 * tr_covmean)
    return max(value, 0.0)


# Streams of the bootstrap / subsampling generators, keyed (seed, stream, draw): the reference stream
# never sees the sample set, so every model scored with the same seed resamples the reference identically.
_SAMPLE_STREAM = 0
_REFERENCE_STREAM = 1
_PR_STREAM = 2


def _draw_rng(seed: int, stream: int, draw: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), stream, int(draw)])


def _bootstrap_indices(seed: int, stream: int, draw: int, size: int) -> np.ndarray:
    """Rows [size] of a set of ``size`` rows drawn with replacement for bootstrap draw ``draw``."""
    return _draw_rng(seed, stream, draw).integers(0, size, size=size)


def _resample_counts(seed: int, stream: int, draws: int, size: int) -> np.ndarray:
    """[draws, size] int64: how often each row is drawn in each bootstrap resample (:func:`_bootstrap_indices`)."""
    counts = np.zeros((draws, size), dtype=np.int64)
    for i in range(draws):
        counts[i] = np.bincount(_bootstrap_indices(seed, stream, i, size), minlength=size)
    return counts


def _resampled_moments(centred: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean [D] and unbiased covariance [D, D] of ``centred[rows]`` without building the resampled set:
    a resample is the original rows weighted by their counts, ``sum_i w_i x_i x_i^T - n m m^T``."""
    n = len(rows)
    counts = np.bincount(rows, minlength=len(centred))
    used = np.flatnonzero(counts)  # ~37% of rows are not drawn; skipping them saves as much of the matmul
    weighted = centred[used] * np.sqrt(counts[used])[:, None]
    mean = counts[used] @ centred[used] / n
    # ``weighted.T @ weighted`` is one symmetric rank-k update (BLAS syrk), half a general product.
    cov = (weighted.T @ weighted - n * np.outer(mean, mean)) / (n - 1)
    return mean, cov


# The reference's resampled moments of each draw, by (digest of the centred reference, seed): they depend on neither
# the samples nor the model, and a comparison scores every model against the same reference, whose moments cost
# M D^2 per draw (CIFAR-10's 10,000 test images: most of a bootstrap's time). A few references are kept.
_REFERENCE_MOMENTS: OrderedDict[tuple, list[tuple[np.ndarray, np.ndarray]]] = OrderedDict()
_REFERENCES_KEPT = 4


def _reference_moments(centred: np.ndarray, seed: int, draws: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``_resampled_moments`` of the reference's first ``draws`` bootstrap resamples, computed once per reference."""
    key = (hashlib.sha1(np.ascontiguousarray(centred).data).hexdigest(), centred.shape, int(seed))
    kept = _REFERENCE_MOMENTS.pop(key, [])
    for i in range(len(kept), draws):
        moments = _resampled_moments(centred, _bootstrap_indices(seed, _REFERENCE_STREAM, i, len(centred)))
        for array in moments:
            array.setflags(write=False)  # shared by every later call: an in-place change would be an error
        kept.append(moments)
    _REFERENCE_MOMENTS[key] = kept  # the most recently used last
    while len(_REFERENCE_MOMENTS) > _REFERENCES_KEPT:
        _REFERENCE_MOMENTS.popitem(last=False)
    return kept[:draws]


def fid_bootstrap(
    sample_feats: ArrayLike,
    reference_feats: ArrayLike,
    draws: int = 50,
    seed: int = 0,
) -> np.ndarray:
    """Bootstrap draws of the Frechet distance: both sets resampled with replacement, FID recomputed.

    Draw ``i`` resamples the ``N`` sample rows with a generator keyed ``(seed, samples, i)`` and the ``M``
    reference rows with one keyed ``(seed, reference, i)``: the reference resample depends only on
    ``(seed, i, M)``, never on the samples. Two models scored against the same reference with the same
    seed therefore get *paired* draws; the spread of their per-draw differences
    (:func:`aediff.metrics.stats.difference_of_draws`) excludes the reference noise both FIDs share,
    which is most of each FID's own standard error when M is not much larger than N.

    Same math as :func:`frechet_distance` in float64, each draw computing the resampled means and
    covariances from the resample counts (``O(N D^2 + M D^2 + D^3)`` per draw).

    Args:
        sample_feats: ``[N, D]`` features of generated samples, N >= 2.
        reference_feats: ``[M, D]`` features of reference data, M >= 2.
        draws: number of bootstrap draws (0 gives an empty array); 50 is enough for a standard error
            to ~10%.
        seed: non-negative seed; the same seed, draw count and set sizes give the same resamples.

    Returns:
        ``[draws]`` float64 FID values, each >= 0. Use their standard deviation (``ddof=1``) as the
        standard error of :func:`frechet_distance`; their mean is biased upwards (a resample has ~63%
        distinct rows, and FID's small-sample bias grows as the effective sample shrinks), so keep the
        full-set value as the point estimate (:meth:`aediff.metrics.stats.Estimate.from_draws`).
    """
    a = _as_float64(sample_feats, "fid_bootstrap(sample_feats)")
    b = _as_float64(reference_feats, "fid_bootstrap(reference_feats)")
    _check_pair(a, b, "fid_bootstrap", min_rows=2)
    if draws < 0:
        raise ConfigError(f"fid_bootstrap: draws must be >= 0, got {draws}; use 50 (0 for no draws).")
    if seed < 0:
        raise ConfigError(f"fid_bootstrap: seed must be a non-negative integer, got {seed}; use 0.")
    mean_a, mean_b = a.mean(axis=0), b.mean(axis=0)
    # Centring first keeps sum w x x^T - n m m^T from cancelling large numbers when features have big means.
    centred_a, centred_b = a - mean_a, b - mean_b
    out = np.empty(draws, dtype=np.float64)
    for i, (res_mean_b, cov_b) in enumerate(_reference_moments(centred_b, seed, draws)):
        res_mean_a, cov_a = _resampled_moments(centred_a, _bootstrap_indices(seed, _SAMPLE_STREAM, i, len(a)))
        out[i] = _frechet_from_moments((mean_a + res_mean_a) - (mean_b + res_mean_b), cov_a, cov_b)
    return out


def _polynomial_kernels(a: Tensor, b: Tensor, degree: int, gamma: float, coef0: float) -> tuple[Tensor, Tensor, Tensor]:
    """``k(a, a)`` [N, N], ``k(b, b)`` [M, M], ``k(a, b)`` [N, M] for ``k(u, v) = (gamma <u, v> + coef0) ** degree``."""
    return tuple((x @ y.T * gamma + coef0) ** degree for x, y in ((a, a), (b, b), (a, b)))


def _weighted_mmd2(kernels: tuple[Tensor, Tensor, Tensor], w_a: Tensor, w_b: Tensor) -> np.ndarray:
    """Unbiased MMD^2 of weighted sets, one per row of the weights: ``w_a`` [R, N] and ``w_b`` [R, M] (float64) count
    how often each row of a and of b is in the set (0 / 1 for a subset, resample counts for a bootstrap draw);
    ``kernels`` from :func:`_polynomial_kernels`. With ``n = sum(w)``, a within-set term averages over pairs of
    distinct original rows, ``(w^T K w - (w^2) . diag(K)) / (n^2 - w . w)`` (``s (s - 1)`` for a subset of s rows):
    a row drawn twice paired with itself would add k(x, x), the kernel's largest values. Returns [R] float64."""
    k_aa, k_bb, k_ab = kernels

    def within(k: Tensor, w: Tensor) -> Tensor:
        n = w.sum(dim=1)
        return (((w @ k) * w).sum(dim=1) - w**2 @ k.diagonal()) / (n * n - (w * w).sum(dim=1))

    cross = ((w_a @ k_ab) * w_b).sum(dim=1) / (w_a.sum(dim=1) * w_b.sum(dim=1))
    return (within(k_aa, w_a) + within(k_bb, w_b) - 2.0 * cross).numpy()


def _indicators(rows: list[Tensor], size: int) -> Tensor:
    """[len(rows), size] float64: row i is 1 at the indices ``rows[i]`` and 0 elsewhere."""
    out = torch.zeros(len(rows), size, dtype=torch.float64)
    return out.scatter_(1, torch.stack(rows), 1.0)


#: The most float64 numbers (N^2 + M^2 + N M) KID's three whole kernel matrices may hold (128 MB); larger sets
#: compute each subset's kernels instead. Weighting the whole matrices by 0 / 1 subset indicators gives the same
#: values (at round-off) and is far cheaper: the demo's 500 samples against 1,000 test images need 3 kernel
#: products instead of 300 (benchmarks/results/demo_time_colour.md: the demo's time with it).
_KID_WHOLE_KERNEL_ENTRIES = 16_000_000


def _kid_subset_size(subset_size: int, n: int, m: int) -> int:
    """Rows per KID subset: ``min(subset_size, n, m)``, halved (at least 2) when it would be a whole set."""
    size = min(subset_size, n, m)
    if size >= min(n, m):
        size = max(2, min(n, m) // 2)
    return size


def kernel_inception_distance(
    feats_a: ArrayLike,
    feats_b: ArrayLike,
    num_subsets: int = 100,
    subset_size: int = 1000,
    degree: int = 3,
    gamma: float | None = None,
    coef0: float = 1.0,
    seed: int = 0,
    whole_kernel_entries: int = _KID_WHOLE_KERNEL_ENTRIES,
) -> tuple[float, float]:
    """Kernel distance (KID when features are Inception's): unbiased MMD^2 with a polynomial kernel.

    Binkowski, Sutherland, Arbel & Gretton, "Demystifying MMD GANs", ICLR 2018. The kernel is
    ``k(u, v) = (gamma * <u, v> + coef0) ** degree`` with ``gamma = 1 / D`` by default (the paper's
    cubic kernel for ``degree=3, coef0=1``). For each of ``num_subsets`` subsets, ``s`` rows are drawn
    without replacement from each set and the unbiased estimator

        MMD^2_u = sum_{i != j} k(a_i, a_j) / (s (s-1)) + sum_{i != j} k(b_i, b_j) / (s (s-1))
                  - 2 sum_{i, j} k(a_i, b_j) / s^2

    is evaluated (it can be slightly negative when the distributions match). Computed in float64 on CPU.

    Subsets are proper subsets of both sets, so they differ and their spread means something:
    ``s = min(subset_size, N, M)``, and if that is ``min(N, M)`` (the whole smaller set, whose every
    "subset" would be a permutation of it, giving the same value and a std of 0) it is lowered to
    ``max(2, min(N, M) // 2)``. torchmetrics raises when ``subset_size`` exceeds a set instead, and
    happily uses the whole set when it equals it. Subsets are drawn with
    ``torch.randperm`` from a generator seeded with ``seed``, first from ``feats_b`` then from
    ``feats_a`` in every round; this is the order torchmetrics' ``KernelInceptionDistance`` uses for
    (real, fake) with the global RNG, so with ``feats_b`` = real, ``feats_a`` = fake and
    ``torch.manual_seed(seed)`` both draw the same subsets.

    Args:
        feats_a: ``[N, D]`` features (e.g. generated samples).
        feats_b: ``[M, D]`` features (e.g. reference data).
        num_subsets: number of random subsets (100 in the paper / torch-fidelity).
        subset_size: rows per subset (1000 in the paper), >= 2; lowered as above (the value used is
            :func:`_kid_subset_size` ``(subset_size, N, M)``, recorded by :func:`score_features`).
        degree, gamma, coef0: polynomial kernel parameters; ``gamma=None`` means ``1 / D``.
        seed: seed for the subset draws (results are deterministic given the seed).
        whole_kernel_entries: when ``N^2 + M^2 + N M`` is at most this, the three kernel matrices are computed
            once on the whole sets and each subset weights them with 0 / 1 indicators; else each subset computes
            its own (the same values at round-off, at a fraction of the memory).

    Returns:
        ``(mean, std)`` of MMD^2 over the subsets; std is the population std (``ddof=0``), as in
        torchmetrics and torch-fidelity (the spread of one subset's value, not the standard error of the
        mean). KID is conventionally reported x1000 in papers; this is not.
    """
    a_np = _as_float64(feats_a, "kernel_inception_distance(feats_a)")
    b_np = _as_float64(feats_b, "kernel_inception_distance(feats_b)")
    _check_pair(a_np, b_np, "kernel_inception_distance", min_rows=2)
    if num_subsets < 1:
        raise ConfigError(f"kernel_inception_distance: num_subsets must be >= 1, got {num_subsets}; use 100.")
    if subset_size < 2:
        raise ConfigError(f"kernel_inception_distance: subset_size must be >= 2, got {subset_size}; use 1000.")
    if degree < 1:
        raise ConfigError(f"kernel_inception_distance: degree must be >= 1, got {degree}; use 3.")
    n, m, dim = a_np.shape[0], b_np.shape[0], a_np.shape[1]
    size = _kid_subset_size(subset_size, n, m)
    gamma_value = 1.0 / dim if gamma is None else float(gamma)
    a = torch.from_numpy(a_np)
    b = torch.from_numpy(b_np)
    gen = torch.Generator().manual_seed(int(seed))
    draws = [
        (torch.randperm(m, generator=gen)[:size], torch.randperm(n, generator=gen)[:size]) for _ in range(num_subsets)
    ]
    if n * n + m * m + n * m <= whole_kernel_entries:
        kernels = _polynomial_kernels(a, b, degree, gamma_value, coef0)
        w_a, w_b = _indicators([rows_a for _, rows_a in draws], n), _indicators([rows_b for rows_b, _ in draws], m)
        scores = _weighted_mmd2(kernels, w_a, w_b)
    else:
        ones = torch.ones(1, size, dtype=torch.float64)
        scores = np.array(
            [
                _weighted_mmd2(_polynomial_kernels(a[ra], b[rb], degree, gamma_value, coef0), ones, ones)[0]
                for rb, ra in draws
            ]
        )
    return float(scores.mean()), float(scores.std())


def kid_bootstrap(
    sample_feats: ArrayLike,
    reference_feats: ArrayLike,
    draws: int = 50,
    seed: int = 0,
    degree: int = 3,
    gamma: float | None = None,
    coef0: float = 1.0,
) -> np.ndarray:
    """Bootstrap draws of the kernel distance: both sets resampled with replacement exactly as in
    :func:`fid_bootstrap` (the same generators, so two models scored against one reference get paired draws),
    the unbiased MMD^2 of the whole resampled sets recomputed.

    The spread of KID's subset values (``kernel_inception_distance``'s std) is the spread of one subset's
    estimate, not the sampling error of KID; the standard deviation of these draws is (checked for coverage by
    benchmarks/coverage.py). Each draw reuses the three kernel matrices, computed once, weighted by its resample
    counts (:func:`_weighted_mmd2`: a within-set term averages over pairs of distinct original rows, else a row
    drawn twice paired with itself would bias every draw upwards).

    Returns ``[draws]`` float64 MMD^2 values; memory: three float64 kernel matrices (N^2 + M^2 + N M).
    """
    a = torch.from_numpy(_as_float64(sample_feats, "kid_bootstrap(sample_feats)"))
    b = torch.from_numpy(_as_float64(reference_feats, "kid_bootstrap(reference_feats)"))
    _check_pair(a.numpy(), b.numpy(), "kid_bootstrap", min_rows=2)
    g = 1.0 / a.shape[1] if gamma is None else float(gamma)
    n, m = len(a), len(b)
    w_a = torch.from_numpy(_resample_counts(seed, _SAMPLE_STREAM, draws, n)).double()
    w_b = torch.from_numpy(_resample_counts(seed, _REFERENCE_STREAM, draws, m)).double()
    return _weighted_mmd2(_polynomial_kernels(a, b, degree, g, coef0), w_a, w_b)


def precision_recall_bootstrap(
    sample_feats: ArrayLike, reference_feats: ArrayLike, k: int = 3, draws: int = 50, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Bootstrap draws of :func:`precision_recall`: both sets resampled with replacement as in
    :func:`fid_bootstrap`. A resample repeats rows, and a repeated row would be its own nearest neighbour,
    shrinking its ball to nothing; so each resample's manifold is built from its distinct rows (each ball's
    radius the k-th neighbour among them) and the shares are weighted by how often each row was drawn.

    Returns ``(precision draws, recall draws)``, ``[draws]`` each. The distance matrices are computed once
    (float64 N^2 + M^2 + N M: about 24 MB at N = M = 1,000).
    """
    a = torch.from_numpy(_as_float64(sample_feats, "precision_recall_bootstrap(sample_feats)"))
    b = torch.from_numpy(_as_float64(reference_feats, "precision_recall_bootstrap(reference_feats)"))
    _check_pair(a.numpy(), b.numpy(), "precision_recall_bootstrap", min_rows=k + 2)
    d_aa, d_bb, d_ab = torch.cdist(a, a), torch.cdist(b, b), torch.cdist(a, b)
    n, m = len(a), len(b)
    precision, recall = np.empty(draws), np.empty(draws)
    counts_a, counts_b = (
        _resample_counts(seed, _SAMPLE_STREAM, draws, n),
        _resample_counts(seed, _REFERENCE_STREAM, draws, m),
    )
    for i, (w_a, w_b) in enumerate(zip(counts_a, counts_b, strict=True)):
        used_a, used_b = torch.from_numpy(np.flatnonzero(w_a)), torch.from_numpy(np.flatnonzero(w_b))
        k_a, k_b = min(k, len(used_a) - 1), min(k, len(used_b) - 1)
        radii_a = d_aa[used_a][:, used_a].kthvalue(k_a + 1, dim=1).values
        radii_b = d_bb[used_b][:, used_b].kthvalue(k_b + 1, dim=1).values
        cross = d_ab[used_a][:, used_b]  # distinct sample rows x distinct reference rows
        inside_b = (cross <= radii_b[None, :]).any(dim=1).numpy()  # each sample row in the reference manifold
        inside_a = (cross <= radii_a[:, None]).any(dim=0).numpy()  # each reference row in the sample manifold
        precision[i] = float(w_a[used_a.numpy()] @ inside_b) / n
        recall[i] = float(w_b[used_b.numpy()] @ inside_a) / m
    return precision, recall


#: Rows of the sample set compared with the whole other set at once in :func:`precision_recall`; the
#: distance block is ``chunk x M`` float64 numbers (8 * 1024 * 10k = 80 MB for a 10k reference set).
_PR_CHUNK_ROWS = 1024


def _knn_radii(feats: Tensor, k: int) -> Tensor:
    """Distance of each row of ``feats`` [N, D] to its k-th nearest other row, [N]."""
    radii = []
    for start in range(0, len(feats), _PR_CHUNK_ROWS):
        d = torch.cdist(feats[start : start + _PR_CHUNK_ROWS], feats)
        # The row itself is among the k + 1 smallest (at distance 0), so the (k + 1)-th is the k-th neighbour.
        radii.append(d.kthvalue(k + 1, dim=1).values)
    return torch.cat(radii)


def _share_inside(points: Tensor, centres: Tensor, radii: Tensor) -> float:
    """Share of ``points`` [N, D] inside at least one ball (``centres`` [M, D], ``radii`` [M])."""
    inside = 0
    for start in range(0, len(points), _PR_CHUNK_ROWS):
        d = torch.cdist(points[start : start + _PR_CHUNK_ROWS], centres)
        inside += int((d <= radii[None, :]).any(dim=1).sum())
    return inside / len(points)


def precision_recall(sample_feats: ArrayLike, reference_feats: ArrayLike, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall of a sample set against a reference set, each in [0, 1].

    Kynkaanniemi, Karras, Laine, Lehtinen & Aila, "Improved Precision and Recall Metric for Assessing
    Generative Models", NeurIPS 2019. Each set's manifold is the union of balls around its points, each
    ball's radius the distance to the point's k-th nearest neighbour in its own set. Precision is the
    share of samples inside the reference manifold (are the samples realistic?); recall is the share of
    reference points inside the sample manifold (do the samples cover the data?). k = 3 is the paper's.

    Distances are Euclidean in float64, computed in blocks of rows (memory ``O(block * max(N, M))``).

    Args:
        sample_feats: ``[N, D]`` features of generated samples.
        reference_feats: ``[M, D]`` features of reference data.
        k: neighbour whose distance sets the radii; needs ``k < N`` and ``k < M``.

    Returns:
        ``(precision, recall)``.
    """
    a = _as_float64(sample_feats, "precision_recall(sample_feats)")
    b = _as_float64(reference_feats, "precision_recall(reference_feats)")
    _check_pair(a, b, "precision_recall", min_rows=k + 1)
    if k < 1:
        raise ConfigError(f"precision_recall: k must be >= 1, got {k}; use 3.")
    samples, reference = torch.from_numpy(a), torch.from_numpy(b)
    precision = _share_inside(samples, reference, _knn_radii(reference, k))
    recall = _share_inside(reference, samples, _knn_radii(samples, k))
    return precision, recall


@dataclass
class FeatureScore:
    """FID/KID of a sample set against a reference set, with the provenance needed to compare numbers.

    Attributes:
        fid: Frechet distance (:func:`frechet_distance`).
        kid_mean, kid_std: kernel distance mean and std over subsets (:func:`kernel_inception_distance`),
            not scaled by 1000.
        feature_extractor: which features were used, e.g. ``"inception-v3-compat"`` or
            ``"classifier:mnist"``; scores from different extractors are not comparable.
        num_samples: number of sample feature vectors (N).
        num_reference: number of reference feature vectors (M).
        reference: reference set, e.g. ``"mnist5k:test"``.
        precision, recall: improved precision and recall (:func:`precision_recall`), in [0, 1].
        pr_k: the neighbour count k they used.
        kid_subset_size, kid_subsets: rows per KID subset (a proper subset of both sets) and the number
            of subsets (0 when unknown, e.g. read from an older record).
        pr_set_size: rows of each set precision and recall compared; the larger set is subsampled
            (seeded, without replacement) to the smaller one's size, since both numbers depend on the set
            sizes (0 when unknown).
        fid_se: standard error of ``fid``, the std (``ddof=1``) of ``fid_draws_values``; None without
            draws.
        fid_draws_values: the bootstrap draws of FID (:func:`fid_bootstrap`), ``[]`` without draws. Two
            scores against the same reference with the same seed have paired draws:
            ``stats.difference_of_draws(a.fid, a.fid_draws_values, b.fid, b.fid_draws_values)``.
        kid_draws_values, precision_draws_values, recall_draws_values: the same bootstrap resamples' KID
            (:func:`kid_bootstrap`) and precision and recall (:func:`precision_recall_bootstrap`), paired in the
            same way; ``[]`` without draws (or from an older record). ``estimate(name)`` gives each with its
            standard error.
        warnings: sentences about numbers not to trust, e.g. a set smaller than twice the feature
            dimension.
    """

    fid: float
    kid_mean: float
    kid_std: float
    feature_extractor: str
    num_samples: int
    num_reference: int
    reference: str
    precision: float
    recall: float
    pr_k: int
    kid_subset_size: int = 0
    kid_subsets: int = 0
    pr_set_size: int = 0
    fid_se: float | None = None
    fid_draws_values: list[float] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # left out of metrics.json when empty (evaluation.results.encode), so records from before them read back as written
    kid_draws_values: list[float] = field(default_factory=list, metadata={"omit_empty": True})
    precision_draws_values: list[float] = field(default_factory=list, metadata={"omit_empty": True})
    recall_draws_values: list[float] = field(default_factory=list, metadata={"omit_empty": True})

    def to_dict(self) -> dict[str, float | int | str | list | None]:
        """Plain JSON-serialisable dict (builtin floats/ints/strs, lists of them, and None only)."""
        out = asdict(self)
        for key in ("fid", "kid_mean", "kid_std", "precision", "recall"):
            out[key] = float(out[key])
        for key in ("num_samples", "num_reference", "pr_k", "kid_subset_size", "kid_subsets", "pr_set_size"):
            out[key] = int(out[key])
        out["fid_se"] = None if self.fid_se is None else float(self.fid_se)
        for key in ("fid_draws_values", "kid_draws_values", "precision_draws_values", "recall_draws_values"):
            out[key] = [float(v) for v in out[key]]
        out["warnings"] = [str(w) for w in self.warnings]
        return out

    @classmethod
    def from_dict(cls, d: dict) -> FeatureScore:
        """Inverse of :meth:`to_dict`; keys added since a record was written take their defaults."""
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in d.items() if key in known})

    def statistic(self, name: str) -> tuple[float, list[float]]:
        """(value, bootstrap draws) of ``name``: "fid", "kid" (``kid_mean``), "precision" or "recall"."""
        table = {
            "fid": (self.fid, self.fid_draws_values),
            "kid": (self.kid_mean, self.kid_draws_values),
            "precision": (self.precision, self.precision_draws_values),
            "recall": (self.recall, self.recall_draws_values),
        }
        if name not in table:
            raise ConfigError(f"FeatureScore has no statistic {name!r}; use one of {', '.join(table)}")
        return table[name]

    def estimate(self, name: str) -> Estimate | None:
        """``name`` ("fid", "kid", "precision", "recall") with its bootstrap standard error; None without
        draws (a score made with ``fid_draws=0``, or read from an older record)."""
        value, draws = self.statistic(name)
        return Estimate.from_draws(value, draws) if len(draws) >= 2 else None

    def fid_estimate(self) -> Estimate:
        """FID with its bootstrap standard error, ``Estimate.from_draws(fid, fid_draws_values)``."""
        if len(self.fid_draws_values) < 2:
            raise ConfigError(
                f"FeatureScore.fid_estimate: FID has {len(self.fid_draws_values)} bootstrap draws, so no standard "
                "error; score with score_features(..., fid_draws=50) (a record from an older aediff has none)."
            )
        return Estimate.from_draws(self.fid, self.fid_draws_values)


def score_features(
    sample_feats: ArrayLike,
    reference_feats: ArrayLike,
    *,
    feature_extractor: str,
    reference: str,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    pr_k: int = 3,
    seed: int = 0,
    fid_draws: int = 50,
) -> FeatureScore:
    """FID, KID, precision and recall of ``sample_feats`` ``[N, D]`` against ``reference_feats`` ``[M, D]``.

    ``feature_extractor`` and ``reference`` are recorded verbatim in the returned :class:`FeatureScore`.
    FID gets a standard error from ``fid_draws`` bootstrap draws (:func:`fid_bootstrap`, seeded with
    ``seed``; 0 for none, else >= 2), and so do KID, precision and recall, from the same resamples
    (:func:`kid_bootstrap`, :func:`precision_recall_bootstrap`) on the equal-size sets precision and
    recall use. KID uses ``kid_subsets`` proper subsets of ``_kid_subset_size(kid_subset_size, N, M)`` rows
    drawn with ``seed``. Precision and recall compare
    equal-size sets: the larger set is subsampled without replacement (seeded) to ``min(N, M)`` rows; they
    use the ``pr_k``-th neighbour, lowered to ``min(N, M) - 1`` for tiny sets. The values used are recorded,
    and ``warnings`` names a set smaller than twice the feature dimension.
    """
    a = _as_float64(sample_feats, "score_features(sample_feats)")
    b = _as_float64(reference_feats, "score_features(reference_feats)")
    if fid_draws < 0 or fid_draws == 1:
        raise ConfigError(
            f"score_features: fid_draws must be 0 (no FID standard error) or >= 2, got {fid_draws}; use 50."
        )
    fid = frechet_distance(a, b)
    draws = fid_bootstrap(a, b, draws=fid_draws, seed=seed)
    kid_mean, kid_std = kernel_inception_distance(a, b, num_subsets=kid_subsets, subset_size=kid_subset_size, seed=seed)
    pr_size = min(a.shape[0], b.shape[0])
    # Precision and recall depend on the set sizes (a larger set has smaller k-NN balls that cover more
    # finely), so compare equal-size sets; subsampling the larger keeps every model's numbers comparable
    # at a given sample count.
    rng = _draw_rng(seed, _PR_STREAM, 0)
    pr_a = a if a.shape[0] == pr_size else a[np.sort(rng.choice(a.shape[0], pr_size, replace=False))]
    pr_b = b if b.shape[0] == pr_size else b[np.sort(rng.choice(b.shape[0], pr_size, replace=False))]
    k = max(1, min(pr_k, pr_size - 1))
    precision, recall = precision_recall(pr_a, pr_b, k=k)
    # On the equal-size sets too: the kernel matrices are (rows)^2 float64, and a 10,000-image reference split
    # would need 800 MB for one of them; KID's own subsets are no larger than these sets either.
    kid_draws = kid_bootstrap(pr_a, pr_b, draws=fid_draws, seed=seed) if fid_draws else np.empty(0)
    pr_draws = (
        precision_recall_bootstrap(pr_a, pr_b, k=k, draws=fid_draws, seed=seed)
        if fid_draws and pr_size > k + 1
        else (np.empty(0), np.empty(0))
    )
    warnings = [
        f"the {name} set has {count} feature vectors, fewer than twice the feature dimension ({a.shape[1]}): "
        "FID is dominated by estimation error; use more images or a smaller feature space"
        for name, count in (("sample", a.shape[0]), ("reference", b.shape[0]))
        if count < 2 * a.shape[1]
    ]
    return FeatureScore(
        fid=fid,
        kid_mean=kid_mean,
        kid_std=kid_std,
        feature_extractor=str(feature_extractor),
        num_samples=int(a.shape[0]),
        num_reference=int(b.shape[0]),
        reference=str(reference),
        precision=precision,
        recall=recall,
        pr_k=k,
        kid_subset_size=_kid_subset_size(kid_subset_size, a.shape[0], b.shape[0]),
        kid_subsets=int(kid_subsets),
        pr_set_size=int(pr_size),
        fid_se=float(draws.std(ddof=1)) if len(draws) > 1 else None,
        fid_draws_values=[float(v) for v in draws],
        warnings=warnings,
        kid_draws_values=[float(v) for v in kid_draws],
        precision_draws_values=[float(v) for v in pr_draws[0]],
        recall_draws_values=[float(v) for v in pr_draws[1]],
    )
