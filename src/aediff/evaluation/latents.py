"""The latent space of an autoencoder (AE, VAE, DAE): codes, 2-D maps, probes and interpolations.

A code is ``model.encode(x)`` flattened to a vector (a VAE's posterior mean; a spatial latent
[C, s, s] becomes C * s * s numbers). Probes measure how much of the label a code carries in a form
that simple classifiers can read: k nearest neighbours (local structure) and a linear classifier
(linear separability), both on standardized codes fitted on training codes only.
"""

from __future__ import annotations

import importlib.util
import warnings
from typing import Any

import numpy as np
import torch
from torch import nn

from aediff.errors import ConfigError
from aediff.evaluation.protocols import iterate_images, model_device, spread_indices
from aediff.evaluation.results import LatentHits, LatentProbes, NetworkFeatureProbes
from aediff.models.corruptions import Corruption

ArrayLike = np.ndarray | torch.Tensor


def _numpy(values: ArrayLike) -> np.ndarray:
    return values.detach().cpu().numpy() if torch.is_tensor(values) else np.asarray(values)


@torch.no_grad()
def network_codes(
    model: nn.Module,
    dataset: Any,
    level: str,
    sigma: float,
    limit: int | None = None,
    seed: int = 0,
    batch_size: int = 256,
) -> tuple[np.ndarray, np.ndarray]:
    """As ``latent_codes``, for a diffusion model's inner features (Capability.NETWORK_FEATURES): the pooled
    activations at ``level`` of ``limit`` images spread over ``dataset``, noised to ``sigma`` with noise from
    ``seed``: (codes [N, width] float32, labels [N] int64, -1 where unknown)."""
    model.eval()
    generator = torch.Generator(model_device(model)).manual_seed(seed)
    codes, labels = [], []
    for batch in iterate_images(dataset, batch_size, model_device(model), limit):
        x = batch["images"]
        codes.append(model.network_features(x, sigma, [level], generator)[level])
        labels.append(batch["labels"].cpu() if "labels" in batch else torch.full((len(x),), -1))
    return torch.cat(codes).numpy(), torch.cat(labels).long().numpy()


@torch.no_grad()
def latent_codes(
    model: nn.Module,
    dataset: Any,
    limit: int | None = None,
    corruption: str | Corruption | None = None,
    seed: int = 0,
    batch_size: int = 256,
    flatten: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Codes of ``limit`` images spread evenly over ``dataset`` (all when None): (codes [N, D] float32, or
    [N, *latent_shape] with ``flatten=False``; labels [N] int64).

    ``corruption`` (a spec like "gaussian:0.3", or a ``Corruption``) corrupts the inputs first, drawn
    from a generator seeded with ``seed``. Labels are -1 when the dataset has none.
    """
    if corruption is not None and isinstance(corruption, str):
        corruption = Corruption.parse(corruption)
    model.eval()
    device = model_device(model)
    generator = torch.Generator(device).manual_seed(seed)
    codes, labels = [], []
    for batch in iterate_images(dataset, batch_size, device, limit):
        x = batch["images"]
        if corruption is not None:
            x = corruption(x, generator)
        z = model.encode(x)
        codes.append((z.flatten(1) if flatten else z).float().cpu())
        labels.append(batch["labels"].cpu() if "labels" in batch else torch.full((len(x),), -1))
    return torch.cat(codes).numpy(), torch.cat(labels).long().numpy()


def umap_available() -> bool:
    """Whether umap-learn can be imported (``latent_map(method="umap")`` needs it)."""
    return importlib.util.find_spec("umap") is not None


def latent_map(codes: ArrayLike, method: str = "pca", seed: int = 0) -> np.ndarray:
    """2-D coordinates [N, 2] float32 of codes [N, D], for a scatter plot.

    method: "pca" (the two leading principal components; scikit-learn) or "umap" (McInnes et al. 2018;
    needs umap-learn, an optional dependency).
    """
    x = _numpy(codes).astype(np.float64).reshape(len(codes), -1)
    if method == "pca":
        from sklearn.decomposition import PCA

        if x.shape[1] < 2:  # a 1-d code: the second coordinate is 0
            x = np.concatenate([x, np.zeros((len(x), 2 - x.shape[1]))], axis=1)
        return PCA(n_components=2, random_state=seed).fit_transform(x).astype(np.float32)
    if method == "umap":
        if not umap_available():
            raise ConfigError(
                "latent_map(method='umap') needs umap-learn: `pip install umap-learn` (or use method='pca')"
            )
        import umap

        return umap.UMAP(n_components=2, random_state=seed).fit_transform(x).astype(np.float32)
    raise ConfigError(f"unknown latent map method {method!r}; use 'pca' or 'umap'")


def knn_correct(
    train_codes: ArrayLike, train_labels: ArrayLike, test_codes: ArrayLike, test_labels: ArrayLike, k: int = 5
) -> np.ndarray:
    """Whether a k-nearest-neighbour classifier (Euclidean, on codes standardized with the training codes'
    mean and std) fitted on the training codes labels each test code correctly: [N_test] bool."""
    from sklearn.neighbors import KNeighborsClassifier  # sklearn is imported when used: it takes ~1 s
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    probe = make_pipeline(StandardScaler(), KNeighborsClassifier(n_neighbors=min(k, len(train_codes))))
    probe.fit(_numpy(train_codes), _numpy(train_labels))
    return probe.predict(_numpy(test_codes)) == _numpy(test_labels)


def knn_accuracy(
    train_codes: ArrayLike, train_labels: ArrayLike, test_codes: ArrayLike, test_labels: ArrayLike, k: int = 5
) -> float:
    """Accuracy in [0, 1] of the k-NN classifier of ``knn_correct`` on the test codes."""
    return float(knn_correct(train_codes, train_labels, test_codes, test_labels, k).mean())


def _fit_linear_probe(train_codes: ArrayLike, train_labels: ArrayLike, seed: int = 0) -> Any:
    """Standardize, then multinomial logistic regression (L2, C = 1) fitted on the training codes."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, random_state=seed))
    with warnings.catch_warnings():
        # lbfgs may stop a little short of its tolerance on hard probes; the accuracy is what we report.
        warnings.simplefilter("ignore", ConvergenceWarning)
        probe.fit(_numpy(train_codes), _numpy(train_labels))
    return probe


def linear_probe_accuracy(
    train_codes: ArrayLike, train_labels: ArrayLike, test_codes: ArrayLike, test_labels: ArrayLike, seed: int = 0
) -> float:
    """Accuracy in [0, 1] on the test codes of a linear classifier (logistic regression on standardized
    codes) fitted on the training codes."""
    probe = _fit_linear_probe(train_codes, train_labels, seed)
    return float(probe.score(_numpy(test_codes), _numpy(test_labels)))


#: Noise levels of the robustness probe, fixed in advance and the same for every model (not any DAE's own).
PROBE_SIGMAS = (0.2, 0.4, 0.6)


def _labelled_codes(model: nn.Module, dataset: Any, limit: int, seed: int, corruption: str | None = None):
    codes, labels = latent_codes(model, dataset, limit, corruption=corruption, seed=seed)
    if (labels < 0).any():
        raise ConfigError(
            "latent probes need labelled data (e.g. digits, mnist5k, or folder:PATH with one sub-folder per class)"
        )
    return codes, labels


def latent_space_metrics(
    model: nn.Module,
    train: Any,
    test: Any,
    limit: int = 2000,
    noisy_sigmas: tuple[float, ...] = PROBE_SIGMAS,
    seed: int = 0,
    keep_per_image: bool = False,
) -> LatentProbes:
    """Probes of the codes of up to ``limit`` images of each split (both need labels).

    Fields: knn_accuracy (k = 5), linear_probe_accuracy, probe_accuracy_noisy ({sigma: accuracy} of the
    linear probe fitted on clean training codes, scored on the codes of test images with Gaussian noise of
    that sigma: how far corruption moves a code across class boundaries), latent_dim, num_train, num_test.
    keep_per_image: also ``per_image``: ``LatentHits`` (knn [N] bool, probe_noisy {sigma: [N] bool}; not JSON),
    for paired comparisons between models on the same test images.
    """
    train_codes, train_labels = _labelled_codes(model, train, limit, seed)
    test_codes, test_labels = _labelled_codes(model, test, limit, seed)
    probe = _fit_linear_probe(train_codes, train_labels, seed)
    knn = knn_correct(train_codes, train_labels, test_codes, test_labels, k=5)
    noisy = {}
    for sigma in noisy_sigmas:
        codes, _ = latent_codes(model, test, limit, corruption=f"gaussian:{sigma:g}", seed=seed)
        noisy[f"{sigma:g}"] = probe.predict(codes) == test_labels
    return LatentProbes(
        knn_accuracy=float(knn.mean()),
        linear_probe_accuracy=float(probe.score(test_codes, test_labels)),
        probe_accuracy_noisy={s: float(c.mean()) for s, c in noisy.items()},
        latent_dim=int(train_codes.shape[1]),
        num_train=len(train_codes),
        num_test=len(test_codes),
        per_image=LatentHits(knn, noisy) if keep_per_image else None,
    )


#: Noise levels tried for a diffusion model's features (chosen per model on a validation split): from barely
#: noisy to about the data's own scale, where the denoiser has to know the class to do its job.
FEATURE_SIGMAS = (0.1, 0.25, 0.5, 1.0, 2.0)
VALIDATION_EVERY = 5  # every fifth training image is held out to choose sigma


def network_feature_probes(
    model: nn.Module,
    train: Any,
    test: Any,
    level: str = "unet-mid",
    sigmas: tuple[float, ...] = FEATURE_SIGMAS,
    limit: int = 2000,
    seed: int = 0,
    choose_on: int | None = None,
) -> NetworkFeatureProbes:
    """How much of the label a diffusion model's inner features carry (both splits need labels): sigma is
    chosen by k-NN accuracy on every ``VALIDATION_EVERY``-th of ``choose_on`` training images (default
    ``limit``; fitted on the rest), then the probes are fitted on ``limit`` training images and scored on
    ``limit`` test images; the same for the network untrained (same config, initialised from ``seed``) at the
    chosen sigma."""

    def codes(net: nn.Module, split: Any, sigma: float, n: int = limit) -> tuple[np.ndarray, np.ndarray]:
        found, labels = network_codes(net, split, level, sigma, n, seed)
        if (labels < 0).any():
            raise ConfigError("feature probes need labelled data (e.g. digits or mnist5k)")
        return found, labels

    chosen_on = limit if choose_on is None else min(choose_on, limit)
    held = np.zeros(min(chosen_on, len(train)), dtype=bool)
    held[::VALIDATION_EVERY] = True
    validation, seen = {}, {}
    for sigma in sigmas:
        seen[sigma] = found, labels = codes(model, train, sigma, chosen_on)
        validation[f"{sigma:g}"] = knn_accuracy(found[~held], labels[~held], found[held], labels[held])
    best = max(sigmas, key=lambda s: validation[f"{s:g}"])  # ties: the first, the least noisy
    # the same images, sigma and noise: the validation pass's codes are the training codes when it saw them all
    train_codes, train_labels = seen[best] if chosen_on == limit else codes(model, train, best)
    test_codes, test_labels = codes(model, test, best)
    knn = knn_correct(train_codes, train_labels, test_codes, test_labels)
    probe = linear_probe_accuracy(train_codes, train_labels, test_codes, test_labels, seed)
    untrained = _untrained(model, seed)
    blank_train, _ = codes(untrained, train, best)
    blank_test, _ = codes(untrained, test, best)
    blank = knn_correct(blank_train, train_labels, blank_test, test_labels)
    return NetworkFeatureProbes(
        level, best, validation, float(knn.mean()), probe, float(blank.mean()), int(train_codes.shape[1]),
        len(train_codes), len(test_codes), knn, blank,
    )  # fmt: skip


def _untrained(model: nn.Module, seed: int) -> nn.Module:
    """The model with its denoising network built anew from the same config, initialised from ``seed`` and
    never trained (a latent diffusion model keeps its trained autoencoder: only the network is the control)."""
    import copy

    untrained = copy.deepcopy(model)
    network = model.denoiser.network
    torch.manual_seed(seed)
    untrained.denoiser.network = type(network)(copy.deepcopy(network.config)).to(model_device(model))
    return untrained.eval()


RAW_PIXELS = "raw pixels"  # knn_controls' name of the raw-pixel control


@torch.no_grad()
def knn_controls(
    train: Any, test: Any, dims: tuple[int, ...], limit: int = 2000, seed: int = 0
) -> dict[str, np.ndarray]:
    """k-NN (k = 5) correctness [N_test] bool of the trivial representations a learned latent space must
    beat, on the same images as ``latent_space_metrics``: "raw pixels" (all C * H * W numbers) and, for
    each d in ``dims``, "random projection <d>" (the pixels times a fixed Gaussian matrix [C*H*W, d] drawn
    from ``seed``: a code of the same size that nobody trained)."""
    images = {
        name: torch.cat([b["images"].flatten(1) for b in iterate_images(split, limit=limit)])
        for name, split in (("train", train), ("test", test))
    }
    labels = {
        name: split.batch(spread_indices(len(split), limit))["labels"].numpy()
        for name, split in (("train", train), ("test", test))
    }
    out = {RAW_PIXELS: knn_correct(images["train"], labels["train"], images["test"], labels["test"])}
    generator = torch.Generator().manual_seed(seed)
    for d in dims:
        projection = torch.randn(images["train"].shape[1], d, generator=generator)
        out[f"random projection {d}"] = knn_correct(
            images["train"] @ projection, labels["train"], images["test"] @ projection, labels["test"]
        )
    return out


def _interpolation_pairs(
    labels: torch.Tensor | None, n: int, pairs: int, generator: torch.Generator
) -> list[tuple[int, int]]:
    """``pairs`` (a, b) index pairs drawn at random, a != b, of different classes when labels allow."""
    chosen = []
    for _ in range(pairs):
        a = int(torch.randint(n, (1,), generator=generator))
        others = torch.arange(n) != a
        if labels is not None and (labels != labels[a]).any():
            others &= labels != labels[a]
        candidates = others.nonzero().flatten()
        b = int(candidates[torch.randint(len(candidates), (1,), generator=generator)])
        chosen.append((a, b))
    return chosen


@torch.no_grad()
def interpolation_grid(model: nn.Module, dataset: Any, pairs: int = 4, steps: int = 8, seed: int = 0) -> torch.Tensor:
    """Decoded straight-line paths between the codes of pairs of images, [pairs * steps, C, S, S] in [-1, 1].

    Rows in pair order: images k * steps ... (k + 1) * steps - 1 walk from decode(encode(a_k)) to
    decode(encode(b_k)) (show them with ``nrow=steps``). The pairs are drawn with ``seed``, the two images
    of a pair from different classes when the dataset has labels. Vector and spatial latents alike.
    """
    if len(dataset) < 2:
        raise ConfigError("interpolation needs at least two images")
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    labels = dataset.labels
    chosen = _interpolation_pairs(labels, len(dataset), pairs, generator)
    indices = torch.tensor([i for pair in chosen for i in pair])
    x = dataset.batch(indices)["images"].to(model_device(model))
    z = model.encode(x)
    z_a, z_b = z[0::2, None], z[1::2, None]  # [pairs, 1, *latent]
    t = torch.linspace(0, 1, steps, device=z.device).reshape(1, steps, *([1] * (z.dim() - 1)))
    path = (1 - t) * z_a + t * z_b  # [pairs, steps, *latent]
    return model.decode(path.flatten(0, 1)).clamp(-1, 1).cpu()
