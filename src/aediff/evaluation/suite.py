"""One call that runs every evaluation that applies to a model (what `aediff eval` prints), chosen by the
model's declared capabilities."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from aediff.diffusion.samplers import SamplerOptions
from aediff.errors import AediffError
from aediff.evaluation.denoising import denoising_sweep
from aediff.evaluation.judges import Judge, judges_for
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
from aediff.evaluation.speed import sampling_speed
from aediff.models import Capability, Condition, Model
from aediff.runs import Run


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


@torch.no_grad()
def predicted_classes(classifier: Model, images: torch.Tensor) -> torch.Tensor:
    """The classifier's top class [N] (int64, CPU) for images [N, C, H, W] in [-1, 1]."""
    classifier.eval()
    return torch.cat(
        [classifier.logits(chunk.to(model_device(classifier))).argmax(1).cpu() for chunk in images.split(256)]
    )


@torch.no_grad()
def conditional_accuracy(
    model: Model,
    classifier: Model,
    per_class: int = 10,
    seed: int = 0,
    guidance: float | None = None,
    options: SamplerOptions | None = None,
) -> dict[str, Any]:
    """A class-conditioned model's samples, ``per_class`` of each class, classified by ``classifier``:
    the share labelled as the class they were drawn for."""
    model.require(Capability.CLASS_CONDITION, "conditional accuracy")
    labels = torch.arange(model.num_classes).repeat_interleave(per_class)
    images = sample_images(model, len(labels), seed, Condition(class_labels=labels, guidance=guidance), options)
    return {
        "accuracy": float((predicted_classes(classifier, images) == labels).float().mean()),
        "per_class": per_class,
        "num_classes": model.num_classes,
        "guidance": guidance if guidance is not None else model.default_guidance,
    }


def evaluate_model(
    subject: Model | Run,
    train: Any,
    test: Any,
    *,
    classifier: Model | Run | None = None,
    samples: int = 1000,
    seed: int = 0,
    limit: int | None = None,
    condition: Condition | None = None,
    options: SamplerOptions | None = None,
    cycle_classes: bool = True,
    test_split: str = "test",
    denoising_steps: tuple[int, ...] = (1,),
    inception: Any = None,
    judges: Sequence[Judge] | None = None,
    keep_per_image: bool = False,
) -> dict[str, Any]:
    """Every evaluation that applies to the model, chosen by its capabilities, as one JSON-able dict of
    finite numbers.

    subject: a model, or a loaded run (then its training speed is reported too); train, test:
    ``aediff.data.ImageDataset`` splits (train feeds the latent probes); classifier: a trained classifier
    whose ``features`` are the feature space of FID / KID / precision / recall and whose ``logits`` judge
    class-conditioned samples (without one, those sections are left out); samples: how many samples are
    scored; limit: test images per protocol (reconstruction, denoising, likelihood; the latent probes use
    at least 2,000 per split); condition / options: what the samples are drawn with; cycle_classes: a
    class-conditioned model given no class draws every class equally often (False: the null class, i.e.
    unconditional samples); test_split: the name recorded for the
    reference split; judges: the feature spaces samples are scored in (default: ``judges_for(classifier)``,
    the classifier's penultimate features and its layers); keep_per_image: also keep, under "per_image" in
    the sections that have them, per-image numpy arrays and the samples themselves (not JSON: the
    comparison report pops them for paired comparisons).

    Sections (present when they apply): parameters, classification (CLASSIFY), reconstruction and
    latent_space (LATENT), denoising (DENOISE: rows of ``denoising_sweep``), likelihood (ELBO: ELBO / IWAE;
    DIFFUSION_BOUND: the variational bound), generation (GENERATE, with a classifier: the first judge's
    scores) and generation_by_judge ({judge name: scores}), conditional
    (CLASS_CONDITION, with a classifier), sampling_speed (GENERATE), training_speed (a run), seconds. A
    protocol that cannot run on this model or data (e.g. probes on unlabelled data) is recorded under
    "skipped" with the reason.
    """
    started = time.perf_counter()
    model = subject.model if isinstance(subject, Run) else subject
    judge = classifier.model if isinstance(classifier, Run) else classifier
    result: dict[str, Any] = {
        "family": model.family,
        "capabilities": sorted(c.value for c in model.capabilities),
        "parameters": sum(p.numel() for p in model.parameters()),
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "data": {"reference": f"{test.name}:{test_split}", "num_test": len(test), "num_train": len(train)},
        "settings": {"samples": samples, "seed": seed, "limit": limit, "sample_options": _describe(condition, options)},
    }
    skipped: dict[str, str] = {}

    def attempt(section: str, run: Any) -> None:
        try:
            result[section] = run()
        except AediffError as exc:  # a user-level reason (no labels, no fitted prior...): say so, go on
            skipped[section] = str(exc)

    if model.can(Capability.CLASSIFY):
        attempt("classification", lambda: {"accuracy": classifier_accuracy(model, test)})
    if model.can(Capability.LATENT):
        attempt(
            "reconstruction", lambda: reconstruction_metrics(model, test, limit=limit, keep_per_image=keep_per_image)
        )
    if model.can(Capability.DENOISE):
        attempt(
            "denoising",
            lambda: denoising_sweep(
                model, test, seed=seed, limit=limit, steps=denoising_steps, keep_per_image=keep_per_image
            ),
        )
    if model.can(Capability.ELBO):
        attempt("likelihood", lambda: vae_likelihood(model, test, seed=seed, limit=limit))
    elif model.can(Capability.DIFFUSION_BOUND):
        attempt("likelihood", lambda: diffusion_nll(model, test, seed=seed, limit=limit))
    if model.can(Capability.LATENT):
        # probes need a few thousand codes to be stable, and encoding is cheap: at least 2,000 per split
        attempt(
            "latent_space",
            lambda: latent_space_metrics(
                model, train, test, limit=max(limit or 0, 2000), seed=seed, keep_per_image=keep_per_image
            ),
        )
    if model.can(Capability.GENERATE):
        if judge is not None and judges is None:
            judges = judges_for(judge)
        scoring = GenerationScoring(judges or [], judge, test, test_split, samples, seed, inception, keep_per_image)
        _generation_sections(result, attempt, skipped, model, scoring, condition, options, cycle_classes)
        attempt(
            "sampling_speed",
            lambda: sampling_speed(model, n=max(1, min(32, samples)), seed=seed, condition=condition, options=options),
        )
    if isinstance(subject, Run) and subject.summary is not None:
        summary = subject.summary
        result["training_speed"] = {
            "images_per_second": summary.images_per_second,
            "steps": summary.steps,
            "images_seen": summary.images_seen,
            "train_seconds": summary.train_seconds,
            "wall_seconds": summary.wall_seconds,
        }
    result["skipped"] = skipped
    result["seconds"] = time.perf_counter() - started
    return json_safe(result)


def _describe(condition: Condition | None, options: SamplerOptions | None) -> dict[str, Any]:
    """The scalar choices of a condition and sampler options, for the record."""
    chosen = {**(vars(options) if options is not None else {}), **(vars(condition) if condition is not None else {})}
    return {k: v for k, v in chosen.items() if isinstance(v, (bool, int, float, str))}


@dataclass(frozen=True)
class GenerationScoring:
    """How samples are scored: the judges' feature spaces, the classifier that judges conditional accuracy,
    the reference split, how many samples from which seed, Inception where on disk."""

    judges: Sequence[Judge]
    classifier: Model | None
    test: Any
    test_split: str
    samples: int
    seed: int
    inception: Any = None
    keep_samples: bool = False


def _generation_sections(
    result: dict[str, Any],
    attempt: Any,
    skipped: dict[str, str],
    model: Model,
    scoring: GenerationScoring,
    condition: Condition | None,
    options: SamplerOptions | None,
    cycle_classes: bool,
) -> None:
    """generation (FID / KID / precision / recall, in the first judge's features), generation_by_judge (every
    judge's), generation_inception (Inception's, where on disk) and conditional accuracy (class-conditioned
    models)."""
    if not scoring.judges:
        skipped["generation"] = "no classifier given (its features are the feature space of FID / KID)"
        return
    by_class = model.can(Capability.CLASS_CONDITION)
    cycled = by_class and cycle_classes and (condition is None or condition.class_labels is None)
    samples, seed, test = scoring.samples, scoring.seed, scoring.test
    reference = f"{test.name}:{scoring.test_split}"

    def generation() -> dict[str, Any]:
        drawn = condition
        if cycled:  # every class equally often, like the data (an unconditional draw would be the null class)
            drawn = replace(condition or Condition(), class_labels=torch.arange(samples) % model.num_classes)
        images = sample_images(model, samples, seed, drawn, options)
        if scoring.inception is not None:
            result["generation_inception"] = generation_score(
                images,
                scoring.inception,
                test,
                feature_extractor=scoring.inception.name,
                reference_name=reference,
                seed=seed,
            ).to_dict()
        result["generation_by_judge"] = {
            j.name: generation_score(
                images,
                j.features,
                test,
                feature_extractor=j.name,
                reference_name=reference,
                seed=seed,
                reference_features=j.reference_features(test),
            ).to_dict()
            for j in scoring.judges
        }
        if cycled:
            how = "classes cycled"
        elif condition is not None and condition.needs:
            how = "as given"
        else:
            how = "null condition (unconditional)" if by_class or model.can(Capability.TEXT_CONDITION) else "none"
        first = {**result["generation_by_judge"][scoring.judges[0].name], "condition": how}
        if scoring.keep_samples:
            first["per_image"] = {"samples": images}
        return first

    attempt("generation", generation)
    if by_class and scoring.classifier is not None:
        guidance = condition.guidance if condition is not None else None
        attempt("conditional", lambda: conditional_accuracy(model, scoring.classifier, 10, seed, guidance, options))
