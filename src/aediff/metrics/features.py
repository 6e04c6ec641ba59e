"""Feature-space sample quality: Frechet distance (FID), kernel distance (KID), precision and recall.

Both metrics compare two sets of feature vectors, ``[N, D]`` and ``[M, D]`` (torch tensors or numpy arrays),
typically the pool features of a pretrained network applied to generated samples and to reference data.
aediff uses Inception-v3 pool features (the published FID/KID convention) when its weights are on disk
(:func:`inception_extractor`) and otherwise the penultimate features of the dataset classifier trained by
``aediff train classifier``. Values computed with different extractors or reference sets are not
comparable, which is why :class:`FeatureScore` records both.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from aediff.errors import ConfigError

__all__ = [
    "INCEPTION_WEIGHTS_ENV",
    "INCEPTION_WEIGHTS_FILENAME",
    "FeatureScore",
    "default_inception_weights_path",
    "extract_features",
    "frechet_distance",
    "inception_extractor",
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
    root uses the eigenvalue identity ``Tr (S_a S_b)^{1/2} = sum_i sqrt(lambda_i(S_a^{1/2} S_b S_a^{1/2}))``
    (``S_a S_b`` and the symmetric PSD matrix ``S_a^{1/2} S_b S_a^{1/2}`` share their eigenvalues), so no
    non-symmetric ``sqrtm``, no complex round-off and no eps-offset retry are needed, and singular
    covariances (``N <= D``) are handled. Tiny negative results from round-off are clipped to 0.

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
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    cov_a = np.atleast_2d(np.cov(a, rowvar=False))
    cov_b = np.atleast_2d(np.cov(b, rowvar=False))
    root_a = _psd_sqrt(cov_a)
    middle = root_a @ cov_b @ root_a
    middle = 0.5 * (middle + middle.T)
    tr_covmean = float(np.sqrt(np.clip(np.linalg.eigvalsh(middle), 0.0, None)).sum())
    diff = mu_a - mu_b
    value = float(diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2.0 * tr_covmean)
    return max(value, 0.0)


def _unbiased_mmd2(x: Tensor, y: Tensor, degree: int, gamma: float, coef0: float) -> float:
    m = x.shape[0]
    k_xx = (x @ x.T * gamma + coef0) ** degree
    k_yy = (y @ y.T * gamma + coef0) ** degree
    k_xy = (x @ y.T * gamma + coef0) ** degree
    sum_xx = k_xx.sum() - k_xx.diagonal().sum()
    sum_yy = k_yy.sum() - k_yy.diagonal().sum()
    return float((sum_xx + sum_yy) / (m * (m - 1)) - 2.0 * k_xy.sum() / (m * m))


def kernel_inception_distance(
    feats_a: ArrayLike,
    feats_b: ArrayLike,
    num_subsets: int = 100,
    subset_size: int = 1000,
    degree: int = 3,
    gamma: float | None = None,
    coef0: float = 1.0,
    seed: int = 0,
) -> tuple[float, float]:
    """Kernel distance (KID when features are Inception's): unbiased MMD^2 with a polynomial kernel.

    Binkowski, Sutherland, Arbel & Gretton, "Demystifying MMD GANs", ICLR 2018. The kernel is
    ``k(u, v) = (gamma * <u, v> + coef0) ** degree`` with ``gamma = 1 / D`` by default (the paper's
    cubic kernel for ``degree=3, coef0=1``). For each of ``num_subsets`` subsets, ``s`` rows are drawn
    without replacement from each set and the unbiased estimator

        MMD^2_u = sum_{i != j} k(a_i, a_j) / (s (s-1)) + sum_{i != j} k(b_i, b_j) / (s (s-1))
                  - 2 sum_{i, j} k(a_i, b_j) / s^2

    is evaluated (it can be slightly negative when the distributions match). Computed in float64 on CPU.

    ``s = min(subset_size, N, M)`` (torchmetrics raises instead of clipping). Subsets are drawn with
    ``torch.randperm`` from a generator seeded with ``seed``, first from ``feats_b`` then from
    ``feats_a`` in every round; this is the order torchmetrics' ``KernelInceptionDistance`` uses for
    (real, fake) with the global RNG, so with ``feats_b`` = real, ``feats_a`` = fake and
    ``torch.manual_seed(seed)`` both draw the same subsets.

    Args:
        feats_a: ``[N, D]`` features (e.g. generated samples).
        feats_b: ``[M, D]`` features (e.g. reference data).
        num_subsets: number of random subsets (100 in the paper / torch-fidelity).
        subset_size: rows per subset (1000 in the paper), clipped to ``min(N, M)``; must end up >= 2.
        degree, gamma, coef0: polynomial kernel parameters; ``gamma=None`` means ``1 / D``.
        seed: seed for the subset draws (results are deterministic given the seed).

    Returns:
        ``(mean, std)`` of MMD^2 over the subsets; std is the population std (``ddof=0``), as in
        torchmetrics and torch-fidelity. KID is conventionally reported x1000 in papers; this is not.
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
    size = min(subset_size, n, m)
    gamma_value = 1.0 / dim if gamma is None else float(gamma)
    a = torch.from_numpy(a_np)
    b = torch.from_numpy(b_np)
    gen = torch.Generator().manual_seed(int(seed))
    scores = np.empty(num_subsets, dtype=np.float64)
    for i in range(num_subsets):
        sub_b = b[torch.randperm(m, generator=gen)[:size]]
        sub_a = a[torch.randperm(n, generator=gen)[:size]]
        scores[i] = _unbiased_mmd2(sub_a, sub_b, degree, gamma_value, coef0)
    return float(scores.mean()), float(scores.std())


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

    def to_dict(self) -> dict[str, float | int | str]:
        """Plain JSON-serialisable dict (builtin floats/ints/strs only)."""
        out = asdict(self)
        for key in ("fid", "kid_mean", "kid_std", "precision", "recall"):
            out[key] = float(out[key])
        for key in ("num_samples", "num_reference", "pr_k"):
            out[key] = int(out[key])
        return out


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
) -> FeatureScore:
    """FID, KID, precision and recall of ``sample_feats`` ``[N, D]`` against ``reference_feats`` ``[M, D]``.

    ``feature_extractor`` and ``reference`` are recorded verbatim in the returned :class:`FeatureScore`.
    KID uses ``kid_subsets`` subsets of ``min(kid_subset_size, N, M)`` rows drawn with ``seed``.
    Precision and recall use the ``pr_k``-th neighbour, lowered to ``min(N, M) - 1`` for tiny sets (the
    value used is recorded).
    """
    a = _as_float64(sample_feats, "score_features(sample_feats)")
    b = _as_float64(reference_feats, "score_features(reference_feats)")
    fid = frechet_distance(a, b)
    kid_mean, kid_std = kernel_inception_distance(a, b, num_subsets=kid_subsets, subset_size=kid_subset_size, seed=seed)
    k = max(1, min(pr_k, a.shape[0] - 1, b.shape[0] - 1))
    precision, recall = precision_recall(a, b, k=k)
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
    )


def _module_device(module: torch.nn.Module) -> torch.device | None:
    for tensor in module.parameters():
        return tensor.device
    for tensor in module.buffers():
        return tensor.device
    return None


def extract_features(
    extractor: Callable[[Tensor], Tensor],
    images: Tensor,
    batch_size: int = 256,
) -> Tensor:
    """Run ``extractor`` over ``images`` in batches without gradients.

    Args:
        extractor: maps an image batch ``[B, C, H, W]`` in ``[-1, 1]`` to features ``[B, D]`` (outputs
            with more dimensions are flattened to ``[B, -1]``). If it is an ``nn.Module``, each batch is
            moved to the device of its parameters and the module is put in eval mode for the call (its
            previous mode is restored afterwards); a plain callable gets batches on ``images.device`` and
            must move them itself (as :func:`inception_extractor`'s callable does).
        images: ``[N, C, H, W]`` floating point images in ``[-1, 1]``.
        batch_size: images per forward pass.

    Returns:
        ``[N, D]`` float32 features on the CPU.
    """
    if not isinstance(images, Tensor) or images.ndim != 4:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ConfigError(f"extract_features: expected images [N, C, H, W], got {shape}.")
    if images.shape[0] == 0:
        raise ConfigError("extract_features: no images given; pass at least one image.")
    if batch_size < 1:
        raise ConfigError(f"extract_features: batch_size must be >= 1, got {batch_size}; use 256.")
    device = None
    was_training = False
    if isinstance(extractor, torch.nn.Module):
        device = _module_device(extractor)
        was_training = extractor.training
        extractor.eval()
    chunks = []
    try:
        with torch.no_grad():
            for start in range(0, images.shape[0], batch_size):
                batch = images[start : start + batch_size]
                if device is not None:
                    batch = batch.to(device)
                out = extractor(batch)
                if not isinstance(out, Tensor) or out.shape[0] != batch.shape[0]:
                    raise ConfigError(
                        "extract_features: the extractor must return a tensor with one row per image, got "
                        f"{type(out).__name__} {tuple(getattr(out, 'shape', ()))} for a batch of "
                        f"{batch.shape[0]}."
                    )
                chunks.append(out.reshape(out.shape[0], -1).to("cpu", torch.float32))
    finally:
        if was_training:
            extractor.train()
    return torch.cat(chunks, dim=0)


# --- Inception-v3 through torch-fidelity --------------------------------------------------------------

#: File name torch-fidelity (>= 0.2) downloads its FID Inception-v3 weights to, under
#: ``torch.hub.get_dir()/checkpoints/`` (``load_state_dict_from_url`` of URL_INCEPTION_V3 in
#: ``torch_fidelity/feature_extractor_inceptionv3.py``).
INCEPTION_WEIGHTS_FILENAME = "weights-inception-2015-12-05-6726825d.pth"
#: Environment variable that may point at the weights file explicitly (e.g. copied from another machine).
INCEPTION_WEIGHTS_ENV = "AEDIFF_INCEPTION_WEIGHTS"


def default_inception_weights_path() -> Path:
    """Where torch-fidelity caches its Inception weights: ``$TORCH_HOME/hub/checkpoints/<file>``.

    ``torch.hub.get_dir()`` honours ``torch.hub.set_dir``, ``$TORCH_HOME`` and ``$XDG_CACHE_HOME``
    (default ``~/.cache/torch/hub``).
    """
    return Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_WEIGHTS_FILENAME


class _InceptionFeatures:
    """Callable: images ``[N, 1|3, H, W]`` in ``[-1, 1]`` -> Inception-v3 pool features ``[N, 2048]``."""

    name = "inception-v3-compat"

    def __init__(self, model: torch.nn.Module, device: torch.device) -> None:
        self.model = model
        self.device = device

    def __call__(self, images: Tensor) -> Tensor:
        if images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ConfigError(f"inception_extractor: expected images [N, 1 or 3, H, W], got {tuple(images.shape)}.")
        # torch-fidelity expects uint8 RGB of any size; it resizes to 299x299 itself with TF1-compatible
        # bilinear interpolation and normalises (x - 128) / 128 internally.
        pixels = ((images.detach().float().clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8)
        if pixels.shape[1] == 1:
            pixels = pixels.repeat(1, 3, 1, 1)
        with torch.no_grad():
            (feats,) = self.model(pixels.to(self.device))
        return feats.float()


def inception_extractor(
    device: str | torch.device | None = None,
    weights_path: str | os.PathLike[str] | None = None,
) -> Callable[[Tensor], Tensor]:
    """Inception-v3 pool (2048-d) features as used for published FID/KID, via torch-fidelity.

    Never downloads anything. The weights file is looked up at ``weights_path``, else
    ``$AEDIFF_INCEPTION_WEIGHTS``, else torch-fidelity's own cache
    (:func:`default_inception_weights_path`).

    Args:
        device: where to run the network (default: CUDA if available, else CPU).
        weights_path: explicit path to ``weights-inception-2015-12-05-6726825d.pth``.

    Returns:
        A callable mapping images ``[N, 1|3, H, W]`` in ``[-1, 1]`` (any size; grey images are repeated
        to 3 channels, pixels are quantised to uint8 and torch-fidelity resizes to 299x299) to float32
        features ``[N, 2048]`` on ``device``; its ``name`` attribute is ``"inception-v3-compat"``.
        Use it with :func:`extract_features`.

    Raises:
        ConfigError: torch-fidelity is not installed or the weights file is not on disk.
    """
    if weights_path is not None:
        path = Path(weights_path).expanduser()
    elif os.environ.get(INCEPTION_WEIGHTS_ENV):
        path = Path(os.environ[INCEPTION_WEIGHTS_ENV]).expanduser()
    else:
        path = default_inception_weights_path()
    try:
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    except ImportError:
        missing = "torch-fidelity is not installed"
    else:
        missing = "" if path.is_file() else f"the Inception-v3 weights are not on disk (looked for {path})"
    if missing:
        raise ConfigError(
            f"Inception features are unavailable: {missing}. FID/KID are computed with the dataset "
            "classifier's features instead (train it with `aediff train classifier`); those numbers are "
            "not comparable with published Inception FIDs. To use Inception, on a machine with internet run "
            "`pip install aediff[inception]` and then once "
            '`python -c "from torch_fidelity.feature_extractor_inceptionv3 import '
            "FeatureExtractorInceptionV3 as F; F('inception-v3-compat', ['2048'])\"` to download "
            f"{INCEPTION_WEIGHTS_FILENAME} into {default_inception_weights_path().parent}; or copy that file "
            f"to this machine and point ${INCEPTION_WEIGHTS_ENV} at it."
        )
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    model = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(path))
    model = model.to(device).eval()
    return _InceptionFeatures(model, device)
