"""One call that runs every evaluation that applies to a model (what `aediff eval` prints), chosen by the
model's declared capabilities."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import torch

from aediff.diffusion.samplers import SamplerOptions
from aediff.errors import AediffError
from aediff.evaluation.denoising import denoising_sweep
from aediff.evaluation.judges import Judge, judges_for
from aediff.evaluation.latents import latent_space_metrics
from aediff.evaluation.protocols import (
    class_frequency_labels,
    classifier_accuracy,
    codebook_metrics,
    diffusion_nll,
    generation_score,
    model_device,
    reconstructed_images,
    reconstruction_metrics,
    sample_classes,
    sample_images,
    spread_indices,
    vae_likelihood,
)
from aediff.evaluation.results import (
    Classification,
    CodebookUsage,
    ConditionalAccuracy,
    DataRecord,
    DiffusionLikelihood,
    Generation,
    ModelEvaluation,
    Reconstruction,
    Settings,
    TrainingSpeed,
    VaeLikelihood,
    from_protocol,
)
from aediff.evaluation.speed import sampling_speed
from aediff.metrics import FeatureScore
from aediff.metrics.balance import ClassBalance, class_balance
from aediff.models import Capability, Condition, Model
from aediff.runs import Run


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
) -> ConditionalAccuracy:
    """A class-conditioned model's samples, ``per_class`` of each class, classified by ``classifier``:
    the share labelled as the class they were drawn for."""
    model.require(Capability.CLASS_CONDITION, "conditional accuracy")
    labels = torch.arange(model.num_classes).repeat_interleave(per_class)
    images = sample_images(model, len(labels), seed, Condition(class_labels=labels, guidance=guidance), options)
    return ConditionalAccuracy(
        accuracy=float((predicted_classes(classifier, images) == labels).float().mean()),
        per_class=per_class,
        num_classes=model.num_classes,
        guidance=guidance if guidance is not None else model.default_guidance,
    )


@torch.no_grad()
def judged_class_balance(classifier: Model, images: torch.Tensor, reference_labels: torch.Tensor) -> ClassBalance:
    """How ``classifier`` reads ``images`` [N, C, H, W] in [-1, 1]: ClassBalance against the class frequencies of
    ``reference_labels`` [M]."""
    classifier.eval()
    device = model_device(classifier)
    probabilities = torch.cat([classifier.logits(chunk.to(device)).softmax(1).cpu() for chunk in images.split(256)])
    return class_balance(probabilities.numpy(), reference_labels.cpu().numpy())


def reconstruction_fid(
    model: Model, dataset: Any, judges: Sequence[Judge], *, images: int | None, reference_name: str, seed: int = 0
) -> dict[str, FeatureScore]:
    """rFID as LDM reports it for its autoencoders (Rombach et al. 2022, Table 8: "R-FID"): ``images`` images of
    ``dataset`` (spread evenly, all when None) reconstructed by ``model`` (LATENT), scored in each judge's
    features against those same images; {judge name: FeatureScore} (FID with its bootstrap draws, KID,
    precision / recall; ``num_samples`` = ``num_reference`` = the images scored).

    Reconstructions and references are the same images, so a perfect autoencoder scores 0 and the number
    measures only what encoding and decoding lose. The references' features are the judge's kept features
    of ``dataset`` (``Judge.reference_features``), indexed: nothing is computed twice."""
    indices = spread_indices(len(dataset), images)
    reconstructions = reconstructed_images(model, dataset, images)
    scores = {}
    for judge in judges:
        references = judge.reference_features(dataset)[indices]
        scores[judge.name] = generation_score(
            reconstructions, judge.features, dataset, feature_extractor=judge.name, reference_name=reference_name,
            seed=seed, reference_features=references,
        )  # fmt: skip
    return scores


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
    data_classes: bool = False,
    test_split: str = "test",
    denoising_steps: tuple[int, ...] = (1,),
    inception: Any = None,
    judges: Sequence[Judge] | None = None,
    keep_per_image: bool = False,
) -> ModelEvaluation:
    """Every evaluation that applies to the model, chosen by its capabilities, as a ``ModelEvaluation``
    (``to_json()``: what `aediff eval` writes).

    subject: a model, or a loaded run (then its training speed is reported too); train, test:
    ``aediff.data.ImageDataset`` splits (train feeds the latent probes); classifier: a trained classifier
    whose ``features`` are the feature space of FID / KID / precision / recall and whose ``logits`` judge
    class-conditioned samples (without one, those sections are left out); samples: how many samples are
    scored; limit: test images per protocol (reconstruction, denoising, likelihood; the latent probes use
    at least 2,000 per split); condition / options: what the samples are drawn with; cycle_classes: a
    class-conditioned model given no class draws every class equally often (False: the null class, i.e.
    unconditional samples); data_classes: with no condition or options given, a model that can SAMPLE_CLASSES draws
    labels from the class frequencies of ``train``'s labels (``class_frequency_labels``, from ``seed``), one
    sample of each (an autoencoder from its per-class Gaussians, a conditioned diffusion model at guidance
    1), where ``train`` is labelled (before cycle_classes); test_split: the name recorded for the
    reference split; judges: the feature spaces samples are scored in (default: ``judges_for(classifier)``,
    the classifier's penultimate features and its layers); keep_per_image: also keep, in the ``per_image``
    fields of the sections that have them, per-image numpy arrays, and the samples themselves (never JSON:
    the comparison report uses them for paired comparisons).

    Sections (None unless they apply): classification (CLASSIFY), reconstruction and latent_space (LATENT),
    reconstruction_fid_by_judge (LATENT, with a classifier: rFID in every judge, of ``samples`` test images,
    at most the split, reconstructed and scored against the same images: as many as generation scores samples,
    not ``limit``, since FID's bias falls with the count; a reconstruction is one cheap encode / decode),
    denoising (DENOISE: rows of ``denoising_sweep``), likelihood (ELBO: ELBO / IWAE; DIFFUSION_BOUND: the
    variational bound), codebook (CODEBOOK: usage and perplexity of the codes), generation (GENERATE, with a
    classifier: the first judge's scores) and generation_by_judge ({judge name: scores}), conditional
    (CLASS_CONDITION, with a classifier), sampling_speed (GENERATE), training_speed (a run). A protocol that
    cannot run on this model or data (e.g. probes on unlabelled data) is recorded in ``skipped`` with the reason.
    """
    started = time.perf_counter()
    model = subject.model if isinstance(subject, Run) else subject
    judge = classifier.model if isinstance(classifier, Run) else classifier
    result = ModelEvaluation(
        family=model.family,
        capabilities=sorted(c.value for c in model.capabilities),
        parameters=sum(p.numel() for p in model.parameters()),
        trainable_parameters=sum(p.numel() for p in model.parameters() if p.requires_grad),
        data=DataRecord(f"{test.name}:{test_split}", len(test), len(train)),
        settings=Settings(samples, seed, limit, _describe(condition, options)),
    )
    attempt = _Attempts()
    if judge is not None and judges is None:
        judges = judges_for(judge)
    scoring = GenerationScoring(judges or [], judge, test, test_split, samples, seed, inception, keep_per_image)
    _quality_sections(result, attempt, model, train, test, seed, limit, denoising_steps, keep_per_image)
    if model.can(Capability.LATENT):
        _reconstruction_fid_section(result, attempt, model, scoring)
    if model.can(Capability.GENERATE):
        asked = condition is not None or options is not None  # what the caller asked for is never overridden
        by_data_class = data_classes and not asked and model.can(Capability.SAMPLE_CLASSES)
        drawing = _Drawing(train if by_data_class and train.labels is not None else None, cycle_classes)
        _generation_sections(result, attempt, model, scoring, condition, options, drawing)
        result.sampling_speed = attempt(
            "sampling_speed",
            lambda: sampling_speed(model, n=max(1, min(32, samples)), seed=seed, condition=condition, options=options),
        )
    if isinstance(subject, Run) and subject.summary is not None:
        summary = subject.summary
        result.training_speed = TrainingSpeed(
            summary.images_per_second, summary.steps, summary.images_seen, summary.train_seconds, summary.wall_seconds
        )
    result.skipped = attempt.skipped
    result.seconds = time.perf_counter() - started
    return result


Section = TypeVar("Section")  # a typed section of aediff.evaluation.results


class _Attempts:
    """Runs one protocol after another; one that cannot run for a user-level reason (no labels, no fitted
    prior...) leaves its section None and says why in ``skipped`` ({section: reason}), and the rest go on."""

    def __init__(self) -> None:
        self.skipped: dict[str, str] = {}

    def __call__(self, section: str, run: Callable[[], Section]) -> Section | None:
        try:
            return run()
        except AediffError as exc:
            self.skipped[section] = str(exc)
            return None


def _quality_sections(
    result: ModelEvaluation,
    attempt: _Attempts,
    model: Model,
    train: Any,
    test: Any,
    seed: int,
    limit: int | None,
    denoising_steps: tuple[int, ...],
    keep_per_image: bool,
) -> None:
    """classification, reconstruction, denoising, likelihood and latent_space, as the capabilities ask."""
    if model.can(Capability.CLASSIFY):
        result.classification = attempt("classification", lambda: Classification(classifier_accuracy(model, test)))
    if model.can(Capability.LATENT):
        result.reconstruction = attempt(
            "reconstruction",
            lambda: from_protocol(
                Reconstruction, reconstruction_metrics(model, test, limit=limit, keep_per_image=keep_per_image)
            ),
        )
    if model.can(Capability.DENOISE):
        result.denoising = attempt(
            "denoising",
            lambda: denoising_sweep(
                model, test, seed=seed, limit=limit, steps=denoising_steps, keep_per_image=keep_per_image
            ),
        )
    if model.can(Capability.ELBO):
        result.likelihood = attempt(
            "likelihood", lambda: from_protocol(VaeLikelihood, vae_likelihood(model, test, seed=seed, limit=limit))
        )
    elif model.can(Capability.DIFFUSION_BOUND):
        result.likelihood = attempt(
            "likelihood", lambda: from_protocol(DiffusionLikelihood, diffusion_nll(model, test, seed=seed, limit=limit))
        )
    if model.can(Capability.CODEBOOK):
        result.codebook = attempt(
            "codebook", lambda: from_protocol(CodebookUsage, codebook_metrics(model, test, limit=limit))
        )
    if model.can(Capability.LATENT):
        # probes need a few thousand codes to be stable, and encoding is cheap: at least 2,000 per split
        result.latent_space = attempt(
            "latent_space",
            lambda: latent_space_metrics(
                model, train, test, limit=max(limit or 0, 2000), seed=seed, keep_per_image=keep_per_image
            ),
        )


def _reconstruction_fid_section(
    result: ModelEvaluation, attempt: _Attempts, model: Model, scoring: GenerationScoring
) -> None:
    """reconstruction_fid_by_judge: rFID of ``scoring.samples`` test images (at most the split) in every judge;
    recorded as skipped without judges."""
    if not scoring.judges:
        attempt.skipped["reconstruction_fid_by_judge"] = (
            "no classifier given (its features are the feature space of rFID)"
        )
        return
    result.reconstruction_fid_by_judge = attempt(
        "reconstruction_fid_by_judge",
        lambda: reconstruction_fid(
            model, scoring.test, scoring.judges, images=scoring.samples, reference_name=scoring.reference,
            seed=scoring.seed,
        ),
    )  # fmt: skip


def _describe(condition: Condition | None, options: SamplerOptions | None) -> dict[str, Any]:
    """The scalar choices of a condition and sampler options, for the record."""
    chosen = {**(vars(options) if options is not None else {}), **(vars(condition) if condition is not None else {})}
    return {k: v for k, v in chosen.items() if isinstance(v, (bool, int, float, str))}


@dataclass(frozen=True)
class GenerationScoring:
    """How samples (and an autoencoder's reconstructions, for rFID) are scored: the judges' feature spaces, the
    classifier that judges conditional accuracy, the reference split, how many samples from which seed,
    Inception where on disk."""

    judges: Sequence[Judge]
    classifier: Model | None
    test: Any
    test_split: str
    samples: int
    seed: int
    inception: Any = None
    keep_samples: bool = False

    @property
    def reference(self) -> str:
        return f"{self.test.name}:{self.test_split}"

    def score(self, images: torch.Tensor, features: Any, name: str, reference_features: Any = None) -> FeatureScore:
        """FID / KID / precision / recall of ``images`` against the reference split in ``features``."""
        return generation_score(
            images,
            features,
            self.test,
            feature_extractor=name,
            reference_name=self.reference,
            seed=self.seed,
            reference_features=reference_features,
        )


@dataclass(frozen=True)
class _Drawing:
    """How the scored samples are drawn beyond ``condition``: by the class frequencies of ``labelled`` (the
    labelled training split), else with every class cycled (``cycle_classes``) or the null class."""

    labelled: Any
    cycle_classes: bool


def _generation_sections(
    result: ModelEvaluation,
    attempt: _Attempts,
    model: Model,
    scoring: GenerationScoring,
    condition: Condition | None,
    options: SamplerOptions | None,
    drawing: _Drawing,
) -> None:
    """generation (FID / KID / precision / recall, in the first judge's features), generation_by_judge (every
    judge's), generation_inception (Inception's, where on disk) and conditional accuracy (class-conditioned
    models)."""
    if not scoring.judges:
        attempt.skipped["generation"] = "no classifier given (its features are the feature space of FID / KID)"
        return
    by_class = model.can(Capability.CLASS_CONDITION)
    by_data = drawing.labelled is not None
    no_labels_given = condition is None or condition.class_labels is None
    cycled = not by_data and by_class and drawing.cycle_classes and no_labels_given
    samples = scoring.samples

    def generation() -> Generation:
        drawn = condition
        if cycled:  # every class equally often, like the data (an unconditional draw would be the null class)
            drawn = replace(condition or Condition(), class_labels=torch.arange(samples) % model.num_classes)
        if by_data:
            labels = class_frequency_labels(drawing.labelled.labels, samples, scoring.seed)
            images = sample_classes(model, labels, drawing.labelled, scoring.seed)
        else:
            images = sample_images(model, samples, scoring.seed, drawn, options)
        if scoring.inception is not None:
            result.generation_inception = scoring.score(images, scoring.inception, scoring.inception.name)
        result.generation_by_judge = {
            j.name: scoring.score(images, j.features, j.name, j.reference_features(scoring.test))
            for j in scoring.judges
        }
        how = BY_DATA_CLASS if by_data else _how_conditioned(model, condition, cycled)
        if scoring.classifier is not None and scoring.test.labels is not None:
            result.class_balance = attempt(
                "class_balance", lambda: judged_class_balance(scoring.classifier, images, scoring.test.labels)
            )
        first = result.generation_by_judge[scoring.judges[0].name]
        return Generation.of(first, how, images if scoring.keep_samples else None)

    result.generation = attempt("generation", generation)
    if by_class and scoring.classifier is not None:
        guidance = condition.guidance if condition is not None else None
        result.conditional = attempt(
            "conditional", lambda: conditional_accuracy(model, scoring.classifier, 10, scoring.seed, guidance, options)
        )


BY_DATA_CLASS = "classes drawn from the data's frequencies"  # Generation.condition of data_classes samples


def _how_conditioned(model: Model, condition: Condition | None, cycled: bool) -> str:
    """How the scored samples were conditioned, for the record."""
    if cycled:
        return "classes cycled"
    if condition is not None and condition.needs:
        return "as given"
    conditioned = model.can(Capability.CLASS_CONDITION) or model.can(Capability.TEXT_CONDITION)
    return "null condition (unconditional)" if conditioned else "none"
