"""Every verdict rule of the report, on synthetic measurements that make it hold, not hold and be
inconclusive, and on measurements where the control wins."""

import pytest

from aediff.metrics.stats import Estimate
from aediff.reports import verdicts as v
from aediff.reports.verdicts import DenoisingLevel


def E(value, se=0.0):  # noqa: N802 - reads like the maths
    return Estimate(value, se, 100)


# --- decide ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "gap, margin, non_inferiority, expected",
    [
        (E(1.0, 0.1), 0.1, False, "holds"),  # interval [0.80, 1.20] clears +0.1
        (E(0.25, 0.1), 0.1, False, "inconclusive"),  # [0.05, 0.45]: not clear of +0.1
        (E(-1.0, 0.1), 0.1, False, "does not hold"),  # the control wins by the margin
        (E(0.0, 0.01), 0.1, False, "does not hold"),  # a tie measured precisely: no effect as large as 0.1
        (E(0.0, 0.1), 0.1, False, "inconclusive"),  # [-0.20, +0.20]: a gain of 0.1 is not ruled out
        (E(0.05, 0.02), 0.1, False, "does not hold"),  # [0.01, 0.09]: ahead, but by less than the margin
        (E(0.0, 0.01), 0.1, True, "holds"),  # ... but is "at least as good, within 0.1"
        (E(-0.5, 0.1), 0.1, True, "does not hold"),
        (E(-0.1, 0.1), 0.1, True, "inconclusive"),
    ],
)
def test_decide(gap, margin, non_inferiority, expected):
    assert v.decide(gap, margin, non_inferiority) == expected


def test_a_point_estimate_that_clears_the_margin_is_not_enough_when_its_interval_does_not():
    assert v.decide(E(0.5, 0.0), 0.1) == "holds"
    assert v.decide(E(0.5, 0.3), 0.1) == "inconclusive"


# --- a null effect measured precisely: every superiority rule says "does not hold" ------------------------------
TIGHT = 0.001  # a standard error far below every margin

NULL_EFFECTS = {
    "1 bottleneck": lambda: v.bottleneck([4, 16], [E(21.0, TIGHT)] * 2, [E(0.0, TIGHT)], E(12.0, TIGHT)),
    "2 vae prior": lambda: v.vae_prior({"classifier": (E(5.0, TIGHT), E(5.0, TIGHT), E(0.0, TIGHT))}),
    "3 dae denoising": lambda: v.dae_denoising([DenoisingLevel(0.3, E(0.0, TIGHT), E(3.0, TIGHT))], []),
    "4 manifold": lambda: v.manifold({"ae-4": {"raw pixels": E(0.0, TIGHT)}}),
    "7 skips": lambda: v.skips(E(0.0, TIGHT), 0.15, 0.15, {"classifier": (E(20.0), E(20.0), E(0.0, TIGHT))}),
    "8 guidance": lambda: v.guidance(E(0.0, TIGHT), E(0.8, TIGHT), 0.1, 5),
    "8 guidance at chance": lambda: v.guidance(E(0.3, TIGHT), E(0.1, TIGHT), 0.1, 5),  # once "inconclusive"
    "9 summary": lambda: v.summary(
        {"classifier": ({"diffusion": E(3.0, TIGHT)}, {"ae-4": E(3.0, TIGHT)}, {("ae-4", "diffusion"): E(0.0, TIGHT)})}
    ),
    "10 infers missing": lambda: v.infers_missing(
        [v.RestorationGap("dae-mask", "random 0.3", "mean fill", E(0.0, TIGHT))],
        [v.RestorationGap("diffusion", "box 10", "mean fill", E(0.0, TIGHT))],
    ),
    "11 diffusion manifold": lambda: v.diffusion_manifold({"raw pixels": E(0.0, TIGHT)}, {}),
}


@pytest.mark.parametrize("section", NULL_EFFECTS)
def test_a_precisely_measured_null_effect_does_not_hold(section):
    """Once "inconclusive" in sections 1, 2, 3, 4, 7, 8 and 9: the rules could reject only a control that wins
    by the margin, never a claim whose effect is measured to be zero."""
    assert NULL_EFFECTS[section]().verdict == "does not hold"


# --- section 1 -------------------------------------------------------------------------------------------


def _bottleneck(psnrs, gains, control=E(12.0, 0.1)):
    return v.bottleneck([4, 16, 64], [E(p, 0.1) for p in psnrs], [E(g, 0.05) for g in gains], control)


def test_bottleneck_flips():
    assert _bottleneck([16, 21, 24], [5, 3]).verdict == "holds"
    assert _bottleneck([16, 21, 21], [5, 0.0]).verdict == "does not hold"  # no gain at the last step, measured
    wide = v.bottleneck([4, 16, 64], [E(p, 0.1) for p in (16, 21, 21)], [E(5, 0.05), E(0.0, 0.2)], E(12.0, 0.1))
    assert wide.verdict == "inconclusive"  # the same, too noisy to rule out a gain of 0.1 dB
    assert _bottleneck([16, 21, 19], [5, -2]).verdict == "does not hold"


def test_bottleneck_control_wins():
    """The mean image reconstructs as well as the smallest AE: the claim cannot hold."""
    verdict = _bottleneck([16, 21, 24], [5, 3], control=E(17.0, 0.1))
    assert verdict.verdict == "does not hold"
    assert "mean training image" in verdict.reason


# --- section 2 -------------------------------------------------------------------------------------------


def _vae(vae_fid, ae_fid, se=0.2):
    return {"classifier": (E(vae_fid, se), E(ae_fid, se), E(ae_fid - vae_fid, se))}


def test_vae_flips():
    assert v.vae_prior(_vae(5.0, 10.0)).verdict == "holds"
    assert v.vae_prior(_vae(10.0, 5.0)).verdict == "does not hold"
    assert v.vae_prior(_vae(5.0, 5.3)).verdict == "inconclusive"


def test_vae_judges_disagree_is_inconclusive():
    by_judge = {**_vae(5.0, 10.0), "classifier-layers": _vae(10.0, 5.0)["classifier"]}
    verdict = v.vae_prior(by_judge)
    assert verdict.verdict == "inconclusive"
    assert "disagree" in verdict.reason


# --- section 3 -------------------------------------------------------------------------------------------


def _level(sigma, gap, vs_identity=3.0):
    return DenoisingLevel(sigma, E(gap, 0.05), E(vs_identity, 0.05))


def test_dae_flips():
    probes = [("dae-0.3", 0.2, E(0.05, 0.01))]
    assert v.dae_denoising([_level(0.3, 1.0), _level(0.75, 2.0)], probes).verdict == "holds"
    assert v.dae_denoising([_level(0.3, -1.0), _level(0.75, 2.0)], probes).verdict == "does not hold"
    assert v.dae_denoising([_level(0.3, 0.1), _level(0.75, 2.0)], probes).verdict == "inconclusive"
    worse_probe = [("dae-0.3", 0.2, E(-0.05, 0.01))]
    assert v.dae_denoising([_level(0.3, 1.0)], worse_probe).verdict == "does not hold"


def test_dae_level_where_the_identity_wins_is_untestable():
    """At sigma 0.1 the noisy input beats the DAE: that level cannot support the claim, either way."""
    verdict = v.dae_denoising([_level(0.1, -5.0, vs_identity=-8.0), _level(0.3, 1.0)], [])
    assert verdict.verdict == "holds"
    assert "untestable at sigma 0.1" in verdict.reason
    assert v.dae_denoising([_level(0.1, 5.0, vs_identity=-8.0)], []).verdict == "inconclusive"


# --- section 4 -------------------------------------------------------------------------------------------


def _knn(gap, se=0.01):
    return {
        m: {c: E(gap, se) for c in ("raw pixels", "random projection", "untrained network")}
        for m in ("ae-4", "ae-16", "vae")
    }


def test_manifold_flips():
    assert v.manifold(_knn(0.1)).verdict == "holds"
    assert v.manifold(_knn(-0.1)).verdict == "does not hold"
    assert v.manifold(_knn(0.01, se=0.02)).verdict == "inconclusive"


def test_manifold_raw_pixels_win_for_one_model():
    """Raw pixels as good as one model's latents (the review found 0.858 for pixels): the claim says
    every autoencoder, so one loss is enough."""
    gaps = _knn(0.1)
    gaps["ae-4"]["raw pixels"] = E(-0.06, 0.01)
    verdict = v.manifold(gaps)
    assert verdict.verdict == "does not hold"
    assert any(p.verdict == "does not hold" and p.control == "raw pixels" for p in verdict.parts)


# --- section 5 -------------------------------------------------------------------------------------------


def test_noise_levels_flips():
    assert v.noise_levels([_level(0.3, 2.0), _level(0.75, 0.0)]).verdict == "holds"  # a tie is within the margin
    assert v.noise_levels([_level(0.3, 2.0), _level(0.75, -1.0)]).verdict == "does not hold"
    # 0.09 dB worse with an interval reaching below -0.1: no longer "holds" by default
    assert v.noise_levels([_level(0.3, -0.09)]).verdict == "inconclusive"


def test_noise_levels_identity_wins_everywhere():
    """Where the do-nothing denoiser beats every DAE, the claim cannot be tested at all."""
    verdict = v.noise_levels([_level(0.1, 8.0, vs_identity=-8.0)])
    assert verdict.verdict == "inconclusive"
    assert "untestable" in verdict.reason


# --- section 6 -------------------------------------------------------------------------------------------


def test_blur_flips():
    assert v.blur_trend(E(-0.95, 0.02)).verdict == "holds"
    assert v.blur_trend(E(0.9, 0.05)).verdict == "does not hold"
    assert v.blur_trend(E(-0.6, 0.2)).verdict == "inconclusive"


def test_blur_control_no_trend():
    """No trend (rho 0, measured tightly) is the control winning: the claim does not hold."""
    assert v.blur_trend(E(0.0, 0.1)).verdict == "does not hold"
    assert v.blur_trend(E(0.0, 0.4)).verdict == "inconclusive"  # too noisy to tell


def test_blur_weak_fall_does_not_hold():
    """The 30-second demo's case: detail falls up to sigma 5 and returns at sigma 20, rho -0.40 in
    [-0.43, -0.37]: a fall confidently weaker than the claim's, not "inconclusive"."""
    verdict = v.blur_trend(E(-0.40, 0.0175))
    assert verdict.verdict == "does not hold"
    assert "-0.40" in verdict.reason


# --- section 7 -------------------------------------------------------------------------------------------


def _skips(loss_gap, fid_gap, se=0.002):
    fids = {"classifier": (E(20.0), E(20.0 + fid_gap), E(fid_gap, 0.5))}
    return v.skips(E(loss_gap, se), 0.15, 0.15 + loss_gap, fids)


def test_skips_flips():
    assert _skips(0.05, 10.0).verdict == "holds"
    assert _skips(-0.05, -10.0).verdict == "does not hold"
    assert _skips(0.05, 0.5).verdict == "does not hold"  # the FID gap is measured to be inside its margin
    noisy = {"classifier": (E(20.0), E(21.0), E(1.0, 1.5))}  # [-1.9, 3.9] straddles the margin of 2
    assert v.skips(E(0.05, 0.002), 0.15, 0.2, noisy).verdict == "inconclusive"


def test_skips_control_wins_on_loss():
    assert _skips(-0.05, 10.0).verdict == "does not hold"


# --- section 8 -------------------------------------------------------------------------------------------


def test_guidance_flips():
    assert v.guidance(E(0.3, 0.02), E(0.88, 0.01), 0.1, 5).verdict == "holds"
    assert v.guidance(E(-0.2, 0.02), E(0.5, 0.02), 0.1, 5).verdict == "does not hold"
    assert v.guidance(E(0.01, 0.02), E(0.8, 0.02), 0.1, 5).verdict == "inconclusive"


def test_guidance_near_chance_is_not_a_success():
    """The review's faces case: accuracy 0.020 -> 0.050 where chance is 0.025. The paired gain clears
    zero, but the guided accuracy is within a few points of chance, so the claim is not supported."""
    gain = Estimate(0.03, 0.011, 400)
    guided = Estimate.proportion(20, 400)
    assert v.guidance(gain, guided, 1 / 40, 5).verdict != "holds"


# --- section 9 -------------------------------------------------------------------------------------------


def _summary(diffusion_fid, ae_fids, se=0.3):
    diffusion = {"diffusion": E(diffusion_fid, se)}
    aes = {n: E(f, se) for n, f in ae_fids.items()}
    gaps = {(a, "diffusion"): E(f - diffusion_fid, se) for a, f in ae_fids.items()}
    return {"classifier": (diffusion, aes, gaps)}


def test_summary_flips():
    assert v.summary(_summary(2.0, {"ae-4": 3.5, "vae": 20.0})).verdict == "holds"
    assert v.summary(_summary(29.8, {"ae-4": 3.5, "vae": 20.0})).verdict == "does not hold"
    assert v.summary(_summary(3.4, {"ae-4": 3.5, "vae": 20.0})).verdict == "inconclusive"  # within 10%


def test_summary_needs_every_diffusion_model_and_names_the_best_autoencoder():
    fids = _summary(2.0, {"ae-4": 3.5})
    diffusion, aes, gaps = fids["classifier"]
    diffusion["latent-diffusion"] = E(10.0, 0.3)
    gaps[("ae-4", "latent-diffusion")] = E(-6.5, 0.3)
    verdict = v.summary(fids)
    assert verdict.verdict == "does not hold"
    assert "ae-4" in verdict.reason


def test_summary_judges_disagree():
    fids = {**_summary(2.0, {"ae-4": 3.5}), "classifier-layers": _summary(9.0, {"ae-4": 3.5})["classifier"]}
    assert v.summary(fids).verdict == "inconclusive"


# --- section 10 ------------------------------------------------------------------------------------------


def _restoration(dae_gap, diffusion_gap, se=0.05):
    g = lambda who, deg, control, gap: v.RestorationGap(who, deg, control, E(gap, se))  # noqa: E731
    masking = [g("dae-mask (one-pass)", "random 0.3", c, dae_gap) for c in ("mean fill", "biharmonic", "ae-16")]
    diffusion = [
        g("diffusion (ddnm)", deg, c, diffusion_gap)
        for deg, controls in (("box 10", ("mean fill", "biharmonic")), ("2x super-resolution", ("nearest", "bicubic")))
        for c in controls
    ]
    return masking, diffusion


def test_infers_missing_flips():
    assert v.infers_missing(*_restoration(2.0, 3.0)).verdict == "holds"
    assert v.infers_missing(*_restoration(-2.0, -3.0)).verdict == "does not hold"
    assert v.infers_missing(*_restoration(0.1, 0.1)).verdict == "inconclusive"  # not clear of the 0.1 dB margin


def test_infers_missing_one_control_winning_on_one_degradation_is_enough_to_fail():
    """Biharmonic inpainting beating diffusion on super-resolution's bicubic control alone decides it."""
    masking, diffusion = _restoration(2.0, 3.0)
    diffusion[-1] = v.RestorationGap("diffusion (ddnm)", "2x super-resolution", "bicubic", E(-0.5, 0.05))
    verdict = v.infers_missing(masking, diffusion)
    assert verdict.verdict == "does not hold"
    assert [p.control for p in verdict.parts if p.verdict == "does not hold"] == ["bicubic"]


def test_infers_missing_masking_dae_losing_to_the_plain_ae_fails_the_claim():
    masking, diffusion = _restoration(2.0, 3.0)
    masking[-1] = v.RestorationGap("dae-mask (one-pass)", "random 0.3", "ae-16", E(-1.0, 0.05))
    assert v.infers_missing(masking, diffusion).verdict == "does not hold"


def test_infers_missing_without_either_side_is_inconclusive():
    masking, diffusion = _restoration(2.0, 3.0)
    assert v.infers_missing([], diffusion).verdict == "inconclusive"
    assert "masking DAE" in v.infers_missing([], diffusion).reason
    assert v.infers_missing(masking, []).verdict == "inconclusive"


# --- section 11 ------------------------------------------------------------------------------------------

_FEATURE_CONTROLS = ("raw pixels", "a random projection to 64-d", "the untrained U-Net")


def test_diffusion_manifold_flips():
    controls = lambda gap, se=0.01: {c: E(gap, se) for c in _FEATURE_CONTROLS}  # noqa: E731
    assert v.diffusion_manifold(controls(0.1), {"ae-16": E(0.0, 0.01)}).verdict == "holds"
    assert v.diffusion_manifold(controls(-0.1), {"ae-16": E(0.0, 0.01)}).verdict == "does not hold"
    assert v.diffusion_manifold(controls(0.015, 0.02), {"ae-16": E(0.0, 0.01)}).verdict == "inconclusive"


def test_diffusion_manifold_trailing_the_autoencoder_beyond_the_margin_fails():
    """Features that beat every control but trail the AE's latents by 10 points are not "similar"; within
    the 5-point margin they are."""
    controls = {c: E(0.1, 0.01) for c in _FEATURE_CONTROLS}
    assert v.diffusion_manifold(controls, {"ae-16": E(-0.10, 0.01)}).verdict == "does not hold"
    assert v.diffusion_manifold(controls, {"ae-16": E(-0.02, 0.01)}).verdict == "holds"
    assert v.diffusion_manifold(controls, {"ae-16": E(-0.05, 0.01)}).verdict == "inconclusive"


def test_verdicts_serialise():
    verdict = v.summary(_summary(2.0, {"ae-4": 3.5}))
    d = verdict.to_dict()
    assert d["verdict"] == "holds" and d["parts"][0]["judge"] == "classifier"


# --- a judge fit for each claim -----------------------------------------------------------------------------------
def test_a_judge_not_shown_to_see_the_claims_property_reports_but_does_not_vote():
    """The review's case: a blur-blind judge made a quality verdict inconclusive ("the judges disagree").
    With only the judge that sees blur voting, its verdict decides, and the other's is still reported."""
    by_judge = {
        "classifier": (E(5.0, 0.2), E(5.1, 0.2), E(0.1, 0.2)),  # cannot tell the two apart
        "classifier-layers": (E(5.0, 0.2), E(12.0, 0.2), E(7.0, 0.2)),  # sees the AE's blur
    }
    everyone = v.vae_prior(by_judge)  # every judge voting: the blind one says no, so they disagree
    assert everyone.verdict == "inconclusive" and everyone.reason.startswith("the judges disagree")
    voted = v.vae_prior(by_judge, frozenset({"classifier-layers"}))
    assert voted.verdict == "holds" and "[classifier, reports only: not shown to see this]" in voted.reason
    assert [p.judge for p in voted.parts] == ["classifier", "classifier-layers"]  # both still in the record
    assert v.vae_prior(by_judge, frozenset()).verdict == "inconclusive"  # no judge qualifies: all vote


def test_the_sections_vote_with_the_judges_recorded_to_see_image_quality():
    from aediff.evaluation.results import ComparisonSections
    from aediff.reports.sections import QUALITY, Measured

    seen = {"classifier": ["class content"], "classifier-layers": ["class content", "image quality"]}
    m = Measured({}, ComparisonSections(judges=dict.fromkeys(seen, ""), judge_sees=seen), None, None, [])
    assert m.voters(QUALITY) == frozenset({"classifier-layers"}) and m.voters("class content") == frozenset(seen)
    assert Measured({}, ComparisonSections(judges=dict.fromkeys(seen, "")), None, None, []).voters(QUALITY) is None
