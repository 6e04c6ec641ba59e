"""Evaluation metrics: per-image reconstruction quality, feature-space sample quality, likelihoods.

- :mod:`aediff.metrics.image`: ``mse``, ``psnr`` (per image, images ``[N, C, H, W]`` in [-1, 1]) and
  ``ssim`` (per image, Wang et al.'s convention: images in [0, 1], convert with ``((x + 1) / 2).clamp(0, 1)``).
- :mod:`aediff.metrics.distances`: ``frechet_distance`` (FID) and ``fid_bootstrap`` (its bootstrap draws),
  ``kernel_inception_distance`` (KID), ``precision_recall`` (improved precision and recall),
  ``score_features`` / ``FeatureScore``.
- :mod:`aediff.metrics.extractors`: ``extract_features``, ``inception_extractor`` (the features those compare).
- :mod:`aediff.metrics.stats`: ``Estimate`` (a value with its standard error) and its constructors.
- :mod:`aediff.metrics.likelihood`: ``bits_per_dim``, ``continuous_nll_to_discrete_bpd``,
  ``dequantization_offset_bits``, ``logmeanexp``.
- :mod:`aediff.metrics.codebook`: ``codebook_usage`` and ``codebook_perplexity`` of a vector quantiser's code
  counts.
"""

from aediff.metrics.codebook import codebook_perplexity, codebook_usage
from aediff.metrics.distances import (
    FeatureScore,
    fid_bootstrap,
    frechet_distance,
    kernel_inception_distance,
    kid_bootstrap,
    precision_recall,
    precision_recall_bootstrap,
    score_features,
)
from aediff.metrics.extractors import (
    INCEPTION_WEIGHTS_ENV,
    INCEPTION_WEIGHTS_FILENAME,
    default_inception_weights_path,
    extract_features,
    inception_extractor,
)
from aediff.metrics.image import mse, psnr, region_psnr, ssim
from aediff.metrics.likelihood import (
    bits_per_dim,
    continuous_nll_to_discrete_bpd,
    dequantization_offset_bits,
    logmeanexp,
)

__all__ = [
    "INCEPTION_WEIGHTS_ENV",
    "INCEPTION_WEIGHTS_FILENAME",
    "FeatureScore",
    "bits_per_dim",
    "codebook_perplexity",
    "codebook_usage",
    "continuous_nll_to_discrete_bpd",
    "default_inception_weights_path",
    "dequantization_offset_bits",
    "extract_features",
    "fid_bootstrap",
    "kid_bootstrap",
    "precision_recall_bootstrap",
    "frechet_distance",
    "inception_extractor",
    "kernel_inception_distance",
    "logmeanexp",
    "mse",
    "precision_recall",
    "psnr",
    "region_psnr",
    "score_features",
    "ssim",
]
