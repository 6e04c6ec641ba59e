"""What each section hands to its rule and prints in its table, checked against a direct computation on a small
fixture of per-image scores: a mislabelled or swapped number fails here, where the rule tests cannot see it."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from aediff.evaluation.results import (
    CodebookUsage,
    ComparisonSections,
    DataRecord,
    DenoisingRow,
    ImageScores,
    ModelEvaluation,
    Reconstruction,
    Settings,
)
from aediff.reports.compare import PlannedModel
from aediff.reports.evaluate import ComparisonArtifacts
from aediff.reports.sections import (
    Measured,
    blur_section,
    bottleneck_section,
    conditioning_section,
    dae_section,
    diffusion_manifold_section,
    manifold_section,
    noise_levels_section,
    restoration_section,
    skips_section,
    vae_section,
)

SIGMA = 0.3
NOISY = np.random.default_rng(0).normal(15.0, 1.0, 200)  # the noisy inputs' PSNR (dB), per image


def _denoiser(family: str, gain_db: float) -> ModelEvaluation:
    """A model whose denoised PSNR is the noisy input's plus ``gain_db`` on every image, at SIGMA."""
    x = ModelEvaluation(family, ["latent"], 10, 10, DataRecord("toy:test", 200, 1000), Settings(200, 0, 200))
    psnr = NOISY + gain_db
    scores = ImageScores(np.zeros(200), psnr, np.zeros(200), psnr_noisy=NOISY, ssim_noisy=np.zeros(200))
    row = DenoisingRow(f"gaussian:{SIGMA}", "gaussian", SIGMA, 1, float(psnr.mean()), float(NOISY.mean()),
                       0.0, 0.0, 0.0, 200, 0.01, 0.01, 0.0, per_image=scores)  # fmt: skip
    x.denoising = [row]
    return x


def test_section_3_prints_the_daes_gain_over_the_noisy_input_not_the_plain_aes():
    """Once its 'DAE minus noisy input' column held the plain AE's gains (-0.30 / 3.21 / 5.44 dB in the demo,
    where the DAE's were +0.29 / 4.28 / 7.15), and the rule's testability check read the same wrong number."""
    models = {"ae-8": _denoiser("ae", -0.3), "dae-0.3": _denoiser("dae", 4.0)}
    plan = [
        PlannedModel("ae-8", "ae", {}, "AE", "bottleneck", 8),
        PlannedModel("dae-0.3", "dae", {}, "DAE", "noise", 8, SIGMA),
    ]
    m = Measured(models, ComparisonSections(judges={}), ComparisonArtifacts(torch.zeros(1, 1, 8, 8)), None, plan)
    section, verdict = dae_section(m)
    (row,) = section.tables[0].rows
    assert section.tables[0].columns[2] == "DAE minus AE (dB)" and abs(row[2] - 4.3) < 1e-9
    assert section.tables[0].columns[4] == "DAE minus noisy input (dB)" and abs(row[4] - 4.0) < 1e-9
    assert verdict.verdict == "holds"  # testable: the DAE beats the noisy input (the AE, which loses, would not)
    (level,) = m.rulings["dae"].inputs[0]
    assert abs(level.model_vs_identity.value - 4.0) < 1e-9 and abs(level.gap.value - 4.3) < 1e-9


def test_section_5_hands_diffusion_minus_dae_and_the_daes_own_gain_to_its_rule():
    models = {"ae-8": _denoiser("ae", -0.3), "dae-0.3": _denoiser("dae", 4.0), "diffusion": _denoiser("diffusion", 4.5)}
    plan = [
        PlannedModel("ae-8", "ae", {}, "AE", "bottleneck", 8),
        PlannedModel("dae-0.3", "dae", {}, "DAE", "noise", 8, SIGMA),
        PlannedModel("diffusion", "diffusion", {}, "diffusion", subject=True),
    ]
    m = Measured(models, ComparisonSections(judges={}), ComparisonArtifacts(torch.zeros(1, 1, 8, 8)), None, plan)
    section, verdict = noise_levels_section(m)
    (row,) = section.tables[0].rows
    assert row[0] == SIGMA and abs(row[1] - 0.5) < 1e-9 and abs(row[3] - 4.0) < 1e-9 and row[4] is True
    assert verdict.verdict == "holds"  # at least as good as the DAE (non-inferiority), at a testable level


def _reconstructor(gain_db: float) -> ModelEvaluation:
    """An AE whose reconstruction PSNR is the mean image's plus ``gain_db`` on every test image."""
    x = ModelEvaluation("ae", ["latent"], 10, 10, DataRecord("toy:test", 200, 1000), Settings(200, 0, 200))
    psnr = MEAN_IMAGE + gain_db
    scores = ImageScores(np.zeros(200), psnr, np.full(200, 0.5))
    x.reconstruction = Reconstruction(0.01, 0.0, float(psnr.mean()), float(psnr.std() / 200**0.5), 0.5, 0.0, 200,
                                      per_image=scores)  # fmt: skip
    return x


MEAN_IMAGE = np.random.default_rng(1).normal(12.0, 1.0, 200)  # the mean training image's PSNR, per test image


def test_section_1_hands_each_aes_psnr_and_the_paired_gains_to_its_rule():
    models = {"ae-4": _reconstructor(3.0), "ae-16": _reconstructor(6.0), "ae-64": _reconstructor(6.05)}
    plan = [PlannedModel(n, "ae", {}, "AE", "bottleneck", int(n[3:])) for n in models]
    artifacts = ComparisonArtifacts(torch.zeros(1, 1, 8, 8), mean_image_psnr=MEAN_IMAGE)
    artifacts.reconstructions = {n: torch.zeros(1, 1, 8, 8) for n in models}
    m = Measured(models, ComparisonSections(judges={}), artifacts, None, plan)
    section, verdict = bottleneck_section(m)
    rows = section.tables[0].rows
    assert [r[:2] for r in rows] == [["ae-4", 4], ["ae-16", 16], ["ae-64", 64], ["mean image (control)", "n/a"]]
    expected = [MEAN_IMAGE.mean() + g for g in (3.0, 6.0, 6.05)] + [MEAN_IMAGE.mean()]
    assert np.allclose([r[2] for r in rows], expected)
    sizes, psnr, gains, control = m.rulings["bottleneck"].inputs
    assert sizes == [4, 16, 64] and np.allclose([g.value for g in gains], [3.0, 0.05])
    assert all(g.se < 1e-9 for g in gains)  # paired over the same images: the shared noise cancels
    assert verdict.verdict == "does not hold"  # 16 -> 64 gains 0.05 dB, measured exactly: below the 0.1 dB margin


def test_section_1_lists_the_spatial_autoencoders_beside_the_sweep_and_its_verdict_ignores_them():
    sweep = {"ae-4": _reconstructor(3.0), "ae-16": _reconstructor(6.0)}
    spatial = {"ae-spatial": _reconstructor(-5.0), "vqvae": _reconstructor(9.0)}  # worse than the control, better
    spatial["vqvae"].codebook = CodebookUsage(0.25, 80.5, 128, 512, 12800, 200)
    plan = [PlannedModel(n, "ae", {}, "AE", "bottleneck", int(n[3:])) for n in sweep]
    plan += [PlannedModel(n, n, {}, "spatial", spatial_row=True) for n in spatial]
    artifacts = ComparisonArtifacts(torch.zeros(1, 1, 8, 8), mean_image_psnr=MEAN_IMAGE)
    artifacts.reconstructions = {n: torch.zeros(1, 1, 8, 8) for n in sweep}
    m = Measured({**sweep, **spatial}, ComparisonSections(judges={}), artifacts, None, plan)
    section, verdict = bottleneck_section(m)
    table = section.tables[0]
    assert [r[:2] for r in table.rows] == [["ae-4", 4], ["ae-16", 16], ["ae-spatial", "spatial"], ["vqvae", "spatial"],
                                           ["mean image (control)", "n/a"]]  # fmt: skip
    assert np.isclose(table.rows[3][2], MEAN_IMAGE.mean() + 9.0)
    assert m.rulings["bottleneck"].inputs[0] == [4, 16]  # the rule sees the sweep alone
    assert verdict.verdict == "holds"  # ae-spatial loses to the mean image, yet no verdict reads its row
    assert "vqvae uses 128 of its 512 codes on the test images (perplexity 80.5)" in table.caption
    assert "Spatial-latent autoencoders (ae-spatial, vqvae)" in table.caption
    without = Measured(sweep, ComparisonSections(judges={}), artifacts, None, plan[:2])
    assert "Spatial" not in bottleneck_section(without)[0].tables[0].caption


def _scored(family: str, capabilities: list[str], fids: dict[str, float]) -> ModelEvaluation:
    """A generative model whose samples score ``fids`` (judge -> FID), with bootstrap draws that share the
    reference resamples: draw i is the FID plus a common offset."""
    from aediff.metrics import FeatureScore

    x = ModelEvaluation(family, capabilities, 10, 10, DataRecord("toy:test", 500, 1000), Settings(500, 0, 200))
    offsets = np.random.default_rng(0).normal(0, 0.5, 50)  # the same reference resamples for every model
    x.generation_by_judge = {
        j: FeatureScore(f, 0.0, 0.0, j, 500, 500, "toy:test", 0.5, 0.5, 3, fid_se=0.5,
                        fid_draws_values=list(f + offsets + 0.01 * np.arange(50) % 3))
        for j, f in fids.items()
    }  # fmt: skip
    return x


def test_section_2_hands_the_paired_fid_gaps_by_judge_and_lets_only_the_quality_judge_vote():
    from aediff.evaluation.results import VaeLikelihood

    vae = _scored("vae", ["latent", "generate", "elbo"], {"classifier": 5.0, "classifier-layers": 5.0})
    vae.likelihood = VaeLikelihood(90.0, 88.0, 0.16, 0.16, 0.001, 100, "bernoulli", "binarized", 200, 0)
    ae = _scored("ae", ["latent", "generate"], {"classifier": 5.05, "classifier-layers": 12.0})
    plan = [PlannedModel("ae-8", "ae", {}, "AE", "bottleneck", 8), PlannedModel("vae", "vae", {}, "VAE")]
    seen = {"classifier": ["class content"], "classifier-layers": ["class content", "image quality"]}
    sections = ComparisonSections(judges=dict.fromkeys(seen, ""), judge_sees=seen)
    artifacts = ComparisonArtifacts(
        torch.zeros(1, 1, 8, 8), samples={"vae": torch.zeros(1, 1, 8, 8), "ae-8": torch.zeros(1, 1, 8, 8)}
    )
    m = Measured({"ae-8": ae, "vae": vae}, sections, artifacts, None, plan)
    section, verdict = vae_section(m)
    rows = {r[0]: r for r in section.tables[0].rows}  # judge, VAE FID, AE FID, AE minus VAE, +-
    assert np.allclose(rows["classifier"][1:4], [5.0, 5.05, 0.05]) and np.allclose(
        rows["classifier-layers"][1:4], [5.0, 12.0, 7.0]
    )
    assert rows["classifier-layers"][4] < 0.1  # paired: the shared reference noise cancels
    # The blur-blind judge sees a 0.05 gap (a measured null: "does not hold") and does not vote; the layers judge does.
    assert verdict.verdict == "holds" and "reports only" in verdict.reason


def _guidance_measured(correct_low: np.ndarray, correct_high: np.ndarray) -> Measured:
    from aediff.evaluation.results import GuidanceRow, GuidanceSweep
    from aediff.metrics import score_features

    rng = np.random.default_rng(0)
    score = score_features(rng.normal(size=(60, 4)), rng.normal(size=(60, 4)), feature_extractor="c", reference="t")
    rows = {
        f"{w:g}": GuidanceRow(w, float(c.mean()), float(c.std() / len(c) ** 0.5), len(c), score)
        for w, c in ((1.0, correct_low), (5.0, correct_high))
    }
    sections = ComparisonSections(judges={"classifier": ""})
    sections.guidance = GuidanceSweep(rows, num_classes=10)
    artifacts = ComparisonArtifacts(torch.zeros(1, 1, 8, 8), class_grid=(5.0, torch.zeros(10, 1, 8, 8)))
    artifacts.guidance_correct = {"1": correct_low, "5": correct_high}
    return Measured({}, sections, artifacts, None, [])


def test_section_8_hands_the_paired_accuracy_gain_and_chance_to_its_rule():
    low = np.zeros(400, bool)
    low[:120] = True  # 30% at guidance 1
    high = low.copy()
    high[120:280] = True  # 70% at guidance 5, on the same samples' noise and labels
    section, verdict = conditioning_section(_guidance_measured(low, high))
    table = section.tables[0]
    assert table.columns[:4] == ["guidance", "accuracy", "+- (95%)", "FID"] and table.columns[-1] == "samples"
    assert [r[0] for r in table.rows] == [1.0, 5.0] and np.allclose([r[1] for r in table.rows], [0.3, 0.7])
    assert all(r[5] is not None and r[5] > 0 for r in table.rows)  # KID's interval, from the bootstrap draws
    assert verdict.verdict == "holds"


def test_section_8_fails_at_chance():
    """Once "inconclusive": accuracy at chance (0.1 with ten classes) could not fail the comparison with chance."""
    at_chance = np.zeros(400, bool)
    at_chance[:40] = True
    section, verdict = conditioning_section(_guidance_measured(at_chance, at_chance.copy()))
    assert verdict.verdict == "does not hold"


def test_section_4_hands_each_latents_paired_knn_gain_over_each_control():
    from aediff.evaluation.results import LatentHits, LatentProbes

    n = 400
    latents = np.zeros(n, bool)
    latents[:360] = True  # 90% k-NN accuracy on the latents
    pixels, projection, untrained = (np.arange(n) < k for k in (320, 200, 380))  # 80%, 50%, 95%
    ae = ModelEvaluation("ae", ["latent"], 10, 10, DataRecord("toy:test", n, 1000), Settings(n, 0, 200))
    ae.latent_space = LatentProbes(0.9, 0.9, {}, 8, 1000, n, per_image=LatentHits(latents, {}))
    controls = {"raw pixels": pixels, "random projection 8": projection, "untrained ae-8": untrained}
    artifacts = ComparisonArtifacts(torch.zeros(1, 1, 8, 8), knn_controls=controls)
    m = Measured({"ae-8": ae}, ComparisonSections(judges={}), artifacts, None, [PlannedModel("ae-8", "ae", {}, "AE")])
    section, verdict = manifold_section(m)
    (row,) = section.tables[0].rows
    assert row[:2] == ["ae-8", 8] and np.allclose(row[2:], [0.9, 0.8, 0.5, 0.95])
    gaps = m.rulings["manifold"].inputs[0]["ae-8"]
    assert np.allclose([g.value for g in gaps.values()], [0.1, 0.4, -0.05])
    assert verdict.verdict == "does not hold"  # the untrained network's features cluster better


def test_section_11_hands_the_unets_paired_gains_over_its_controls_and_the_ae():
    from aediff.evaluation.results import LatentHits, LatentProbes, NetworkFeatureProbes

    n = 400
    hits_of = lambda share: np.arange(n) < int(share * n)  # noqa: E731
    ae = ModelEvaluation("ae", ["latent"], 10, 10, DataRecord("toy:test", n, 1000), Settings(n, 0, 200))
    ae.latent_space = LatentProbes(0.9, 0.9, {}, 8, 1000, n, per_image=LatentHits(hits_of(0.9), {}))
    probes = NetworkFeatureProbes("unet-mid", 0.5, {"0.5": 0.88}, 0.88, 0.86, 0.3, 64, 1000, n,
                                  knn_hits=hits_of(0.88), untrained_hits=hits_of(0.3))  # fmt: skip
    sections = ComparisonSections(judges={})
    sections.network_features = probes
    controls = {"raw pixels": hits_of(0.8), "random projection 64": hits_of(0.5)}
    artifacts = ComparisonArtifacts(torch.zeros(1, 1, 8, 8), knn_controls=controls)
    plan = [PlannedModel("ae-8", "ae", {}, "AE", "bottleneck", 8)]
    m = Measured({"ae-8": ae}, sections, artifacts, None, plan)
    section, verdict = diffusion_manifold_section(m)
    accuracy = {r[0]: r[2] for r in section.tables[0].rows}
    assert np.allclose(list(accuracy.values()), [0.88, 0.9, 0.8, 0.5, 0.3])
    gaps, peers = m.rulings["diffusion_manifold"].inputs
    assert np.allclose([g.value for g in gaps.values()], [0.08, 0.38, 0.58]) and np.isclose(peers["ae-8"].value, -0.02)
    assert verdict.verdict == "holds"  # beats every control; 2 points behind the AE, within the 5-point margin


def _restoration_row(degradation: str, method: str, model: str, gain_db: float) -> Any:
    from aediff.evaluation.results import RestorationRow

    psnr = NOISY + gain_db  # per image, on the same images and masks for every method
    kind = "downsample" if "super" in degradation else "mask"
    scores = ImageScores(np.zeros(200), psnr, np.full(200, 0.5))
    return RestorationRow(degradation, kind, method, 0.3, float(psnr.mean()), 0.05, 0.5, 0.01, 0, 0.0, 200,
                          model=model, per_image=scores, missing_per_image=np.full(200, 0.3))  # fmt: skip


def test_section_10_hands_each_restorers_paired_gain_over_each_control():
    from aediff.evaluation.results import RestorationSweep

    rows = [
        _restoration_row("random 0.3", "mean fill", "", 0.0),
        _restoration_row("random 0.3", "biharmonic", "", 2.0),
        _restoration_row("random 0.3", "one-pass", "dae-mask", 3.0),
        _restoration_row("random 0.3", "one-pass", "ae-8", 1.0),
        _restoration_row("random 0.3", "ddnm", "diffusion", 2.5),
        _restoration_row("2x super-resolution", "bicubic", "", 1.0),
        _restoration_row("2x super-resolution", "ddnm", "diffusion", 0.5),  # loses to bicubic
    ]
    sections = ComparisonSections(judges={})
    sections.restoration = RestorationSweep(200, ["random:0.3", "sr:2"], "random 0.3", rows)
    plan = [
        PlannedModel("dae-mask", "dae", {}, "masking DAE", restorer="masking"),
        PlannedModel("ae-8", "ae", {}, "AE", restorer="plain"),
        PlannedModel("diffusion", "diffusion", {}, "diffusion", restorer="diffusion"),
    ]
    models = {p.name: ModelEvaluation(p.family, [], 1, 1, DataRecord("t", 200, 1), Settings(200, 0, 1)) for p in plan}
    m = Measured(models, sections, ComparisonArtifacts(torch.zeros(1, 1, 8, 8)), None, plan)
    section, verdict = restoration_section(m)
    masking, diffusion = m.rulings["restoration"].inputs
    assert [(g.control, round(g.gap.value, 9)) for g in masking] == [("mean fill", 3.0), ("biharmonic", 1.0),
                                                                       ("ae-8 (one-pass)", 2.0)]  # fmt: skip
    assert [(g.degradation, g.control, round(g.gap.value, 9)) for g in diffusion] == [
        ("random 0.3", "mean fill", 2.5), ("random 0.3", "biharmonic", 0.5), ("2x super-resolution", "bicubic", -0.5)
    ]  # fmt: skip
    table = {(r[0], r[2]): r[3] for r in section.tables[0].rows}
    assert np.isclose(table[("random 0.3", "dae-mask (one-pass)")], NOISY.mean() + 3.0)
    assert verdict.verdict == "does not hold"  # bicubic upsampling beats DDNM on super-resolution


def test_section_6_hands_spearmans_rho_of_the_recorded_shares_to_its_rule():
    from aediff.evaluation.results import X0Trend
    from aediff.metrics.stats import Estimate
    from aediff.reports.verdicts import spearman

    sigmas, shares = [0.1, 0.3, 1.0, 3.0], [0.30, 0.20, 0.08, 0.02]
    rho = Estimate(spearman(sigmas, shares), 0.05, 64)
    sections = ComparisonSections(judges={})
    sections.x0 = X0Trend(sigmas, shares, [0.01] * 4, 0.3, rho, 64)
    artifacts = ComparisonArtifacts(torch.zeros(1, 1, 8, 8), x0_predictions=torch.zeros(4, 6, 1, 8, 8))
    m = Measured({}, sections, artifacts, None, [])
    section, verdict = blur_section(m)
    assert m.rulings["blur"].inputs == (rho,) and rho.value == -1.0
    assert verdict.verdict == "holds" and "Spearman rho -1.00" in verdict.reason


def test_section_7_hands_the_paired_loss_gap_and_the_fids_by_judge_to_its_rule(tmp_path):
    from types import SimpleNamespace

    from aediff.evaluation.results import HeldOutLoss, TrainingSpeed
    from aediff.metrics.stats import Estimate

    fids = {"classifier": 5.0, "classifier-layers": 5.0}
    full, ablated = _scored("diffusion", [], fids), _scored("diffusion", [], {j: f + 4.0 for j, f in fids.items()})
    for x, steps in ((full, 900), (ablated, 1000)):
        x.training_speed = TrainingSpeed(100.0, steps, steps * 64, 60.0, 60.0)
    chunks_with = list(np.random.default_rng(2).normal(0.10, 0.01, 40))
    chunks_without = [c + 0.02 for c in chunks_with]  # 0.02 worse on every chunk of the same images and noise
    sections = ComparisonSections(judges=dict.fromkeys(fids, ""))
    sections.held_out_loss = {
        "diffusion": HeldOutLoss(chunks_with, Estimate.mean_of(np.array(chunks_with)), {"down.0": 1.0}),
        "diffusion-noskip": HeldOutLoss(chunks_without, Estimate.mean_of(np.array(chunks_without)), {"down.0": 2.0}),
    }
    plan = [
        PlannedModel("diffusion", "diffusion", {}, "U-Net", subject=True),
        PlannedModel("diffusion-noskip", "diffusion", {}, "no skips", ablation_of="diffusion"),
    ]
    meta = SimpleNamespace(runs={"diffusion": str(tmp_path / "a"), "diffusion-noskip": str(tmp_path / "b")})
    artifacts = ComparisonArtifacts(torch.zeros(1, 1, 8, 8))
    m = Measured({"diffusion": full, "diffusion-noskip": ablated}, sections, artifacts, meta, plan)
    section, verdict = skips_section(m)
    loss_gap, loss_with, loss_without, by_judge, voting = m.rulings["skips"].inputs
    assert np.isclose(loss_gap.value, 0.02) and loss_gap.se < 1e-9  # without minus with, paired over chunks
    assert np.isclose(loss_with, np.mean(chunks_with)) and np.isclose(loss_without, np.mean(chunks_without))
    assert {j: round(g.value, 9) for j, (_, _, g) in by_judge.items()} == dict.fromkeys(fids, 4.0)
    rows = {r[0]: r[1:] for r in section.tables[0].rows}
    assert rows["training steps in the budget"] == [900, 1000] and np.allclose(rows["FID (classifier)"], [5.0, 9.0])
    assert verdict.verdict == "holds"
