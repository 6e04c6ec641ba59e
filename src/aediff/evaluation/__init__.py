"""Evaluation protocols: the metrics of ``aediff.metrics`` applied to models and datasets, one way each.

Every protocol takes a model, a dataset (``aediff.data.ImageDataset``) and a seed, works in batches on the
model's device, and returns what was measured and on what: a typed section of
``aediff.evaluation.results`` (``evaluate_model``'s pieces), or a JSON-able dict (the single protocols of
``protocols``, which the CLI prints as they are).

- :mod:`~aediff.evaluation.protocols`: reconstruction, denoising at one corruption, likelihoods (VAE,
  diffusion), a VQ-VAE's codebook usage, samples and their FID / KID / precision / recall, classifier accuracy;
  batching helpers.
- :mod:`~aediff.evaluation.denoising`: ``denoising_sweep`` over noise levels and masking rates.
- :mod:`~aediff.evaluation.latents`: codes, 2-D maps (PCA / UMAP), kNN and linear probes, interpolations.
- :mod:`~aediff.evaluation.spectra`: high-frequency share of images, Gaussian blur; a diffusion model's x0
  estimates by sigma.
- :mod:`~aediff.evaluation.judges`: the feature spaces samples are scored in (``judges_for`` a classifier) and
  ``sharpness_gap`` against the data.
- :mod:`~aediff.evaluation.diagnostics`: per-block gradient norms of the training loss.
- :mod:`~aediff.evaluation.speed`: sampling speed with network evaluations per image.
- :mod:`~aediff.evaluation.suite`: ``evaluate_model``, everything that applies to a model (`aediff eval`), and
  the protocols that need judges beside a model: conditional accuracy, rFID of an autoencoder's
  reconstructions (``reconstruction_fid``).
- :mod:`~aediff.evaluation.results`: the typed results (``ModelEvaluation``, the comparison's sections) and
  their metrics.json form, with its format version.
"""

from aediff.evaluation.denoising import denoising_sweep
from aediff.evaluation.diagnostics import gradient_norms, network_blocks
from aediff.evaluation.judges import Judge, judges_for, sharpness_gap
from aediff.evaluation.latents import (
    interpolation_grid,
    knn_accuracy,
    latent_codes,
    latent_map,
    latent_space_metrics,
    linear_probe_accuracy,
    umap_available,
)
from aediff.evaluation.protocols import (
    class_frequency_labels,
    classifier_accuracy,
    codebook_metrics,
    denoising_metrics,
    dequantize,
    diffusion_nll,
    discretized_gaussian_log_likelihood,
    generation_score,
    iterate_images,
    model_device,
    reconstructed_images,
    reconstruction_metrics,
    sample_classes,
    sample_images,
    sampling_trajectory,
    spread_indices,
    vae_likelihood,
)
from aediff.evaluation.results import FORMAT_VERSION, ModelEvaluation, json_safe
from aediff.evaluation.spectra import gaussian_blur, high_frequency_share, predicted_x0_sweep, radial_frequency
from aediff.evaluation.speed import sampling_speed
from aediff.evaluation.suite import conditional_accuracy, evaluate_model, predicted_classes, reconstruction_fid

__all__ = [
    "FORMAT_VERSION",
    "ModelEvaluation",
    "Judge",
    "class_frequency_labels",
    "classifier_accuracy",
    "codebook_metrics",
    "conditional_accuracy",
    "denoising_metrics",
    "denoising_sweep",
    "dequantize",
    "diffusion_nll",
    "discretized_gaussian_log_likelihood",
    "evaluate_model",
    "gaussian_blur",
    "generation_score",
    "gradient_norms",
    "predicted_classes",
    "high_frequency_share",
    "interpolation_grid",
    "iterate_images",
    "judges_for",
    "json_safe",
    "knn_accuracy",
    "latent_codes",
    "latent_map",
    "latent_space_metrics",
    "linear_probe_accuracy",
    "model_device",
    "network_blocks",
    "predicted_x0_sweep",
    "radial_frequency",
    "reconstructed_images",
    "reconstruction_fid",
    "reconstruction_metrics",
    "sample_classes",
    "sample_images",
    "sampling_speed",
    "sampling_trajectory",
    "sharpness_gap",
    "spread_indices",
    "umap_available",
    "vae_likelihood",
]
