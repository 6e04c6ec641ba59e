"""The comparison's evaluation loop: one protocol for every model of the plan (``evaluate_model``, the
function behind `aediff eval`), plus what the verdicts need beyond it: the controls every claim must beat
(the mean image, the identity denoiser, raw pixels, random projections, untrained networks), per-image
values for paired comparisons, bootstrap intervals, and the budget curves from the snapshots kept during
training.

``evaluate_all`` returns a ``ComparisonResults``: each model's ``ModelEvaluation`` (per-image arrays kept),
the comparison's own numbers (``ComparisonSections``) and the images and per-image controls the figures and
paired comparisons need (``ComparisonArtifacts``, never JSON); ``aediff.reports.sections`` turns that into
the report.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

import aediff
from aediff.data import caption_templates
from aediff.diffusion.degradations import spec_kind
from aediff.diffusion.restoration import RestoreOptions
from aediff.diffusion.samplers import SamplerOptions
from aediff.evaluation import (
    evaluate_model,
    generation_score,
    gradient_norms,
    high_frequency_share,
    interpolation_grid,
    latent_codes,
    predicted_classes,
    predicted_x0_sweep,
    sample_images,
    spread_indices,
)
from aediff.evaluation.judges import Judge, judges_for
from aediff.evaluation.latents import knn_controls, knn_correct, network_feature_probes
from aediff.evaluation.restoration import choose_one_pass_sigma, composite_fid, control_rows, restoration_rows
from aediff.evaluation.results import (
    ComparisonSections,
    CurvePoint,
    CurveScore,
    GuidanceRow,
    GuidanceSweep,
    HeldOutLoss,
    ImageControls,
    ModelEvaluation,
    PromptAccuracy,
    RestorationSweep,
    X0Trend,
)
from aediff.evaluation.suite import BY_DATA_CLASS
from aediff.metrics import psnr
from aediff.metrics.stats import Estimate
from aediff.models import Capability, Condition, Model
from aediff.models.diffusion import class_captions, class_names
from aediff.reports.verdicts import spearman

X0_SIGMAS = (0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 20.0)  # section 6's row of noise levels
X0_IMAGES = 64  # test images behind section 6's statistic (6 are shown)
LATENT_PROBE_IMAGES = 2000  # per split, for the k-NN and linear probes and their controls
TREND_DRAWS = 200  # bootstrap draws of section 6's Spearman rho
FEATURE_SIGMA_IMAGES = 1000  # training images section 11 chooses its noise level on (a fifth held out)


@dataclass
class ComparisonArtifacts:
    """What the report shows and pairs beyond the numbers (never JSON): images [N, C, H, W] in [-1, 1] by
    model, latent codes, and per-image values of the controls and of section 8's samples."""

    originals: torch.Tensor  # 8 test images, the top row of the reconstructions
    samples: dict[str, torch.Tensor] = field(default_factory=dict)
    reconstructions: dict[str, torch.Tensor] = field(default_factory=dict)
    codes: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # (codes [N, D], labels [N])
    mean_image_psnr: np.ndarray | None = None  # [N] the mean training image's PSNR on each test image
    knn_controls: dict[str, np.ndarray] = field(default_factory=dict)  # control -> [N] bool, k-NN correct
    interpolation: torch.Tensor | None = None
    x0_predictions: torch.Tensor | None = None  # [sigmas, 6, C, H, W]
    class_grid: tuple[float, torch.Tensor] | None = None  # (guidance, images)
    guidance_correct: dict[str, np.ndarray] = field(default_factory=dict)  # scale "%g" -> [n] bool
    prompt_grid: tuple[list[str], torch.Tensor] | None = None  # (class names, images)


@dataclass
class ComparisonResults:
    """``evaluate_all``'s result: every model's evaluation, the comparison's numbers and its artifacts."""

    models: dict[str, ModelEvaluation]
    sections: ComparisonSections
    artifacts: ComparisonArtifacts


@dataclass
class Judging:
    """The instruments every seed's models are measured with, built once per comparison: the judge
    classifier's run (None on unlabelled data), its feature spaces (each keeps the test split's reference
    features once computed), Inception-v3 when it is on disk, and the judge's own evaluation."""

    run: Any
    judges: list[Judge]
    inception: Any
    evaluation: ModelEvaluation | None

    @property
    def classifier(self) -> Model | None:
        return self.run.model if self.run is not None else None


def prepare_judging(plan, runs: dict[str, Path], train_set, test_set) -> Judging:
    judge = next((p for p in plan if p.judge), None)
    if judge is None:
        return Judging(None, [], _inception_if_on_disk(), None)
    run = aediff.load(runs[judge.name])
    evaluation = evaluate_model(run, train_set, test_set)
    evaluation.role = "judge"
    return Judging(run, judges_for(run.model), _inception_if_on_disk(), evaluation)  # Inception: slow to load


def evaluate_all(config, plan, runs: dict[str, Path], judging: Judging, train_set, test_set, meter, log=None):
    """Evaluate every model of the plan with one protocol, and the controls, in ``judging``'s instruments
    (shared by every training seed): a ``ComparisonResults``. See the module docstring."""
    judge_run, judges, inception, classifier = judging.run, judging.judges, judging.inception, judging.classifier
    models: dict[str, ModelEvaluation] = {}
    artifacts = ComparisonArtifacts(test_set.batch(spread_indices(len(test_set), 8))["images"])
    sections = ComparisonSections(
        judges={j.name: j.description for j in judges}, judge_sees={j.name: sorted(j.sees) for j in judges}
    )
    judge = next((p for p in plan if p.judge), None)
    if judging.evaluation is not None:
        models[judge.name] = judging.evaluation
    sections.controls = _image_controls(train_set, test_set, config.limit, artifacts)
    if any(p.restorer for p in plan):
        sections.restoration = restoration_controls(config, test_set, judges)
    for planned in plan:
        if planned.judge:
            continue
        begun = meter.start(f"evaluating {planned.name}")
        run = aediff.load(runs[planned.name])
        models[planned.name] = _evaluate_planned(
            planned, run, config, train_set, test_set, judge_run, judges, inception
        )
        _figures_of(planned, run.model, config, train_set, test_set, artifacts, models[planned.name])
        _section_numbers(planned, run.model, config, train_set, test_set, classifier, judges, sections, artifacts)
        if planned.curve and judges:  # the snapshots' points come from evaluate_snapshots
            samples = models[planned.name].generation.samples[: config.curve_samples]
            scores = {judge.name: judged(samples, judge, test_set, config) for judge in judges}
            end = _curve_point(1.0, models[planned.name], scores, len(samples))
            sections.curves = {**(sections.curves or {}), planned.name: [end]}
        meter.finish("eval", begun)
        if log:
            log(f"evaluated {planned.name}")
    if labelled(train_set, test_set):
        sections.manifold_controls = _manifold_controls(
            plan, runs, models, sections, train_set, test_set, config, artifacts
        )
    return ComparisonResults(models, sections, artifacts)


def labelled(train_set, test_set) -> bool:
    return train_set.labels is not None and test_set.labels is not None


def _evaluate_planned(planned, run, config, train_set, test_set, judge_run, judges, inception) -> ModelEvaluation:
    """evaluate_model on one planned model, per-image arrays kept. On labelled data every model's scored
    samples are class-conditional, for one label sequence drawn from the training split's class frequencies
    (an autoencoder draws from a Gaussian fitted to each class's latents, a conditioned diffusion model at
    guidance 1), so section 9 compares like with like; ``config.curve_samples`` (at most ``config.samples``)
    unconditional samples (the null condition, an autoencoder's Gaussian fitted to all latents) are scored
    beside them for reference. On unlabelled data the scored samples are unconditional. Section 8 measures
    guided samples."""
    metrics = evaluate_model(
        run,
        train_set,
        test_set,
        classifier=judge_run,
        samples=config.samples,
        seed=config.seed,
        limit=config.limit,
        inception=inception,
        cycle_classes=False,
        data_classes=True,
        denoising_steps=(1, config.denoise_steps) if planned.subject else (1,),
        judges=judges,
        keep_per_image=True,
    )
    metrics.role = planned.role
    if metrics.generation is not None and metrics.generation.condition == BY_DATA_CLASS:
        images = sample_images(run.model, min(config.curve_samples, config.samples), config.seed)
        metrics.unconditional_by_judge = {j.name: judged(images, j, test_set, config) for j in judges}
        metrics.unconditional_samples = images
    return metrics


def _inception_if_on_disk():
    """Inception-v3 features when torch-fidelity and its weights are installed; else None (never downloads)."""
    from aediff.errors import ConfigError
    from aediff.metrics import inception_extractor

    try:
        return inception_extractor()
    except ConfigError:
        return None


def _figures_of(
    planned, model: Model, config, train_set, test_set, artifacts: ComparisonArtifacts, metrics: ModelEvaluation
) -> None:
    """The images the report shows of one model: unconditional samples (the first 64 of the unconditional
    reference, else of those the protocol scored, when it kept them), reconstructions, latent codes,
    interpolations."""
    if model.can(Capability.GENERATE):
        scored = metrics.generation.samples if metrics.generation is not None else None
        scored = metrics.unconditional_samples if metrics.unconditional_samples is not None else scored
        shown = scored[:64] if scored is not None else sample_images(model, 64, seed=config.seed)
        artifacts.samples[planned.name] = shown
    if model.can(Capability.LATENT):
        artifacts.reconstructions[planned.name] = model.reconstruct(artifacts.originals.to(model.device)).cpu()
        if labelled(train_set, test_set):
            limited = test_set.subset(spread_indices(len(test_set), config.limit))
            artifacts.codes[planned.name] = latent_codes(model, limited)
    if model.can(Capability.ELBO):
        artifacts.interpolation = interpolation_grid(model, test_set, seed=config.seed)


def _section_numbers(planned, model, config, train_set, test_set, classifier, judges, sections, artifacts) -> None:
    """What sections 6, 7 and 8 measure beyond the protocol, for the models they are about (never a peer)."""
    if planned.peer:
        return
    if planned.restorer is not None:
        restorations(planned.name, model, config, train_set, test_set, judges, sections.restoration)
    if planned.autoencoder is not None and classifier is not None and model.can(Capability.TEXT_CONDITION):
        sections.prompts, artifacts.prompt_grid = prompt_grid(model, classifier, config, train_set)
    if model.can(Capability.DIFFUSION_BOUND):  # pixel diffusion: its loss and gradients compare directly
        losses = held_out_losses(model, test_set, config.limit, seed=config.seed)
        batch = train_set.batch(spread_indices(len(train_set), 64))
        batch = {k: v.to(model.device) if torch.is_tensor(v) else v for k, v in batch.items()}
        loss = HeldOutLoss(
            losses.tolist(),
            Estimate.mean_of(losses, "chunks of 25 images"),
            gradient_norms(model, batch, seed=config.seed),
        )
        sections.held_out_loss = {**(sections.held_out_loss or {}), planned.name: loss}
    if not planned.subject:
        return
    sections.x0, artifacts.x0_predictions = x0_trend(model, test_set, config.seed)
    if labelled(train_set, test_set) and model.can(Capability.NETWORK_FEATURES):
        sections.network_features = network_feature_probes(
            model,
            train_set,
            test_set,
            "unet-mid",
            limit=LATENT_PROBE_IMAGES,
            seed=config.seed,
            choose_on=FEATURE_SIGMA_IMAGES,
        )
    if classifier is not None and model.can(Capability.CLASS_CONDITION):
        sections.guidance, artifacts.class_grid, artifacts.guidance_correct = guidance_sweep(
            model, classifier, judges[0], config, test_set
        )


def _restored_images(dataset, config) -> torch.Tensor:
    return dataset.batch(spread_indices(len(dataset), config.restore_images))["images"]


def restoration_controls(config, test_set, judges: list[Judge]) -> RestorationSweep:
    """Section 10's classical controls on its test images and degradations (``config.restorations_for``)."""
    x = _restored_images(test_set, config)
    specs = config.restorations_for(tuple(x.shape))
    rows = control_rows(x, specs, config.seed, composite_fid(judges, test_set))
    return RestorationSweep(len(x), specs, rows[0].degradation, rows, originals=x[:8])


def restorations(name: str, model: Model, config, train_set, test_set, judges, sweep: RestorationSweep) -> None:
    """Section 10: every method ``model`` offers on the sweep's images and degradations (``sweep.specs``), its
    rows added to ``sweep``. A diffusion model runs DDNM and RePaint with ``config.restore_steps`` sampler steps
    (RePaint's resamplings at their defaults) and its one pass at the noise level chosen on validation images carved
    from the training split (half as many as the test images, the same per degradation kind)."""
    x = _restored_images(test_set, config).to(model.device)
    fid = composite_fid(judges, test_set)
    if not model.can(Capability.DIFFUSION_SAMPLER):  # an autoencoder: its one pass
        sweep.rows += restoration_rows(model, x, sweep.specs, [RestoreOptions()], config.seed, name, fid)
        return
    validation = train_set.batch(spread_indices(len(train_set), max(10, len(x) // 2)))["images"].to(model.device)
    sweep.one_pass_sigma, sweep.one_pass_validation = choose_one_pass_sigma(
        model, validation, sweep.specs, seed=config.seed
    )
    steps = SamplerOptions(steps=config.restore_steps)
    for spec in sweep.specs:
        kind = spec_kind(spec)
        methods = [
            RestoreOptions(method="ddnm", sampler=steps),
            RestoreOptions(method="repaint", sampler=steps),
            RestoreOptions(method="one-pass", sigma=sweep.one_pass_sigma[kind]),
        ]
        sweep.rows += restoration_rows(model, x, [spec], methods, config.seed, name, fid)


def _image_controls(train_set, test_set, limit: int, artifacts: ComparisonArtifacts) -> ImageControls:
    """The trivial reconstruction every AE must beat: the mean training image for every test image."""
    mean_image = torch.cat([train_set.batch(chunk)["images"] for chunk in torch.arange(len(train_set)).split(512)])
    mean_image = mean_image.mean(0, keepdim=True)
    test = test_set.batch(spread_indices(len(test_set), limit))["images"]
    values = psnr(mean_image.expand_as(test), test).double().numpy()
    artifacts.mean_image_psnr = values
    return ImageControls(Estimate.mean_of(values))


@torch.no_grad()
def held_out_losses(model: Model, dataset: Any, limit: int, seed: int = 0, draws: int = 4, chunk: int = 25):
    """The training objective on test images (null condition), one value per chunk of ``chunk`` images,
    averaged over ``draws`` noise draws: [limit // chunk] float64. Chunk i of draw k draws its noise levels
    and noise from seed (seed, k, i), so two models of one family see the same noise: their per-chunk
    differences are paired."""
    model.eval()
    device = model.device
    images = dataset.batch(spread_indices(len(dataset), limit))["images"].to(device)
    chunks = [c for c in images.split(chunk) if len(c) == chunk] or [images]
    out = np.zeros(len(chunks))
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):  # leave the caller's RNG be
        for k in range(draws):
            for i, c in enumerate(chunks):
                torch.manual_seed(seed * 1_000_003 + k * 10_007 + i)
                out[i] += float(model.denoising_loss(model.diffusion_input(c), model.condition_inputs(len(c)))) / draws
    return out


def x0_trend(model: Model, test_set, seed: int) -> tuple[X0Trend, torch.Tensor]:
    """Section 6: the high-frequency share of the predicted x0 of ``X0_IMAGES`` test images at each of
    ``X0_SIGMAS``, the data's own, and Spearman's rho between sigma and the mean share with a bootstrap
    interval over images. Returns (the numbers, the predictions of the first 6 images [S, 6, C, H, W])."""
    images = test_set.batch(spread_indices(len(test_set), X0_IMAGES))["images"].to(model.device)
    sweep = predicted_x0_sweep(model, images, X0_SIGMAS, seed=seed)
    shares = np.stack([high_frequency_share(p).double().numpy() for p in sweep.predictions])  # [S, N]
    rng = np.random.default_rng(seed)
    draws = [
        spearman(X0_SIGMAS, shares[:, rng.integers(0, shares.shape[1], shares.shape[1])].mean(1))
        for _ in range(TREND_DRAWS)
    ]
    rho = Estimate.from_draws(spearman(X0_SIGMAS, shares.mean(1)), draws)
    numbers = X0Trend(
        sigmas=list(X0_SIGMAS),
        high_frequency_share=shares.mean(1).tolist(),
        high_frequency_share_se=(shares.std(1, ddof=1) / np.sqrt(shares.shape[1])).tolist(),
        data_high_frequency_share=float(high_frequency_share(images.cpu()).mean()),
        rho=rho,
        num_images=int(shares.shape[1]),
    )
    return numbers, sweep.predictions[:, :6].cpu()


def judged(images: torch.Tensor, judge: Judge, test_set, config):
    """FID / KID / precision / recall (a ``FeatureScore``) of ``images`` against the test split in ``judge``'s
    features, drawn with the comparison's seed (so every model's bootstrap shares the reference resamples)."""
    return generation_score(
        images,
        judge.features,
        test_set,
        feature_extractor=judge.name,
        reference_name=f"{config.data}:test",
        seed=config.seed,
        reference_features=judge.reference_features(test_set),
    )


def guidance_sweep(model: Model, classifier: Model, judge: Judge, config, test_set):
    """Section 8: class-conditioned samples at each guidance scale, drawn from the same seed and labels (so
    sample i at two scales starts from the same noise, and their correctness is paired). Returns (rows by
    scale, (scale, images) for the class grid, {scale: [n] bool correctness})."""
    classes = model.num_classes
    n = max(config.guidance_samples, classes)  # every class at least once (the grid has a row per class)
    labels = torch.arange(n) % classes
    rows, correct, grid = {}, {}, None
    for w in config.guidances:
        images = sample_images(model, n, config.seed + 1, Condition(class_labels=labels, guidance=w))
        score = judged(images, judge, test_set, config)
        hits = (predicted_classes(classifier, images) == labels).numpy()
        correct[f"{w:g}"] = hits
        accuracy = Estimate.proportion(int(hits.sum()), n)
        rows[f"{w:g}"] = GuidanceRow(w, accuracy.value, accuracy.se, n, score)
        if grid is None or abs(w - 3.0) < abs(grid[0] - 3.0):
            per_class = min(8, n // classes)
            order = torch.cat([torch.nonzero(labels == d).flatten()[:per_class] for d in range(classes)])
            grid = (w, images[order])
    return GuidanceSweep(rows, classes), grid, correct


def prompt_grid(model: Model, classifier: Model, config, train_set) -> tuple[PromptAccuracy, Any]:
    """Section 8's captions: 8 samples per class name through the first caption template, guidance 3, and
    the share the classifier assigns to the named class. A labelled set always has class names (made from
    the indices when the data has none, see ``ImageDataset.classes_named_by_index``)."""
    names = class_names(train_set)
    labels = torch.tensor([d for d in range(len(names)) for _ in range(8)])
    prompts = class_captions(names, labels.tolist())
    images = sample_images(model, len(prompts), config.seed + 2, Condition(prompts=prompts, guidance=3.0))
    hits = predicted_classes(classifier, images) == labels
    accuracy = Estimate.proportion(int(hits.sum()), len(hits))
    prompts_accuracy = PromptAccuracy(
        caption_templates(names)[0], 3.0, accuracy.value, accuracy.se, len(prompts), train_set.classes_named_by_index
    )
    return prompts_accuracy, (names, images)


def evaluate_snapshots(config, plan, runs: dict[str, Path], judging: Judging, train_set, test_set, meter, log=None):
    """Every planned model (never a peer) again at each budget fraction of ``config.snapshots``, from the
    snapshot its training kept there, with the same protocol but ``config.curve_samples`` samples: {fraction:
    ``ComparisonResults``}. A fraction is left out when no model kept it (runs reused from elsewhere)."""
    light = dataclasses.replace(config, samples=config.curve_samples)
    out = {}
    for fraction in config.snapshots:
        kept = {p.name: _snapshot_at(runs[p.name], fraction) for p in plan if not p.judge and not p.peer}
        kept = {name: folder for name, folder in kept.items() if folder is not None}
        if not kept:
            continue
        at = [dataclasses.replace(p, curve=False) for p in plan if p.judge or p.name in kept]
        folders = {**{p.name: runs[p.name] for p in plan if p.judge}, **kept}
        out[fraction] = evaluate_all(light, at, folders, judging, train_set, test_set, meter, log)
    return out


def _snapshot_at(run: Path, fraction: float) -> Path | None:
    return next((folder for f, folder in aediff.runs.list_snapshots(run) if abs(f - fraction) < 1e-6), None)


def with_snapshot_points(sections: ComparisonSections, snapshots: dict[float, ComparisonResults]) -> None:
    """Put each snapshot's FIDs in front of the end point of every budget curve in ``sections.curves``."""
    for name, points in (sections.curves or {}).items():
        earlier = [
            _point_of(fraction, results.models[name])
            for fraction, results in sorted(snapshots.items())
            if name in results.models and results.models[name].generation_by_judge
        ]
        sections.curves[name] = earlier + points


def _point_of(fraction: float, evaluation: ModelEvaluation) -> CurvePoint:
    scores = evaluation.generation_by_judge
    return _curve_point(fraction, evaluation, scores, next(iter(scores.values())).num_samples)


def _curve_point(fraction: float, evaluation: ModelEvaluation, scores: dict, samples: int) -> CurvePoint:
    """One point of a budget curve: ``scores`` (judge name -> a score with fid, fid_se, fid_draws_values) of
    ``samples`` samples of the model ``evaluation`` describes, trained to ``fraction`` of its budget."""
    speed = evaluation.training_speed
    seconds, steps = (speed.train_seconds, speed.steps) if speed is not None else (None, None)
    judged_by = {j: CurveScore(s.fid, s.fid_se, s.fid_draws_values) for j, s in scores.items()}
    return CurvePoint(fraction, seconds, steps, samples, judged_by)


@torch.no_grad()
def _manifold_controls(plan, runs, models, sections, train_set, test_set, config, artifacts) -> dict[str, Estimate]:
    """Section 4's and 11's controls, on the same test images as the latent probes: k-NN correctness of raw
    pixels, of a random projection to each latent dimension (and to the width of section 11's features), and
    of each autoencoder's network untrained (the same config, initialised from the seed, never trained).
    Per-image arrays go to ``artifacts.knn_controls``; returns the accuracies."""
    latent = [p.name for p in plan if not p.peer and p.name in models and models[p.name].latent_space is not None]
    dims = {models[n].latent_space.latent_dim for n in latent}
    if sections.network_features is not None:  # section 11's control: a projection as wide as the features
        dims.add(sections.network_features.feature_dim)
    dims = tuple(sorted(dims))
    controls = knn_controls(train_set, test_set, dims, LATENT_PROBE_IMAGES, seed=config.seed)
    for name in latent:
        trained = aediff.load(runs[name]).model
        torch.manual_seed(config.seed)
        untrained = type(trained)(copy.deepcopy(trained.config)).to(trained.device)
        train_codes, train_labels = latent_codes(untrained, train_set, LATENT_PROBE_IMAGES, seed=config.seed)
        test_codes, test_labels = latent_codes(untrained, test_set, LATENT_PROBE_IMAGES, seed=config.seed)
        controls[f"untrained {name}"] = knn_correct(train_codes, train_labels, test_codes, test_labels)
    artifacts.knn_controls = controls
    return {name: Estimate.proportion(int(c.sum()), len(c)) for name, c in controls.items()}
