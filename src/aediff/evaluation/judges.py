"""Judges: the feature spaces generated samples are scored in (FID / KID / precision / recall), and a
sharpness statistic against the data.

A classifier's penultimate features are trained only to tell classes apart, so they are largely blind to
blur and stroke quality: the blurry, class-typical samples of a small autoencoder land close to the data
there. The "classifier-layers" judge adds statistics of the classifier's early layers
(``Classifier.layer_features``), which carry the edge and contrast energy that blur removes, and
``sharpness_gap`` compares the images' high-frequency share of spectral power with the data's directly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch import Tensor

from aediff.errors import ConfigError
from aediff.evaluation.spectra import high_frequency_share
from aediff.metrics.stats import Estimate
from aediff.models import Capability, Model

__all__ = ["Judge", "judges_for", "sharpness_gap"]


@dataclass(frozen=True)
class Judge:
    """A feature space samples are scored in.

    name: short key for records and tables ("classifier", "classifier-layers"); features: images
    [N, C, H, W] in [-1, 1] -> features [N, D] (on the judge model's device: ``generation_score`` moves
    the images there); description: one sentence saying what the features see.
    """

    name: str
    features: Callable[[Tensor], Tensor]
    description: str
    # What the judge has been shown to see on controls (benchmarks/results/judges.md): "class content" (shuffled
    # labels, a 4-d AE's class-typical samples), "image quality" (blurred real images). A claim about a property
    # is voted on only by the judges that see it; the others report (aediff.reports.verdicts.consensus).
    sees: frozenset[str] = frozenset({"class content", "image quality"})
    # id(dataset) -> (dataset, its features): a comparison scores ~60 sample sets against one test split, whose
    # features need computing once per judge. The dataset is kept so that its id cannot be reused.
    _reference: dict[int, tuple[Any, Tensor]] = field(default_factory=dict, compare=False, repr=False)

    def reference_features(self, dataset: Any) -> Tensor:
        """Features [M, D] (CPU float32) of every image of ``dataset`` (an ``ImageDataset``), computed on the
        first call for that dataset object and kept."""
        from aediff.evaluation.protocols import dataset_features  # protocols imports judges' users

        if id(dataset) not in self._reference:
            self._reference[id(dataset)] = (dataset, dataset_features(self.features, dataset))
        return self._reference[id(dataset)][1]


def judges_for(classifier: Model) -> list[Judge]:
    """The judges a trained classifier provides: "classifier" (its penultimate features, [N, feature_dim])
    and "classifier-layers" (``layer_features``, [N, layer_feature_dim]: the log gradient energy of its early
    feature maps plus the penultimate features, which sees blur), in that order."""
    if not classifier.can(Capability.CLASSIFY):
        raise ConfigError(
            f"judges_for needs a trained classifier (family 'classifier'), got a {classifier.family!r} model; "
            "train one with `aediff train classifier --data DATA` and pass its run's model"
        )
    return [
        Judge(
            "classifier",
            classifier.features,
            f"the classifier's penultimate features ({classifier.feature_dim}-d): class content, largely blind to blur",
            # blur of sigma 1 moved its FID of real images by 0.28 [-0.31, 0.87], inside its noise; the layers
            # judge's by 18.19 [17.34, 19.05] (benchmarks/results/judges.md)
            sees=frozenset({"class content"}),
        ),
        Judge(
            "classifier-layers",
            classifier.layer_features,
            f"log RMS spatial gradient of each channel of the classifier's two full-resolution feature maps plus "
            f"its penultimate features ({classifier.layer_feature_dim}-d): also sees blur and stroke contrast",
        ),
    ]


def sharpness_gap(
    images: Tensor, reference_images: Tensor, cutoff: float = 0.5, draws: int = 200, seed: int = 0
) -> Estimate:
    """Relative difference between the mean high-frequency share of ``images`` and of ``reference_images``:
    ``mean(hf(images)) / mean(hf(reference)) - 1``, with a bootstrap standard error.

    images: [N, C, H, W]; reference_images: [M, C, H, W] of the same H, W (any common range, e.g. [-1, 1]);
    hf is ``high_frequency_share`` (share of each image's spectral power above ``cutoff`` x Nyquist).
    0 = as sharp as the data, negative = blurrier (-1 = no power above the cutoff at all), positive = more
    high-frequency power than the data (noise, ringing). The standard error comes from ``draws`` bootstrap
    resamples of both sets (with replacement, from ``seed``): a ratio of means has no simple per-image form.
    """
    if images.dim() != 4 or reference_images.dim() != 4 or images.shape[-2:] != reference_images.shape[-2:]:
        raise ConfigError(
            f"sharpness_gap compares images [N, C, H, W] of one size, got {tuple(images.shape)} and "
            f"{tuple(reference_images.shape)}; resize one set to the other's resolution first"
        )
    if len(images) < 2 or len(reference_images) < 2:
        raise ConfigError(
            f"sharpness_gap needs at least 2 images in each set, got {len(images)} and {len(reference_images)}"
        )
    if draws < 2:
        raise ConfigError(f"sharpness_gap: draws must be >= 2 for a standard error, got {draws}; use 200")
    hf = high_frequency_share(images, cutoff).double().numpy()
    hf_ref = high_frequency_share(reference_images, cutoff).double().numpy()
    if hf_ref.mean() <= 0:
        raise ConfigError("sharpness_gap: the reference images have no spectral power (all constant); pass real images")
    point = hf.mean() / hf_ref.mean() - 1.0
    rng = np.random.default_rng(seed)
    boot_a = hf[rng.integers(0, len(hf), size=(draws, len(hf)))].mean(axis=1)
    boot_b = hf_ref[rng.integers(0, len(hf_ref), size=(draws, len(hf_ref)))].mean(axis=1)
    return Estimate.from_draws(float(point), boot_a / boot_b - 1.0)
