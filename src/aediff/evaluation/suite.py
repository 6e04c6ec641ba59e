"""One call that runs every evaluation that applies to a model's family (what `aediff eval` prints)."""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch
from torch import nn

from aediff.errors import AediffError
from aediff.evaluation.denoising import denoising_sweep
from aediff.evaluation.latents import latent_space_metrics
from aediff.evaluation.protocols import (
    classifier_accuracy,
    diffusion_nll,
    generation_score,
    model_device,
    reconstruction_metrics,
    sample_images,
    vae_likelihood,
)
from aediff.evaluation.speed import sampling_speed, training_speed
from aediff.models.diffusion import DiffusionModel
from aediff.models.latent_diffusion import LatentDiffusionModel

AUTOENCODER_FAMILIES = ("ae", "vae", "dae")


def json_safe(value: Any) -> Any:
    """``value`` with numpy / torch scalars as Python numbers, tuples as lists, and every non-finite
    float replaced by None (strict JSON has no NaN or infinity)."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _feature_extractor_name(classifier: nn.Module) -> str:
    run_dir = getattr(classifier, "run_dir", None)
    return f"classifier:{run_dir}" if run_dir is not None else f"classifier:{type(classifier).__name__}"


@torch.no_grad()
def predicted_classes(classifier: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The classifier's top class [N] (int64, CPU) for images [N, C, H, W] in [-1, 1]."""
    classifier.eval()
    return torch.cat([classifier.logits(chunk.to(model_device(classifier))).argmax(1).cpu()
                      for chunk in images.split(256)])


@torch.no_grad()
def conditional_accuracy(model: nn.Module, classifier: nn.Module, per_class: int = 10, seed: int = 0,
                         **options: Any) -> dict[str, Any]:
    """A class-conditioned model's samples, ``per_class`` of each class, classified by ``classifier``:
    the share labelled as the class they were drawn for. ``options`` go to the sampler (guidance...)."""
    labels = torch.arange(model.config.num_classes).repeat_interleave(per_class)
    images = sample_images(model, len(labels), seed, class_labels=labels, **options)
    return {"accuracy": float((predicted_classes(classifier, images) == labels).float().mean()), "per_class": per_class,
            "num_classes": model.config.num_classes, "guidance": options.get("guidance", model.config.guidance)}


def evaluate_model(model: nn.Module, train: Any, test: Any, *, classifier: nn.Module | None = None,
                   samples: int = 1000, seed: int = 0, limit: int | None = None,
                   sample_options: dict[str, Any] | None = None, test_split: str = "test",
                   denoising_steps: tuple[int, ...] = (1,), inception: Any = None) -> dict[str, Any]:
    """Every evaluation that applies to ``model``'s family, as one JSON-able dict of finite numbers.

    train, test: ``aediff.data.ImageDataset`` splits (train feeds the latent probes); classifier: a trained
    ``classifier`` model whose ``features`` are the feature space of FID / KID / precision / recall and
    whose ``logits`` judge class-conditioned samples (without one, those sections are left out);
    samples: how many samples are scored; limit: test images per protocol (reconstruction, denoising,
    likelihood; the latent probes use at least 2,000 per split); sample_options: passed to the
    sampler (sampler, steps, guidance...); test_split: the name recorded for the reference split.

    Sections (present when they apply): parameters, reconstruction and latent_space (AE / VAE / DAE),
    denoising (rows of ``denoising_sweep``), likelihood (VAE: ELBO / IWAE; pixel diffusion: the
    variational bound), generation (with a classifier), conditional (class-conditioned diffusion, with a
    classifier), classification (a classifier), sampling_speed, training_speed (a loaded run), seconds.
    A protocol that cannot run on this model or data (e.g. probes on unlabelled data) is recorded under
    "skipped" with the reason.
    """
    started = time.perf_counter()
    options = dict(sample_options or {})
    family = getattr(model, "family", type(model).__name__)
    is_diffusion = isinstance(model, DiffusionModel)
    is_pixel_diffusion = is_diffusion and not isinstance(model, LatentDiffusionModel)
    result: dict[str, Any] = {
        "family": family,
        "parameters": sum(p.numel() for p in model.parameters()),
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "data": {"reference": f"{test.name}:{test_split}", "num_test": len(test), "num_train": len(train)},
        "settings": {"samples": samples, "seed": seed, "limit": limit,
                     "sample_options": {k: v for k, v in options.items() if isinstance(v, (bool, int, float, str))}},
    }
    skipped: dict[str, str] = {}

    def attempt(section: str, run: Any) -> None:
        try:
            result[section] = run()
        except AediffError as exc:  # a user-level reason (no labels, no fitted prior...): say so, go on
            skipped[section] = str(exc)

    if family == "classifier":
        attempt("classification", lambda: {"accuracy": classifier_accuracy(model, test)})
        result["seconds"] = time.perf_counter() - started
        return json_safe({**result, "skipped": skipped})

    if family in AUTOENCODER_FAMILIES:
        attempt("reconstruction", lambda: reconstruction_metrics(model, test, limit=limit))
    if isinstance(model, LatentDiffusionModel):
        skipped["denoising"] = "a latent diffusion model removes noise from latents, not from pixels"
    else:
        attempt("denoising", lambda: denoising_sweep(model, test, seed=seed, limit=limit, steps=denoising_steps))
    if hasattr(model, "iwae_log_likelihood"):
        attempt("likelihood", lambda: vae_likelihood(model, test, seed=seed, limit=limit))
    elif is_pixel_diffusion:
        attempt("likelihood", lambda: diffusion_nll(model, test, seed=seed, limit=limit))
    if family in AUTOENCODER_FAMILIES:
        # probes need a few thousand codes to be stable, and encoding is cheap: at least 2,000 per split
        attempt("latent_space", lambda: latent_space_metrics(model, train, test, limit=max(limit or 0, 2000),
                                                             seed=seed))

    conditioned_on_class = is_diffusion and model.config.condition == "class"
    if classifier is not None:
        def generation() -> dict[str, Any]:
            generation_options = dict(options)
            if conditioned_on_class and "class_labels" not in generation_options:
                # every class equally often, like the data (an unconditional draw would be the null class)
                generation_options["class_labels"] = torch.arange(samples) % model.config.num_classes
            images = sample_images(model, samples, seed, **generation_options)
            reference = f"{test.name}:{test_split}"
            if inception is not None:
                result["generation_inception"] = generation_score(
                    images, inception, test, feature_extractor=inception.name, reference_name=reference,
                    seed=seed).to_dict()
            score = generation_score(images, classifier.features, test, feature_extractor=_feature_extractor_name(
                classifier), reference_name=reference, seed=seed)
            if conditioned_on_class and "class_labels" not in options:
                condition = "classes cycled"
            elif options.get("class_labels") is not None or options.get("prompts") is not None:
                condition = "as given"
            else:
                condition = "null condition (unconditional)" if is_diffusion and model.config.condition != "none" \
                    else "none"
            return {**score.to_dict(), "condition": condition}

        attempt("generation", generation)
        if conditioned_on_class:
            guidance = options.get("guidance", 1.0)
            rest = {k: v for k, v in options.items() if k not in ("guidance", "class_labels", "prompts")}
            attempt("conditional", lambda: conditional_accuracy(model, classifier, 10, seed, guidance=guidance,
                                                                **rest))
    else:
        skipped["generation"] = "no classifier given (its features are the feature space of FID / KID)"

    speed_options = {k: v for k, v in options.items() if k not in ("class_labels", "prompts")}
    attempt("sampling_speed", lambda: sampling_speed(model, n=max(1, min(64, samples)), seed=seed, **speed_options))
    if getattr(model, "run_dir", None) is not None:
        attempt("training_speed", lambda: training_speed(model.run_dir))
    result["skipped"] = skipped
    result["seconds"] = time.perf_counter() - started
    return json_safe(result)
