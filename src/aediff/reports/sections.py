"""The comparison report: eleven sections, each a claim, the figure that tests it, the control it must beat
and the verdict computed from the numbers with their intervals (``aediff.reports.verdicts``).

One builder per section reads what ``aediff.reports.evaluate.evaluate_all`` measured, turns it into
``Estimate``s (paired over the same images, samples or reference resamples where it can), asks the
section's verdict rule, and draws the figures. ``build_report`` runs them and writes the report.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aediff.data import fill_template
from aediff.evaluation import latent_map, umap_available
from aediff.evaluation.latents import RAW_PIXELS
from aediff.evaluation.results import (
    CodebookUsage,
    ComparisonSections,
    CurvePoint,
    DenoisingRow,
    ImageScores,
    ModelEvaluation,
)
from aediff.evaluation.suite import BY_DATA_CLASS
from aediff.metrics import FeatureScore
from aediff.metrics.stats import (
    Estimate,
    difference_of_draws,
    paired_difference,
    paired_proportion_difference,
)
from aediff.models import Capability
from aediff.reports import figures
from aediff.reports import verdicts as rules
from aediff.reports.evaluate import ComparisonArtifacts, ComparisonResults
from aediff.reports.html import Figure, Section, Table, render_report, write_report
from aediff.reports.record import ClaimVerdict, ComparisonReport, ReportMeta, SeedRun
from aediff.reports.seeds import Ruling, over_seeds
from aediff.reports.training import budget_line, training_table
from aediff.reports.verdicts import DenoisingLevel, Verdict

# The property sample-quality claims (sections 2, 7, 9) are about: only judges shown to see it vote on them.
QUALITY = "image quality"
# A sample set's scores beside FID in the tables, each with its bootstrap interval (``_with_intervals``).
INTERVAL_COLUMNS = ["KID", "KID +- (95%)", "precision", "precision +- (95%)", "recall", "recall +- (95%)"]


@dataclass
class Measured:
    """What the evaluation measured, with the lookups the builders share."""

    models: dict[str, ModelEvaluation]
    sections: ComparisonSections
    artifacts: ComparisonArtifacts
    meta: ReportMeta
    plan: list[Any]
    denoise_steps: int = 1  # the diffusion model's multi-step denoising (CompareConfig.denoise_steps)
    rulings: dict[str, Ruling] = field(default_factory=dict)  # section key -> the rule asked and its inputs

    def rule(self, section: str, rule: Callable[..., Verdict], *inputs: Any) -> Verdict:
        """``section``'s verdict: ``rule`` on ``inputs``, recorded so that the same rule can run again on the
        inputs pooled over training seeds (``aediff.reports.seeds``)."""
        self.rulings[section] = Ruling(rule, inputs)
        return rule(*inputs)

    @property
    def judges(self) -> list[str]:
        return list(self.sections.judges)

    def voters(self, sees: str) -> frozenset[str] | None:
        """The judges that vote on a claim about ``sees`` ("image quality", "class content"): those shown to see
        it (``Judge.sees``); None (all vote) for a record that does not say what its judges see."""
        recorded = self.sections.judge_sees
        return frozenset(j for j, seen in recorded.items() if sees in seen) if recorded else None

    def can(self, name: str, capability: Capability) -> bool:
        """Whether the evaluated model ``name`` declared ``capability`` (recorded in its metrics)."""
        return name in self.models and capability.value in self.models[name].capabilities

    def planned(self, predicate: Callable[[Any], bool]) -> list[Any]:
        """The evaluated models of the plan that ``predicate`` picks; never a peer (no claim is about one)."""
        return [p for p in self.plan if predicate(p) and not p.peer and p.name in self.models]

    @property
    def shared_ae(self) -> str | None:
        sweep = sorted(self.planned(lambda p: p.sweep == "bottleneck"), key=lambda p: p.bottleneck)
        return sweep[len(sweep) // 2].name if sweep else None

    @property
    def subject(self) -> str | None:
        found = self.planned(lambda p: p.subject)
        return found[0].name if found else None

    def reconstruction_psnr(self, name: str) -> np.ndarray:
        """Per-test-image PSNR [N] of the model's reconstructions."""
        return self.models[name].reconstruction.per_image.psnr

    def psnr(self, name: str) -> Estimate:
        return Estimate.mean_of(self.reconstruction_psnr(name))

    def denoised(self, name: str, sigma: float, steps: int = 1) -> ImageScores | None:
        row = self.models[name].denoised("gaussian", sigma, steps) if name in self.models else None
        return row.per_image if row is not None else None

    def probe_noisy(self, name: str) -> dict[str, np.ndarray]:
        """{sigma: [N] bool} the linear probe's correctness on codes of noisy test images ({} without probes)."""
        probes = self.models[name].latent_space
        return probes.per_image.probe_noisy if probes is not None and probes.per_image is not None else {}

    def knn_hits(self, name: str) -> np.ndarray | None:
        """[N] bool: the k-NN probe's correctness on the model's codes (None without probes)."""
        probes = self.models[name].latent_space if name in self.models else None
        return probes.per_image.knn if probes is not None and probes.per_image is not None else None

    def referenced(self, name: str, unconditional: bool) -> bool:
        """Whether ``unconditional`` asks for the model's unconditional reference: it has one (where it has
        none, its scored samples were unconditional already)."""
        return unconditional and self.models[name].unconditional_by_judge is not None

    def scores(self, name: str, unconditional: bool = False) -> dict[str, FeatureScore]:
        """The model's FeatureScore by judge: of its scored samples, or (``unconditional``) unconditional ones."""
        x = self.models[name]
        return (x.unconditional_by_judge if self.referenced(name, unconditional) else x.generation_by_judge) or {}

    def fid(self, name: str, judge: str, unconditional: bool = False) -> Estimate | None:
        return self.models[name].fid(judge, self.referenced(name, unconditional)) if name in self.models else None

    def fid_gap(self, better: str, worse: str, judge: str, unconditional: bool = False) -> Estimate:
        """FID(worse) - FID(better), paired over the reference resamples of the bootstrap."""
        a = self.scores(worse, unconditional)[judge]
        b = self.scores(better, unconditional)[judge]
        return difference_of_draws(a.fid, a.fid_draws_values, b.fid, b.fid_draws_values)


def _level_psnr(row: DenoisingRow | None) -> float:
    return float(row.psnr) if row is not None else float("nan")


def _psnr_rows(m: ModelEvaluation, kind: str = "gaussian", steps: int = 1) -> dict[float, DenoisingRow]:
    return {r.level: r for r in m.denoising or [] if r.kind == kind and r.steps == steps}


def _section(key: str, title: str, claim: str, verdict: Verdict, figs=(), tables=(), notes="") -> Section:
    return Section(key, title, claim, verdict.verdict, verdict.reason, list(figs), list(tables), notes, verdict.control)


# --- 1. bottleneck ---------------------------------------------------------------------------------------


def bottleneck_section(m: Measured) -> tuple[Section, Verdict] | None:
    sweep = sorted(m.planned(lambda p: p.sweep == "bottleneck"), key=lambda p: p.bottleneck)
    if not sweep:
        return None
    names, sizes = [p.name for p in sweep], [p.bottleneck for p in sweep]
    psnr = [m.psnr(n) for n in names]
    arrays = [m.reconstruction_psnr(n) for n in names]
    gains = [paired_difference(b, a) for a, b in zip(arrays[:-1], arrays[1:], strict=True)]
    control = Estimate.mean_of(m.artifacts.mean_image_psnr)
    verdict = m.rule("bottleneck", rules.bottleneck, sizes, psnr, gains, control)
    art = m.artifacts
    figs = [
        Figure(
            "bottleneck_psnr",
            partial(
                figures.line_plot,
                {"AE": (sizes, [p.value for p in psnr]), "mean image (control)": (sizes, [control.value] * len(sizes))},
                title="Reconstruction against bottleneck size",
                xlabel="bottleneck size (numbers)",
                ylabel="test PSNR (dB)",
                logx=True,
                errors={"AE": [1.96 * p.se for p in psnr]},
            ),
            "Test-set PSNR of each AE's reconstructions (95% intervals over images); the control reconstructs "
            "every image as the mean training image.",
        ),
        Figure(
            "bottleneck_reconstructions",
            partial(
                figures.image_grid,
                torch.cat([art.originals] + [art.reconstructions[n] for n in names]),
                nrow=len(art.originals),
                row_labels=["test images"] + [f"{s}-d" for s in sizes],
            ),
            "Top row: test images; below: reconstructions by AEs with growing bottlenecks.",
        ),
    ]
    rows = [
        [n, s, p.value, 1.96 * p.se, m.models[n].reconstruction.ssim, m.models[n].reconstruction.mse]
        + _reconstruction_fids(m, n)
        for n, s, p in zip(names, sizes, psnr, strict=True)
    ]
    spatial = [p.name for p in m.planned(lambda p: p.spatial_row)]
    rows += [_spatial_row(m, n) for n in spatial]
    rows.append(
        ["mean image (control)", "n/a", control.value, 1.96 * control.se, "n/a", "n/a"] + ["n/a"] * len(m.judges)
    )
    columns = ["model", "bottleneck", "PSNR (dB)", "+- (95%)", "SSIM ([0, 1], range 1)", "MSE"]
    caption = " ".join(
        (["Spatial-latent autoencoders (" + ", ".join(spatial) + ") are listed for latent diffusion; no verdict reads "
          "their rows."] if spatial else [])
        + (["rFID: the model's reconstructions of test images against the same images in each judge's features "
            "(0 = perfect; no verdict reads it)."] if m.judges else [])
        + [_codebook_note(n, m.models[n].codebook) for n in spatial if m.models[n].codebook is not None]
    )  # fmt: skip
    table = Table("bottleneck", columns + [f"rFID ({j})" for j in m.judges], rows, caption)
    claim = "A wider bottleneck reconstructs better: PSNR rises with its size, and every AE beats the mean image."
    return _section("bottleneck", "1. Bottleneck", claim, verdict, figs, [table]), verdict


def _spatial_row(m: Measured, name: str) -> list[Any]:
    """Section 1's row of a spatial-latent autoencoder (its latent size is not a point of the sweep)."""
    p, r = m.psnr(name), m.models[name].reconstruction
    return [name, "spatial", p.value, 1.96 * p.se, r.ssim, r.mse] + _reconstruction_fids(m, name)


def _codebook_note(name: str, usage: CodebookUsage) -> str:
    return (
        f"{name} uses {usage.codes_used} of its {usage.codebook_size} codes on the test images (perplexity "
        f"{usage.perplexity:.1f})."
    )


def _reconstruction_fids(m: Measured, name: str) -> list[Any]:
    """The model's rFID in each judge ("n/a" where not scored)."""
    fids = [m.models[name].reconstruction_fid(j) for j in m.judges]
    return [("n/a" if f is None else f.value) for f in fids]


# --- 2. VAE ----------------------------------------------------------------------------------------------


def vae_section(m: Measured) -> tuple[Section, Verdict] | None:
    vae = m.planned(lambda p: m.can(p.name, Capability.ELBO))
    ae = m.shared_ae
    if not vae or ae is None:
        return None
    name = vae[0].name
    by_judge = {  # unconditional: the VAE's prior against the AE's Gaussian fitted to all its latents
        j: (m.fid(name, j, True), m.fid(ae, j, True), m.fid_gap(name, ae, j, True))
        for j in m.judges
        if m.fid(name, j, True) is not None and m.fid(ae, j, True) is not None
    }
    verdict = m.rule("vae", rules.vae_prior, by_judge, m.voters(QUALITY))
    lik = m.models[name].likelihood
    art = m.artifacts
    figs = [
        Figure(
            "vae_samples", partial(figures.image_grid, art.samples[name][:64], nrow=8), "Samples of the VAE's prior."
        ),
        Figure(
            "ae_samples",
            partial(figures.image_grid, art.samples[ae][:64], nrow=8),
            f"Samples of {ae}: a Gaussian fitted to its latents, decoded.",
        ),
    ]
    if art.interpolation is not None:
        figs.append(
            Figure(
                "vae_interpolation",
                partial(figures.image_grid, art.interpolation, nrow=len(art.interpolation) // 4),
                "Each row decodes a straight line in the VAE's latent space between two test images.",
            )
        )
    tables = [
        Table(
            "vae_fid",
            ["judge", "VAE FID", "AE FID", "AE minus VAE", "+- (95%, paired)"],
            [[j, v.value, a.value, g.value, 1.96 * g.se] for j, (v, a, g) in by_judge.items()],
        ),
        Table(
            "vae_likelihood",
            ["bound", "nats / image", "bits/dim"],
            [
                ["ELBO", lik.nll_elbo_nats, lik.elbo_bits_per_dim],
                [f"IWAE, k={lik.iwae_k}", lik.nll_iwae_nats, lik.iwae_bits_per_dim],
            ],
            f"{lik.num_images} test images, {lik.data}; IWAE +- {1.96 * lik.iwae_bits_per_dim_se:.3f} "
            "bits/dim (95%, over images).",
        ),
    ]
    claim = (
        "Sampling the VAE's prior gives better images than sampling a Gaussian fitted to a plain AE's latents "
        "(same bottleneck), in every judge."
    )
    return _section("vae", "2. Variational autoencoder", claim, verdict, figs, tables), verdict


# --- 3. DAE ----------------------------------------------------------------------------------------------


def _denoising_level(m: Measured, claimant: str, compared: str, sigma: float, dae: str) -> DenoisingLevel | None:
    """claimant minus compared at ``sigma``, and the DAE's own gain over the noisy input there (``dae``: the
    claimant in section 3, the compared model in section 5; once the compared model's in both, so section 3's
    table and its testability check read the plain AE's gain as the DAE's)."""
    a, b, d = m.denoised(claimant, sigma), m.denoised(compared, sigma), m.denoised(dae, sigma)
    if a is None or b is None or d is None:
        return None
    return DenoisingLevel(sigma, paired_difference(a.psnr, b.psnr), paired_difference(d.psnr, d.psnr_noisy))


def dae_section(m: Measured) -> tuple[Section, Verdict] | None:
    daes = m.planned(lambda p: p.sweep == "noise")
    ae = m.shared_ae
    if not daes or ae is None:
        return None
    measured = {p.name: _denoising_level(m, p.name, ae, p.noise_sigma, dae=p.name) for p in daes}
    levels = [lv for lv in measured.values() if lv is not None]
    probes = []
    ae_probe = m.probe_noisy(ae)
    for p in daes:
        for sigma, hits in m.probe_noisy(p.name).items():
            if sigma in ae_probe:
                probes.append((p.name, float(sigma), paired_proportion_difference(hits, ae_probe[sigma])))
    verdict = m.rule("dae", rules.dae_denoising, levels, probes)
    rows = [
        [name, lv.sigma, lv.gap.value, 1.96 * lv.gap.se, lv.model_vs_identity.value]
        for name, lv in measured.items()
        if lv is not None
    ]
    figs = [
        Figure(
            "dae_denoising",
            partial(
                figures.bar_plot,
                {f"{r[0]} / AE at {r[1]:g}": r[2] for r in rows},
                title="DAE minus AE, PSNR at the DAE's training level",
                ylabel="PSNR gain (dB)",
                errors={f"{r[0]} / AE at {r[1]:g}": r[3] for r in rows},
            ),
            "Positive bars: the DAE denoises its own noise level better than the plain AE (95% intervals, paired "
            "over the same noisy images).",
        )
    ]
    probe_rows = [[n, s, g.value, 1.96 * g.se] for n, s, g in probes]
    if probes:
        figs.append(
            Figure(
                "probe_accuracy",
                partial(
                    figures.bar_plot,
                    {f"{n} at {s:g}": g.value for n, s, g in probes},
                    title="Linear probe on latents of noisy inputs: DAE minus AE accuracy",
                    ylabel="accuracy gain",
                    errors={f"{n} at {s:g}": 1.96 * g.se for n, s, g in probes},
                ),
                "A logistic regression fitted on clean training latents, scored on the latents of noisy test images "
                "at noise levels fixed in advance (not the DAEs' own).",
            )
        )
    tables = [
        Table("dae_denoising", ["model", "sigma", "DAE minus AE (dB)", "+- (95%)", "DAE minus noisy input (dB)"], rows),
        Table("latent_probes", ["model", "probe sigma", "accuracy gain over the AE", "+- (95%)"], probe_rows),
    ]
    claim = (
        "A DAE denoises at its training level better than the plain AE, and its latents are more robust: a linear "
        "probe loses less accuracy on noisy inputs (noise levels fixed in advance)."
    )
    return _section("dae", "3. Denoising autoencoders", claim, verdict, figs, tables), verdict


# --- 4. manifold -----------------------------------------------------------------------------------------


def manifold_section(m: Measured) -> tuple[Section, Verdict] | None:
    controls = m.artifacts.knn_controls
    latent = [p.name for p in m.planned(lambda p: m.knn_hits(p.name) is not None)]
    if not controls or not latent:
        return None
    gaps, rows = {}, []
    for name in latent:
        hits = m.knn_hits(name)
        dim = m.models[name].latent_space.latent_dim
        mine = {
            "raw pixels": controls[RAW_PIXELS],
            f"random projection to {dim}-d": controls[f"random projection {dim}"],
            "the untrained network": controls[f"untrained {name}"],
        }
        gaps[name] = {c: paired_proportion_difference(hits, v) for c, v in mine.items()}
        rows.append([name, dim, float(hits.mean()), *(float(v.mean()) for v in mine.values())])
    verdict = m.rule("manifold", rules.manifold, gaps)
    codes = m.artifacts.codes
    shown = [
        n for n in (m.shared_ae, "vae", *[p.name for p in m.planned(lambda p: p.sweep == "noise")][1:2]) if n in codes
    ]
    figs = []
    if shown:
        shown_codes = {n: codes[n] for n in shown}
        figs.append(
            Figure(
                "latent_maps_pca",
                partial(_latent_maps, shown_codes, "pca", "Latent space, PCA to 2-D"),
                "Test-set latents of each model, projected by PCA, coloured by class.",
            )
        )
        if umap_available():
            umap = partial(_latent_maps, shown_codes, "umap", "Latent space, UMAP")
            figs.append(Figure("latent_maps_umap", umap, "UMAP."))
    table = Table(
        "knn",
        ["model", "latent dim", "k-NN accuracy", "raw pixels", "random projection", "untrained network"],
        rows,
        f"k-NN (k = 5) on standardized codes, {len(controls[RAW_PIXELS])} test images; gaps paired over them.",
    )
    claim = (
        "Training makes every autoencoder's latent space cluster the classes: k-NN accuracy of its latents beats "
        "raw pixels, a random projection of the pixels to the same dimension, and the same network untrained."
    )
    return _section("manifold", "4. The learned manifold", claim, verdict, figs, [table]), verdict


# --- 5. one diffusion model for every noise level ----------------------------------------------------------


def _psnr_matrix(m: Measured, names: list[str], kinds: list[tuple[str, float]]) -> np.ndarray:
    """One-step PSNR [len(names), len(kinds)] of each model at each (corruption kind, level); NaN where the
    model was not asked (the diffusion model does not fill masks)."""
    matrix = np.full((len(names), len(kinds)), math.nan)
    for i, name in enumerate(names):
        for row in m.models[name].denoising or []:
            if row.steps == 1 and (row.kind, row.level) in kinds:
                matrix[i, kinds.index((row.kind, row.level))] = row.psnr
    return matrix


def noise_levels_section(m: Measured) -> tuple[Section, Verdict] | None:
    diffusion, daes = m.subject, m.planned(lambda p: p.sweep == "noise")
    if diffusion is None or not daes:
        return None
    levels = [lv for p in daes if (lv := _denoising_level(m, diffusion, p.name, p.noise_sigma, dae=p.name)) is not None]
    verdict = m.rule("noise_levels", rules.noise_levels, levels)
    diff_rows = _psnr_rows(m.models[diffusion])
    sigmas = sorted(diff_rows)
    series = {
        "noisy input (control)": (sigmas, [diff_rows[s].psnr_noisy for s in sigmas]),
        "diffusion, 1 step": (sigmas, [diff_rows[s].psnr for s in sigmas]),
    }
    k = m.denoise_steps
    multi = _psnr_rows(m.models[diffusion], steps=k)
    if multi:
        series[f"diffusion, {k} steps"] = (sigmas, [_level_psnr(multi.get(s)) for s in sigmas])
    others = [p.name for p in daes] + [n for n in (m.shared_ae,) if n]
    for name in others:
        rows = _psnr_rows(m.models[name])
        series[name] = (sigmas, [_level_psnr(rows.get(s)) for s in sigmas])
    grid_models = [diffusion, *others, *[p.name for p in m.planned(lambda p: m.can(p.name, Capability.ELBO))]]
    kinds = [(r.kind, r.level) for r in m.models[others[-1]].denoising]
    matrix = _psnr_matrix(m, grid_models, kinds)
    figs = [
        Figure(
            "denoising_sweep",
            partial(
                figures.line_plot,
                series,
                title="Denoising: PSNR against noise level",
                xlabel="Gaussian sigma ([-1, 1] pixel units)",
                ylabel="PSNR against the clean image (dB)",
                logx=True,
            ),
            "Every model denoises the same noisy test images; DAEs were each trained at one sigma, the diffusion "
            "model at all. Where the noisy input (doing nothing) scores above a DAE, no claim about that level "
            "can be tested.",
        ),
        Figure(
            "denoising_table",
            partial(
                figures.heatmap,
                matrix,
                grid_models,
                [f"{k_} {lv:g}" for k_, lv in kinds],
                title="PSNR (dB) by corruption",
            ),
            "Gaussian noise and masking; the diffusion model is not asked to fill masked pixels (blank).",
        ),
    ]
    table = Table(
        "noise_levels",
        ["sigma", "diffusion minus DAE (dB)", "+- (95%)", "DAE minus noisy input (dB)", "testable"],
        [
            [
                lv.sigma,
                lv.gap.value,
                1.96 * lv.gap.se,
                lv.model_vs_identity.value,
                rules.decide(lv.model_vs_identity, rules.PSNR_MARGIN) == "holds",
            ]
            for lv in levels
        ],
    )
    claim = (
        "A single diffusion model, told the noise level, denoises each DAE's own noise level at least as well as "
        f"that DAE (within {rules.PSNR_MARGIN} dB), at every level where the DAE beats doing nothing."
    )
    return _section(
        "noise_levels", "5. One diffusion model for every noise level", claim, verdict, figs, [table]
    ), verdict


def _latent_maps(codes: dict[str, tuple[np.ndarray, np.ndarray]], method: str, title: str) -> bytes:
    """The scatter maps of each model's (codes, labels), projected to 2-D by ``method`` ("pca", "umap")."""
    maps = {n: (latent_map(c, method, seed=0), labels) for n, (c, labels) in codes.items()}
    return figures.scatter_maps(maps, title=title)


# --- 6. blurry at high noise -------------------------------------------------------------------------------


def blur_section(m: Measured) -> tuple[Section, Verdict] | None:
    x0 = m.sections.x0
    if x0 is None:
        return None
    verdict = m.rule("blur", rules.blur_trend, x0.rho)
    predictions = m.artifacts.x0_predictions  # [len(sigmas), 6, C, H, W]
    rows = predictions.transpose(0, 1).reshape(-1, *predictions.shape[2:])
    shares, errors = x0.high_frequency_share, [1.96 * e for e in x0.high_frequency_share_se]
    figs = [
        Figure(
            "predicted_x0",
            partial(figures.image_grid, rows, nrow=len(x0.sigmas), col_labels=[f"{s:g}" for s in x0.sigmas]),
            "Each row: one test image's predicted x0 at the noise levels on top (sigma, [-1, 1] pixel units).",
        ),
        Figure(
            "high_frequency_share",
            partial(
                figures.line_plot,
                {
                    "predicted x0": (x0.sigmas, shares),
                    "data": (x0.sigmas, [x0.data_high_frequency_share] * len(shares)),
                },
                title="High-frequency share of the predicted x0",
                xlabel="sigma",
                ylabel="share of power above half the Nyquist frequency",
                logx=True,
                errors={"predicted x0": errors},
            ),
            "Power above half the Nyquist frequency, as a share of all (mean removed); "
            f"{x0.num_images} test images, 95% intervals.",
        ),
    ]
    claim = (
        "The predicted x0 loses its fine detail as the noise level rises: the high-frequency share of its power "
        f"spectrum falls with sigma (Spearman rho below {-rules.TREND_MARGIN:g}, with its interval)."
    )
    return _section("blur", "6. Blurry at high noise, sharp at low noise", claim, verdict, figs), verdict


# --- 7. skips --------------------------------------------------------------------------------------------


def skips_section(m: Measured) -> tuple[Section, Verdict] | None:
    ablation = m.planned(lambda p: p.ablation_of is not None)
    losses = m.sections.held_out_loss or {}
    if not ablation or ablation[0].ablation_of not in losses or ablation[0].name not in losses:
        return None
    without, full = ablation[0].name, ablation[0].ablation_of
    la, lb = losses[full], losses[without]
    loss_gap = paired_difference(lb.chunks, la.chunks, "chunks of 25 images")
    fids = {
        j: (m.fid(full, j), m.fid(without, j), m.fid_gap(full, without, j))
        for j in m.judges
        if m.fid(full, j) is not None and m.fid(without, j) is not None
    }
    verdict = m.rule("skips", rules.skips, loss_gap, la.loss.value, lb.loss.value, fids, m.voters(QUALITY))
    steps = (m.models[full].training_speed.steps, m.models[without].training_speed.steps)
    runs_of = m.meta.runs
    curves = {"with skips": _logged(runs_of[full]), "without skips": _logged(runs_of[without])}
    grads = {"with skips": la.gradient_norms, "without skips": lb.gradient_norms}
    blocks = list(dict.fromkeys([*la.gradient_norms, *lb.gradient_norms]))  # union, network order
    figs = [
        Figure(
            "skip_loss",
            partial(
                figures.line_plot,
                {k: v for k, v in curves.items() if v[0]},
                title="Training loss",
                xlabel="step",
                ylabel="loss",
                logy=True,
            ),
            "Logged training loss of the two networks.",
        ),
        Figure(
            "gradient_norms",
            partial(
                figures.line_plot,
                {k: ([blocks.index(b) for b in v], list(v.values())) for k, v in grads.items()},
                title="Gradient norm per block (network order)",
                xlabel="block index (see table)",
                ylabel="L2 norm of the gradient",
                logy=True,
            ),
            "One training batch; blocks in network order, encoder to decoder.",
        ),
    ]
    tables = [
        Table(
            "skips",
            ["measure", "with skips", "without skips"],
            [["held-out loss", la.loss.value, lb.loss.value], ["training steps in the budget", *steps]]
            + [[f"FID ({j})", a.value, b.value] for j, (a, b, _) in fids.items()],
        ),
        Table(
            "gradient_norms",
            ["block", "with skips", "without skips"],
            [[b, la.gradient_norms.get(b, "n/a"), lb.gradient_norms.get(b, "n/a")] for b in blocks],
        ),
    ]
    claim = (
        "At equal budget, skip connections give a lower held-out diffusion loss and a better FID in every judge "
        "than the same network without them."
    )
    notes = f"Training steps in the same budget: {steps[0]} with skips, {steps[1]} without."
    return _section("skips", "7. A U-Net is an autoencoder with skips", claim, verdict, figs, tables, notes), verdict


def _logged(run: str | Path, key: str = "loss") -> tuple[list[float], list[float]]:
    steps, values = [], []
    path = Path(run) / "log.jsonl"
    if path.exists():
        for line in path.read_text().splitlines():
            row = json.loads(line)
            if key in row and math.isfinite(row[key]):
                steps.append(float(row["step"]))
                values.append(float(row[key]))
    return steps, values


# --- 8. conditioning -------------------------------------------------------------------------------------


def conditioning_section(m: Measured) -> tuple[Section, Verdict] | None:
    sweep = m.sections.guidance
    if sweep is None or not sweep.rows:
        return None
    rows = sorted(sweep.rows.values(), key=lambda r: r.guidance)
    low, high = rows[0], rows[-1]
    correct = m.artifacts.guidance_correct
    gain = paired_proportion_difference(correct[f"{high.guidance:g}"], correct[f"{low.guidance:g}"])
    guided = Estimate(high.accuracy, high.accuracy_se, high.samples)
    verdict = m.rule("conditioning", rules.guidance, gain, guided, 1 / sweep.num_classes, high.guidance)
    w, class_images = m.artifacts.class_grid
    scales = [r.guidance for r in rows]
    figs = [
        Figure(
            "class_grid",
            partial(
                figures.image_grid,
                class_images,
                nrow=len(class_images) // sweep.num_classes,
                row_labels=[str(d) for d in range(sweep.num_classes)],
            ),
            f"Class-conditioned samples at guidance {w:g}, one row per class.",
        ),
        Figure(
            "guidance",
            partial(
                figures.line_plot,
                {
                    "accuracy": (scales, [r.accuracy for r in rows]),
                    "chance (control)": (scales, [1 / sweep.num_classes] * len(rows)),
                },
                title="Conditional accuracy against guidance",
                xlabel="guidance scale",
                ylabel="accuracy",
                errors={"accuracy": [1.96 * r.accuracy_se for r in rows]},
            ),
            "Share of samples the classifier assigns to the requested class (95% binomial intervals).",
        ),
        Figure(
            "guidance_fid",
            partial(
                figures.line_plot,
                {
                    "FID": (scales, [r.score.fid for r in rows]),
                    "recall x 10": (scales, [10 * r.score.recall for r in rows]),
                },
                title="Quality-diversity trade-off",
                xlabel="guidance scale",
                ylabel="FID / recall x 10",
            ),
            "FID and recall of the conditional samples against the test split (classifier judge).",
        ),
    ]
    prompts = m.sections.prompts
    notes = ""
    if prompts is not None:
        names, images = m.artifacts.prompt_grid
        figs.append(
            Figure(
                "prompt_grid",
                partial(
                    figures.image_grid, images, nrow=8, row_labels=[fill_template(prompts.template, n) for n in names]
                ),
                "Text-conditioned latent diffusion: one row per caption, guidance 3.",
            )
        )
        notes = f"Text prompts (latent diffusion, guidance 3): accuracy {prompts.accuracy:.3f} of {prompts.samples}."
        if prompts.classes_named_by_index:
            notes += ' The data has no class names; classes are named by index ("class 0", "class 1", ...).'
    table = Table(
        "guidance",
        ["guidance", "accuracy", "+- (95%)", "FID", *INTERVAL_COLUMNS, "samples"],
        [
            [r.guidance, r.accuracy, 1.96 * r.accuracy_se, r.score.fid, *_with_intervals(r.score), r.samples]
            for r in rows
        ],
    )
    claim = (
        "Classifier-free guidance raises conditional accuracy (paired over samples from the same noise and "
        f"labels, highest scale against 1), and the guided samples beat chance by {rules.CHANCE_MARGIN:g}."
    )
    return _section("conditioning", "8. Conditioning and guidance", claim, verdict, figs, [table], notes), verdict


# --- 9. one table, and the budget curves ------------------------------------------------------------------


def _is_diffusion(m: Measured, name: str) -> bool:
    return m.can(name, Capability.DIFFUSION_SAMPLER)


def summary_section(m: Measured) -> tuple[Section, Verdict]:
    scored = [p.name for p in m.plan if not p.judge and p.name in m.models and m.models[p.name].generation_by_judge]
    generative = [p.name for p in m.planned(lambda p: p.name in scored)]
    verdict = _summary_verdict(m, generative)
    figs = [_fid_figure(m, scored, j) for j in m.judges]
    if m.sections.curves:
        figs += [_curve_figure(m.sections.curves, j) for j in m.judges]
    tables = [_summary_table(m)]
    referenced = [n for n in scored if m.referenced(n, True)]
    if referenced:
        tables.append(_unconditional_table(m, referenced))
    balanced = [n for n in scored if m.models[n].class_balance is not None]
    if balanced:
        tables.append(_balance_table(m, balanced))
    warnings = sorted({w for n in scored for score in m.models[n].generation_by_judge.values() for w in score.warnings})
    curve_text = budget_leaders(m.sections.curves or {}, m)
    notes = " ".join(
        [_summary_scoring(m, scored, generative)]
        + ([f"Budget curves (the first seed's models; which family leads at each budget fraction): {curve_text}."]
           if curve_text else [])
        + (["Numbers not to trust: " + " ".join(warnings)] if warnings else [])
    ).strip()  # fmt: skip
    claim = (
        "Every diffusion model generates better samples than every member of the autoencoder family (FID, by 10% "
        "of the smaller, in every judge); the curves say which family leads at which budget."
    )
    return _section("summary", "9. Every model in one table", claim, verdict, figs, tables, notes), verdict


def _summary_scoring(m: Measured, scored: list[str], generative: list[str]) -> str:
    """Which samples section 9's verdict scores and why, with the verdict the unconditional ones would give."""
    by_class = [n for n in scored if m.models[n].generation.condition == BY_DATA_CLASS]
    if not scored:
        return ""
    if not by_class:
        return "Samples are unconditional: the data has no labels to draw classes from."
    first = m.models[by_class[0]].generation
    others = [f"{n} ({m.models[n].generation.condition})" for n in scored if n not in by_class]
    text = (
        f"The verdict scores class-conditional samples on both sides: each model draws one sample for each of the "
        f"same {first.num_samples} labels, drawn from the training split's class frequencies (an autoencoder from a "
        "Gaussian fitted to each class's latents, the VAE's posterior means included; a diffusion model through "
        "its class or caption conditioning at guidance 1), so every model's samples are a draw of the data "
        "distribution. Unconditional samples would pit a conditioned diffusion model's null label, trained on "
        "the label-dropout share of its steps, against a Gaussian over all of an autoencoder's latents: a "
        "difference in how each side is asked, not in the family."
        + (f" Drawn otherwise: {', '.join(others)}." if others else "")
    )
    if any(m.referenced(n, True) for n in generative):
        reference = rules.summary(_fids_by_judge(m, generative, unconditional=True), m.voters(QUALITY))
        text += (
            " Scored on unconditional samples instead (the second table), the verdict would be "
            f"'{reference.verdict}': {reference.reason}."
        )
    return text


def _fids_by_judge(m: Measured, generative: list[str], unconditional: bool = False) -> dict[str, Any]:
    """``rules.summary``'s input: per judge (diffusion FIDs, autoencoder FIDs, paired gaps (AE, diffusion))."""
    diffusion = [n for n in generative if _is_diffusion(m, n)]
    autoencoders = [n for n in generative if not _is_diffusion(m, n)]
    by_judge = {}
    for j in m.judges:
        d = {n: m.fid(n, j, unconditional) for n in diffusion}
        a = {n: m.fid(n, j, unconditional) for n in autoencoders}
        gaps = {(x, y): m.fid_gap(y, x, j, unconditional) for x in autoencoders for y in diffusion}
        by_judge[j] = (d, a, gaps)
    return by_judge


def _summary_verdict(m: Measured, generative: list[str]) -> Verdict:
    """Section 9's verdict on the family (``generative``: its scored models)."""
    return m.rule("summary", rules.summary, _fids_by_judge(m, generative), m.voters(QUALITY))


SUMMARY_COLUMNS = [
    "+- (95%)",
    *INTERVAL_COLUMNS,
    "bits/dim",
    "NFE / sample",
    "samples / s",
    "train images / s",
    "train seconds",
]


def _with_intervals(score: Any) -> list[Any]:
    """KID, precision and recall of a FeatureScore, each followed by its 95% half-width (bootstrap; None for a
    record without draws): the values under ``INTERVAL_COLUMNS``."""
    out: list[Any] = []
    for name in ("kid", "precision", "recall"):
        estimate = score.estimate(name)
        out += [score.statistic(name)[0], 1.96 * estimate.se if estimate else None]
    return out


def _summary_row(m: Measured, name: str) -> list[Any]:
    """One model's row of section 9's table (None where it does not apply)."""
    x = m.models[name]
    g, speed, trained = x.generation, x.sampling_speed, x.training_speed
    fids = [m.fid(name, j) for j in m.judges]
    return (
        [name, x.family, x.trainable_parameters]
        + [f.value if f else None for f in fids]
        + [1.96 * fids[0].se if fids and fids[0] else None]
        + (_with_intervals(g) if g is not None else [None] * len(INTERVAL_COLUMNS))
        + [x.likelihood.bits_per_dim if x.likelihood is not None else None]
        + ([speed.nfe, speed.images_per_second] if speed is not None else [None] * 2)
        + ([trained.images_per_second, trained.wall_seconds] if trained is not None else [None] * 2)
    )


def _summary_table(m: Measured) -> Table:
    rows = [_summary_row(m, p.name) for p in m.plan if not p.judge and p.name in m.models]
    return Table(
        "summary",
        ["model", "family", "parameters"] + [f"FID ({j})" for j in m.judges] + SUMMARY_COLUMNS,
        [[("n/a" if v is None else v) for v in r] for r in rows],
        "FID of the samples the verdict scores (class-conditional on labelled data, see the text) in each judge's "
        "features against the test split (+- for the first judge, bootstrap); KID / precision / "
        "recall in the first judge's, each +- a 95% bootstrap half-width from the same resamples; bits/dim: IWAE "
        "for the VAE, the variational bound for pixel diffusion."
        + (" Peers (--peer: " + ", ".join(p.name for p in m.plan if p.peer) + ") are scored with the same protocol "
           "and listed here; the verdict is about the family alone." if any(p.peer for p in m.plan) else ""),
    )  # fmt: skip


def _balance_table(m: Measured, names: list[str]) -> Table:
    """Section 9's class-balance table: how the judge classifier reads each model's scored samples."""
    rows = []
    for name in names:
        b = m.models[name].class_balance
        interval = f"[{b.confident_low:.3f}, {b.confident_high:.3f}]"
        test = "rejects" if b.rejects else "does not reject"
        extremes = " / ".join(map(str, b.rarest_and_commonest))
        rows.append([name, m.models[name].family, b.confident_share, interval, b.chi_square, b.p_value, test, extremes])
    return Table(
        "summary_class_balance",
        ["model", "family", "confident share", "95% interval", "chi-square", "p", "data's frequencies at 1%",
         "rarest / commonest class"],
        rows,
        "How the judge classifier reads the scored samples: the share it reads with probability 0.9 or more (Wilson "
        "interval), and Pearson's chi-square test of the histogram of their top classes against the test split's "
        "class frequencies (classes drawn from the data's frequencies should not be rejected).",
    )  # fmt: skip


def _unconditional_table(m: Measured, names: list[str]) -> Table:
    """Section 9's second table: FID of each model's unconditional samples in each judge, for reference."""
    rows = []
    for name in names:
        fids = [m.fid(name, j, True) for j in m.judges]
        first = next(iter(m.scores(name, True).values()))
        rows.append(
            [name, m.models[name].family]
            + [("n/a" if f is None else f.value) for f in fids]
            + [1.96 * fids[0].se if fids and fids[0] else "n/a", first.num_samples]
        )
    return Table(
        "summary_unconditional",
        ["model", "family"] + [f"FID ({j})" for j in m.judges] + ["+- (95%)", "samples"],
        rows,
        "Unconditional samples, for reference (not the verdict's): the null condition of a conditioned diffusion "
        "model, the Gaussian fitted to all of an autoencoder's latents (the prior of the VAE); fewer samples than "
        "the first table, so their FIDs sit higher by the smaller sample alone. +- for the first judge, bootstrap.",
    )


def _fid_figure(m: Measured, scored: list[str], judge: str) -> Figure:
    values = {n: m.fid(n, judge) for n in scored}
    return Figure(
        f"fid_{judge.replace('-', '_')}",
        partial(
            figures.bar_plot,
            {n: v.value for n, v in values.items() if v},
            title=f"FID of every model's samples ({judge} judge)",
            ylabel="FID (lower is better)",
            errors={n: 1.96 * v.se for n, v in values.items() if v},
        ),
        m.sections.judges[judge],
    )


def _curve_figure(curves: dict[str, list[CurvePoint]], judge: str) -> Figure:
    series, errors = {}, {}
    for name, points in curves.items():
        series[name] = ([p.train_seconds or 0.0 for p in points], [p.judges[judge].fid for p in points])
        errors[name] = [1.96 * (p.judges[judge].fid_se or 0.0) for p in points]
    return Figure(
        f"budget_curve_{judge.replace('-', '_')}",
        partial(
            figures.line_plot,
            series,
            title=f"FID against training time ({judge} judge)",
            xlabel="training time (s)",
            ylabel="FID (lower is better)",
            logy=True,
            errors=errors,
        ),
        "Each model evaluated at the snapshots kept at fixed fractions of its budget and at the end, "
        "from the same number of samples (95% bootstrap intervals).",
    )


def budget_leaders(curves: dict[str, list[CurvePoint]], m: Measured) -> str:
    """At each budget fraction and in each judge: which family's best model has the lowest FID, and whether
    the lead over the other family's best clears the paired interval."""
    if not curves:
        return ""
    fractions = sorted({p.fraction for points in curves.values() for p in points})
    texts = []
    for j in m.judges:
        parts = []
        for f in fractions:
            at = {
                n: next(p for p in pts if p.fraction == f).judges[j]
                for n, pts in curves.items()
                if any(p.fraction == f for p in pts)
            }
            best_diffusion = min((n for n in at if _is_diffusion(m, n)), key=lambda n: at[n].fid, default=None)
            best_ae = min((n for n in at if not _is_diffusion(m, n)), key=lambda n: at[n].fid, default=None)
            if best_diffusion is None or best_ae is None:
                continue
            d, a = at[best_diffusion], at[best_ae]
            gap = difference_of_draws(a.fid, a.fid_draws_values, d.fid, d.fid_draws_values)
            lead = rules.decide(gap, rules.FID_RELATIVE_MARGIN * min(a.fid, d.fid))
            leader = {"holds": f"diffusion ({best_diffusion})", "does not hold": f"autoencoders ({best_ae})"}.get(
                lead, "neither, conclusively"
            )
            parts.append(f"{f:.0%}: {leader}")
        if parts:
            texts.append(f"[{j}] " + ", ".join(parts))
    return "; ".join(texts)


# --- 10. inferring the missing pieces ------------------------------------------------------------------------

MISSING_BINS = ((0.0, 0.2), (0.2, 0.4), (0.4, 1.0))  # share of an image's pixels a mask hid


def _restoration_gap(who, control, degradation: str) -> rules.RestorationGap:
    gap = paired_difference(who.per_image.psnr, control.per_image.psnr, "images and masks")
    return rules.RestorationGap(who.who, degradation, control.who, gap)


def _restorer(m: Measured, role: str) -> str | None:
    """The evaluated model section 10 gives ``role`` ("masking", "plain", "diffusion"), if any."""
    found = m.planned(lambda p: p.restorer == role)
    return found[0].name if found else None


def restoration_section(m: Measured) -> tuple[Section, Verdict] | None:
    sweep = m.sections.restoration
    if sweep is None or not sweep.rows:
        return None
    rows = sweep.rows
    masking, diffusion = [], []
    dae, plain = _restorer(m, "masking"), _restorer(m, "plain")
    own = [r for r in rows if r.model == dae and r.degradation == sweep.own]
    if own:
        others = [*sweep.controls(sweep.own), *(r for r in rows if r.model == plain and r.degradation == sweep.own)]
        masking = [_restoration_gap(own[0], control, sweep.own) for control in others]
    subject = _restorer(m, "diffusion")
    for degradation in sweep.degradations:
        default = next((r for r in rows if r.model == subject and r.degradation == degradation
                        and r.method == "ddnm"), None)  # fmt: skip
        if default is not None:  # the claim is about the default method, chosen before any number was seen
            diffusion += [_restoration_gap(default, c, degradation) for c in sweep.controls(degradation)]
    verdict = m.rule("restoration", rules.infers_missing, masking, diffusion)
    tables = [_restoration_table(m, sweep), _missing_bins_table(sweep)]
    figs = [
        Figure(
            f"restoration_{i}",
            partial(_restoration_grid, sweep, degradation),
            f"{degradation}: the originals, the degraded input (holes at mid-grey, a low-resolution image "
            "copied up), then each method's restoration (known pixels kept).",
        )
        for i, degradation in enumerate(sweep.degradations)
    ]
    sigmas = ", ".join(f"{kind} {sigma:g}" for kind, sigma in sweep.one_pass_sigma.items())
    notes = (
        f"{sweep.images} test images; the masks are drawn once and shared by every method. The diffusion model's "
        f"one pass reads A^+ y noised to the level chosen on validation images from the training split ({sigmas})."
        if sigmas
        else f"{sweep.images} test images; the masks are drawn once and shared by every method."
    )
    claim = (
        "A masking DAE infers the missing pieces of its own kind of mask, better than classical inpainting and "
        "than a plain AE of its shape; and one diffusion model, never trained to restore, does it for every mask "
        "and for super-resolution (DDNM), better than the classical controls."
    )
    return _section("restoration", "10. Inferring the missing pieces", claim, verdict, figs, tables, notes), verdict


def _restoration_table(m: Measured, sweep) -> Table:
    judges = m.judges
    rows = [
        [r.degradation, r.missing_fraction, r.who, r.psnr, 1.96 * r.psnr_se, r.ssim,
         *(r.composite_fid.get(j) for j in judges), r.network_evaluations, r.seconds_per_image]
        for r in sweep.rows
    ]  # fmt: skip
    rows.sort(key=lambda row: sweep.degradations.index(row[0]))
    return Table(
        "restoration",
        ["degradation", "missing", "model (method) or control", "PSNR on missing (dB)", "+- (95%)", "SSIM",
         *(f"composite FID ({j})" for j in judges), "NFE", "s / image"],
        rows,
        "PSNR on the missing pixels (every pixel for super-resolution), SSIM of the whole image; FID of the "
        f"{sweep.images} composites against the test split (no interval: compare within a degradation only).",
    )  # fmt: skip


def _missing_bins_table(sweep) -> Table:
    """Mean PSNR on the missing pixels of every mask's images, binned by the share each image lost."""
    names = list(dict.fromkeys(r.who for r in sweep.rows if r.kind == "mask"))
    rows = []
    for name in names:
        psnr = np.concatenate([r.per_image.psnr for r in sweep.rows if r.who == name and r.kind == "mask"])
        lost = np.concatenate([r.missing_per_image for r in sweep.rows if r.who == name and r.kind == "mask"])
        cells = []
        for low, high in MISSING_BINS:
            inside = (lost >= low) & (lost < high)
            cells.append(float(psnr[inside].mean()) if inside.any() else None)
        rows.append([name, *cells])
    columns = [f"{low:.0%}-{high:.0%} missing" for low, high in MISSING_BINS]
    return Table(
        "restoration_by_missing",
        ["model (method) or control", *columns],
        rows,
        "Mean PSNR (dB) on the missing pixels over every mask's images, by the share of the image each mask hid.",
    )


def _restoration_grid(sweep, degradation: str) -> bytes:
    shown = [r for r in sweep.rows if r.degradation == degradation]
    images = torch.cat([sweep.originals, shown[0].degraded_examples, *(r.examples for r in shown)])
    labels = ["original", "degraded", *(r.who for r in shown)]
    return figures.image_grid(images, nrow=len(sweep.originals), row_labels=labels, title=degradation)


# --- 11. the diffusion model's own manifold --------------------------------------------------------------------


def diffusion_manifold_section(m: Measured) -> tuple[Section, Verdict] | None:
    probes = m.sections.network_features
    controls = m.artifacts.knn_controls
    if probes is None or probes.knn_hits is None or not controls:
        return None
    hits = probes.knn_hits
    mine = {
        "raw pixels": controls[RAW_PIXELS],
        f"a random projection to {probes.feature_dim}-d": controls[f"random projection {probes.feature_dim}"],
        "the untrained U-Net": probes.untrained_hits,
    }
    gaps = {c: paired_proportion_difference(hits, v) for c, v in mine.items()}
    latents = [p.name for p in m.planned(lambda p: m.knn_hits(p.name) is not None)]
    peers = {n: paired_proportion_difference(hits, m.knn_hits(n)) for n in latents if n == m.shared_ae}
    verdict = m.rule("diffusion_manifold", rules.diffusion_manifold, gaps, peers)
    rows = [[f"diffusion U-Net ({probes.level}, sigma {probes.sigma:g})", probes.feature_dim, float(hits.mean()),
             probes.linear_probe_accuracy]]  # fmt: skip
    rows += [[f"{n} latents", m.models[n].latent_space.latent_dim, float(m.knn_hits(n).mean()),
              m.models[n].latent_space.linear_probe_accuracy] for n in latents]  # fmt: skip
    rows += [[c, None, float(np.mean(v)), None] for c, v in mine.items()]
    tried = ", ".join(f"{s}: {a:.3f}" for s, a in probes.validation_knn.items())
    table = Table(
        "diffusion_manifold",
        ["representation", "width", "k-NN accuracy", "linear probe"],
        rows,
        f"k-NN (k = 5) on standardized features, {len(hits)} test images; gaps paired over them. The noise level "
        f"was chosen by k-NN on validation images carved from the training split ({tried}).",
    )
    claim = (
        "The diffusion model learns the data's manifold too: its U-Net's bottleneck features, at a moderate noise "
        "level, cluster the classes better than raw pixels, a random projection and the untrained U-Net, and "
        "about as well as (or better than) the autoencoder's latents."
    )
    section = _section("diffusion_manifold", "11. The diffusion model's own manifold", claim, verdict, (), [table])
    return section, verdict


# --- the report ----------------------------------------------------------------------------------------------

BUILDERS = (
    bottleneck_section,
    vae_section,
    dae_section,
    manifold_section,
    noise_levels_section,
    blur_section,
    skips_section,
    conditioning_section,
    summary_section,
    restoration_section,
    diffusion_manifold_section,
)


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def build_sections(
    results: ComparisonResults, meta: ReportMeta, plan, denoise_steps: int = 1
) -> dict[str, tuple[Section, Ruling]]:
    """One seed's measurements -> its sections (figures drawn) by key, each with the ruling that decided it."""
    measured = Measured(results.models, results.sections, results.artifacts, meta, list(plan), denoise_steps)
    built = [b(measured) for b in BUILDERS]
    return {section.key: (section, measured.rulings[section.key]) for section, _ in filter(None, built)}


def build_report(
    results: dict[int, ComparisonResults],
    meta: ReportMeta,
    plan,
    out: Path,
    denoise_steps: int = 1,
    runs: dict[int, dict[str, Path]] | None = None,
    snapshots: dict[float, ComparisonResults] | None = None,
) -> tuple[ComparisonReport, dict[str, Path]]:
    """Turn ``evaluate_all``'s results, by training seed, into the sections; write report.html,
    metrics.json (the returned ``ComparisonReport``), CSVs, PNGs. The first seed's figures and tables are
    shown; every verdict is pooled over the seeds (``aediff.reports.seeds``). ``runs``: each seed's run
    folders, recorded for every seed after the first; ``snapshots``: the first seed's models evaluated at
    fractions of their budget, each section's verdict there recorded beside its own (budget stability).
    Returns (the report's record, the paths written)."""
    by_seed = {seed: build_sections(r, meta, plan, denoise_steps) for seed, r in results.items()}
    first, *others = results
    sections, verdicts = [], {}
    at_fraction = {f: build_sections(r, meta, plan, denoise_steps) for f, r in sorted((snapshots or {}).items())}
    for key, (section, _) in by_seed[first].items():
        rulings = {seed: _ruling(built, key) for seed, built in by_seed.items()}
        pooled = over_seeds(rulings)
        seed_verdicts = {str(k): v for k, v in pooled.per_seed.items()} if others else {}
        budget = {f"{f:.0%}": built[key][1].verdict().verdict for f, built in at_fraction.items() if key in built}
        budget = {**budget, "100%": pooled.per_seed[first]} if budget else {}
        verdicts[key] = ClaimVerdict(section.claim, pooled.verdict, seed_verdicts, pooled.stability, budget)
        notes = " ".join(filter(None, [section.notes, budget_sentence(budget, first)]))
        changed = dict(verdict=pooled.verdict.verdict, evidence=pooled.verdict.reason, notes=notes)
        sections.append(dataclasses.replace(section, **changed))
    meta.report = str(Path(out) / "report.html")
    meta.seeds = list(results)
    folders = {s: {k: str(v) for k, v in (runs or {}).get(s, {}).items()} for s in others}
    seed_runs = [SeedRun(s, folders[s], results[s].models, results[s].sections) for s in others]
    record = ComparisonReport(meta, results[first].models, verdicts, results[first].sections, seed_runs)
    training = training_table(results[first].models, list(plan), meta)
    html = render_report(
        f"aediff compare: {meta.data}",
        sections,
        summary_rows=overview_rows(verdicts, list(results)),
        meta=_header(meta, results[first].sections),
        meta_tables=[training],
    )
    all_figures = [f for s in sections for f in s.figures]
    all_tables = [training, *(t for s in sections for t in s.tables)]
    return record, write_report(out, html, all_figures, all_tables, record.to_json())


def _ruling(built: dict[str, tuple[Section, Ruling]], key: str) -> Ruling:
    if key not in built:  # a section one seed could build and another could not: nothing to pool
        raise ValueError(f"section {key!r} was not measured for every training seed")
    return built[key][1]


def budget_sentence(budget: dict[str, str], seed: int) -> str:
    """Where a section's verdict holds along the budget: "" without snapshots."""
    if not budget:
        return ""
    at = ", ".join(f"{v} at {f}" for f, v in budget.items())
    if len(set(budget.values())) == 1:
        return f"Budget stability (seed {seed}): the same verdict at every snapshot ({at} of the budget)."
    return f"Budget stability (seed {seed}): the verdict changes along the budget ({at} of the budget)."


def overview_rows(verdicts: dict[str, ClaimVerdict], seeds: list[int]) -> list[dict[str, Any]]:
    """The report's "at a glance" table: each section's verdict and, with several training seeds, each
    seed's own verdict and the stability (the share of seeds that reach the section's verdict alone)."""
    rows = []
    for key, v in verdicts.items():
        row: dict[str, Any] = {"section": key, "verdict": v.verdict.verdict}
        if len(seeds) > 1:
            row["stability"] = f"{round(v.stability * len(seeds))} of {len(seeds)} seeds"
            row.update({f"seed {s}": v.seed_verdicts[str(s)] for s in seeds})
        if v.budget_verdicts:
            row[f"along the budget, seed {seeds[0]} ({', '.join(v.budget_verdicts)})"] = " / ".join(
                v.budget_verdicts.values()
            )
        rows.append(row)
    return rows


def _seeds_line(seeds: list[int]) -> str:
    if len(seeds) > 1:
        return (
            f"{len(seeds)} ({', '.join(map(str, seeds))}): every model but the judge trained once per seed; each "
            "verdict is its rule on the measurements pooled over the seeds (t intervals that include the spread "
            "between seeds), inconclusive where two seeds reach opposite verdicts; figures and tables show the "
            f"first seed ({seeds[0]})"
        )
    return (
        f"one ({seeds[0]}): the verdicts are about these trained runs, not the method; their intervals cover "
        "the evaluation's noise, not training's (a rerun with another seed can change them: docs/compare.md "
        "measures how often); run with --seeds 3 for verdicts about the method"
    )


def _snapshots_line(fractions) -> str:
    if not fractions:
        return (
            "not measured in this run (--snapshots none): each section's verdict is the end of the budget's alone"
            " and section 9's budget curves have one point; docs/compare.md measures it at these settings"
        )
    at = ", ".join(f"{f:.0%}" for f in fractions)
    return f"every section's verdict again from the first seed's snapshots at {at} of the budget"


def _header(meta: ReportMeta, sections: ComparisonSections) -> dict[str, str]:
    """The report's header lines: what was compared, under which budget, on what, with which versions."""
    return {
        "dataset": meta.data,
        "budget": budget_line(meta),
        "date": meta.date,
        "machine": f"{meta.cpu or meta.machine}, {meta.threads} threads, {meta.device}",
        "time": f"{_duration(meta.wall_seconds)} in all: {_duration(meta.train_seconds)} training, "
        f"{_duration(meta.eval_seconds)} evaluation",
        "training seeds": _seeds_line(meta.seeds),
        **({"budget stability": _snapshots_line(meta.snapshots)} if meta.snapshots is not None else {}),
        "judges": "; ".join(f"{k}: {v}" for k, v in sections.judges.items()),
        "versions": f"aediff {meta.aediff}, torch {meta.torch}, python {meta.python}",
        "command": meta.command,
    }
