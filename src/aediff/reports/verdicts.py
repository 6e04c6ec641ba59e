"""The rules that turn measured numbers into a verdict: one small pure function per claim of the report.

Every rule takes ``Estimate``s (a value and its standard error, ``aediff.metrics.stats``) and returns a
``Verdict``: the verdict, the margin, the control the claim had to beat, and the reason in numbers. A
comparison "holds" only when the 95% interval of the gap clears the control by the margin, "does not
hold" when the whole interval lies below the margin (the control wins, or a null effect is measured
precisely), and is "inconclusive" when the interval straddles the margin (``decide``). Each rule is tested
on measurements that make it come out every way, and on ones where the control wins
(tests/test_verdicts.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from aediff.metrics.stats import Estimate

VerdictName = Literal["holds", "does not hold", "inconclusive"]

PSNR_MARGIN = 0.1  # dB: a smaller gain is not a gain
FID_RELATIVE_MARGIN = 0.10  # of the smaller FID
LOSS_RELATIVE_MARGIN = 0.02  # of the smaller held-out diffusion loss
# A paired accuracy difference under one point is not a difference: section 3 alone makes nine such
# comparisons, and with no margin one of them crosses zero at 95% about half the time by chance.
ACCURACY_MARGIN = 0.01
CHANCE_MARGIN = 0.10  # conditional accuracy must beat chance by this much (a few points above chance is noise)
KNN_MARGIN = 0.01  # a latent space must beat its controls' k-NN accuracy by a point, beyond the interval
TREND_MARGIN = 0.5  # |Spearman rho| a trend must clear (against no trend, rho = 0)
# Section 11: "similar in learning the manifold": the U-Net's features may trail an autoencoder's latents by at
# most five points of k-NN accuracy (about three standard errors of a paired difference on 1,000 test images)
MANIFOLD_PEER_MARGIN = 0.05


@dataclass(frozen=True)
class Verdict:
    """What a claim (or one part of it) came to.

    verdict: holds / does not hold / inconclusive; control: what the claim had to beat; margin: by how much
    (in the units of ``gap``); gap: claim minus control, positive when the claim is ahead; reason: one
    sentence with the numbers; judge: the feature space of a sample-quality verdict; parts: the
    comparisons a combined verdict rests on.
    """

    verdict: VerdictName
    control: str
    reason: str
    margin: float = 0.0
    gap: Estimate | None = None
    judge: str | None = None
    parts: tuple[Verdict, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "verdict": self.verdict,
            "control": self.control,
            "margin": self.margin,
            "reason": self.reason,
        }
        if self.gap is not None:
            out["gap"] = self.gap.to_dict()
        if self.judge is not None:
            out["judge"] = self.judge
        if self.parts:
            out["parts"] = [p.to_dict() for p in self.parts]
        return out


def decide(gap: Estimate, margin: float, non_inferiority: bool = False) -> VerdictName:
    """The verdict on ``gap`` = claim minus control (positive: the claim is ahead), 95% interval.

    Superiority (the claim must beat the control by ``margin``): holds when the interval's low end is above
    +margin; does not hold when its high end is below +margin, i.e. the data rule out an effect as large as
    the margin: the control wins, or the gap is measured to be about zero (inside the equivalence band, the
    two one-sided tests' "no effect"); inconclusive when the interval straddles +margin.
    Non-inferiority (the claim must be at least as good, within ``margin``): holds when the low end is
    above -margin, does not hold when the high end is below -margin.
    """
    low, high = gap.interval()
    if low > (-margin if non_inferiority else margin):
        return "holds"
    if high < -margin or (not non_inferiority and high < margin):
        return "does not hold"
    return "inconclusive"


def compare(
    claim: str,
    gap: Estimate,
    control: str,
    margin: float,
    unit: str = "",
    non_inferiority: bool = False,
    judge: str | None = None,
) -> Verdict:
    """One comparison: ``claim`` against ``control`` with gap (claim minus control, higher is better)."""
    verdict = decide(gap, margin, non_inferiority)
    low, high = gap.interval()
    need = f"within {margin:.3g}{unit}" if non_inferiority else f"by more than {margin:.3g}{unit}"
    seeds = f" over {gap.seeds} training seeds" if gap.seeds else ""
    reason = f"{claim} vs {control}: gap {gap.value:+.3g}{unit}, 95% interval{seeds} [{low:+.3g}, {high:+.3g}] ({need})"
    return Verdict(verdict, control, reason, margin, gap, judge)


def all_of(parts: Sequence[Verdict], control: str, reason: str = "") -> Verdict:
    """A claim made of parts holds when every part holds, fails when any fails, else is inconclusive."""
    names = [p.verdict for p in parts]
    if any(v == "does not hold" for v in names):
        verdict: VerdictName = "does not hold"
    elif names and all(v == "holds" for v in names):
        verdict = "holds"
    else:
        verdict = "inconclusive"
    text = reason or "; ".join(p.reason for p in parts) or "nothing to compare"
    return Verdict(verdict, control, text, parts=tuple(parts))


def consensus(by_judge: Sequence[Verdict], control: str, voting: frozenset[str] | None = None) -> Verdict:
    """A sample-quality claim judged in several feature spaces: holds (or fails) when every voting judge says
    so; when they disagree, inconclusive. ``voting``: the judges that have been shown to see what the claim is
    about (None: all); the others' verdicts are reported, marked "reports only", and do not count. When no
    judge qualifies, all vote."""
    voters = [v for v in by_judge if voting is None or v.judge in voting] or list(by_judge)
    names = {v.verdict for v in voters}
    verdict: VerdictName = names.pop() if len(names) == 1 else "inconclusive"
    reason = "; ".join(
        f"[{v.judge}{'' if v in voters else ', reports only: not shown to see this'}] {v.reason}" for v in by_judge
    )
    reason = reason or "no judge to score samples with"
    if len({v.verdict for v in voters}) > 1:
        reason = "the judges disagree: " + reason
    return Verdict(verdict, control, reason, parts=tuple(by_judge))


def fid_margin(a: Estimate, b: Estimate) -> float:
    return FID_RELATIVE_MARGIN * min(a.value, b.value)


# --- one rule per claim ----------------------------------------------------------------------------------


def bottleneck(sizes: Sequence[int], psnr: Sequence[Estimate], gains: Sequence[Estimate], control: Estimate) -> Verdict:
    """Section 1: PSNR rises with the bottleneck size. ``psnr``: each AE's test PSNR (dB), by size;
    ``gains``: PSNR(size k+1) - PSNR(size k), paired over the same test images; ``control``: the PSNR of
    the trivial reconstruction (the mean training image for every input), which every AE must beat."""
    parts = [
        compare(f"{s}-d AE", p.minus(control), "the mean training image", PSNR_MARGIN, " dB")
        for s, p in zip(sizes, psnr, strict=True)
    ]
    parts += [
        compare(f"{b}-d over {a}-d", g, f"the {a}-d AE", PSNR_MARGIN, " dB")
        for a, b, g in zip(sizes[:-1], sizes[1:], gains, strict=True)
    ]
    return all_of(parts, "the mean training image; each smaller bottleneck")


def vae_prior(
    fid_gap_by_judge: dict[str, tuple[Estimate, Estimate, Estimate]], voting: frozenset[str] | None = None
) -> Verdict:
    """Section 2: the VAE's prior samples beat a Gaussian fitted to the plain AE's latents. Per judge:
    (VAE FID, AE FID, paired AE minus VAE FID difference); ``voting``: the judges that decide (``consensus``)."""
    per_judge = [
        compare("VAE prior samples", gap, "AE fitted Gaussian", fid_margin(v, a), judge=j)
        for j, (v, a, gap) in fid_gap_by_judge.items()
    ]
    return consensus(per_judge, "samples of a Gaussian fitted to the AE's latents (same bottleneck)", voting)


@dataclass(frozen=True)
class DenoisingLevel:
    """One noise level of sections 3 and 5: sigma, and gaps in PSNR (dB), paired over the same noisy images."""

    sigma: float
    gap: Estimate  # the claim's model minus the compared model
    model_vs_identity: Estimate  # the compared model (DAE) minus the do-nothing denoiser (the noisy input)


def _testable(level: DenoisingLevel) -> bool:
    """A denoising comparison at this level says something only if the model being matched beats the
    identity (returning the noisy input): where doing nothing is better, every model "denoises" badly."""
    return decide(level.model_vs_identity, PSNR_MARGIN) == "holds"


def dae_denoising(levels: Sequence[DenoisingLevel], probes: Sequence[tuple[str, float, Estimate]]) -> Verdict:
    """Section 3: a DAE denoises its training noise level better than the plain AE (``levels``: gap = DAE
    minus AE, at each DAE's sigma; levels where the DAE does not beat the identity are untestable and
    left out), and its latents are more robust (``probes``: (DAE, sigma, paired accuracy gain over the AE of
    a linear probe on latents of noisy inputs) at noise levels fixed in advance)."""
    parts, untestable = [], []
    for level in levels:
        if not _testable(level):
            untestable.append(f"{level.sigma:g}")
            continue
        parts.append(compare(f"DAE at sigma {level.sigma:g}", level.gap, "the plain AE", PSNR_MARGIN, " dB"))
    parts += [
        compare(f"{name} probe at sigma {s:g}", gain, "the plain AE's probe", ACCURACY_MARGIN)
        for name, s, gain in probes
    ]
    reason = "; ".join(p.reason for p in parts)
    if untestable:
        reason += f"; untestable at sigma {', '.join(untestable)} (the noisy input beats the DAE)"
    return all_of(parts, "the plain AE at the same noise level; the identity (noisy input)", reason)


def manifold(knn_gaps: dict[str, dict[str, Estimate]]) -> Verdict:
    """Section 4: every autoencoder's latents cluster classes better than the controls: {model: {control:
    k-NN accuracy of the latents minus the control's, paired over the same test images}}. Controls: raw
    pixels, a random linear projection of the pixels to the latent's dimension, and the same network
    untrained."""
    parts = [
        compare(f"{model} latents", gap, control, KNN_MARGIN)
        for model, gaps in knn_gaps.items()
        for control, gap in gaps.items()
    ]
    return all_of(parts, "raw pixels; a random projection of the same dimension; the untrained network")


def noise_levels(levels: Sequence[DenoisingLevel]) -> Verdict:
    """Section 5: one diffusion model, told the noise level, denoises each DAE's level at least as well as
    that DAE (non-inferiority within ``PSNR_MARGIN``; gap = diffusion minus DAE). A level counts only where
    the DAE beats the identity denoiser; with no testable level the claim is inconclusive."""
    parts, untestable = [], []
    for level in levels:
        if not _testable(level):
            untestable.append(f"{level.sigma:g}")
            continue
        parts.append(
            compare(
                f"diffusion at sigma {level.sigma:g}", level.gap, "the DAE", PSNR_MARGIN, " dB", non_inferiority=True
            )
        )
    reason = "; ".join(p.reason for p in parts)
    if untestable:
        reason += f"; untestable at sigma {', '.join(untestable)} (the noisy input beats the DAE)"
    return all_of(parts, "each DAE at its own noise level; the identity (noisy input)", reason or "no testable level")


def blur_trend(rho: Estimate) -> Verdict:
    """Section 6: the predicted x0's high-frequency share falls steadily as sigma rises: Spearman's rho
    between sigma and the share (bootstrap interval over images) must lie below -TREND_MARGIN. Holds when
    the whole interval is below it; does not hold when the whole interval is above it (no trend, a rising
    one, or a fall too weak or too broken to be the claimed one, e.g. detail returning at the highest
    sigma); inconclusive when the interval straddles it. Control: no trend (rho 0), which lies above."""
    low, high = rho.interval()
    gap = Estimate(-rho.value - TREND_MARGIN, rho.se, rho.n, rho.how)  # > 0: steeper than the claim needs
    verdict = decide(gap, 0.0)
    reason = f"Spearman rho {rho.value:.2f}, 95% interval [{low:.2f}, {high:.2f}] (must lie below {-TREND_MARGIN:g})"
    return Verdict(verdict, "no trend (rho 0)", reason, TREND_MARGIN, gap)


def skips(
    loss_gap: Estimate,
    loss_with: float,
    loss_without: float,
    fid_by_judge: dict[str, tuple],
    voting: frozenset[str] | None = None,
) -> Verdict:
    """Section 7: skip connections give a lower held-out loss (``loss_gap`` = without minus with, paired
    over the same images and noise) and a better FID in every judge (judge -> (FID with, FID without,
    paired without minus with)) than the same network without them."""
    parts = [
        compare(
            "held-out loss with skips",
            loss_gap,
            "no skips",
            LOSS_RELATIVE_MARGIN * min(loss_with, loss_without),
        )
    ]
    if fid_by_judge:
        fids = [
            compare("FID with skips", g, "no skips", fid_margin(a, b), judge=j) for j, (a, b, g) in fid_by_judge.items()
        ]
        parts.append(consensus(fids, "the same network without skips", voting))
    return all_of(parts, "the same network without skips, same budget")


def guidance(gain: Estimate, guided: Estimate, chance: float, scale: float) -> Verdict:
    """Section 8: classifier-free guidance raises conditional accuracy: ``gain`` = accuracy at the highest
    scale minus at scale 1, paired over samples drawn from the same noise and labels; and the guided
    samples' accuracy ``guided`` beats chance (1 / classes) by ``CHANCE_MARGIN``."""
    parts = [
        compare(f"accuracy at guidance {scale:g}", gain, "guidance 1", ACCURACY_MARGIN),
        compare(
            f"accuracy at guidance {scale:g}", guided.minus(Estimate(chance)), f"chance ({chance:.3f})", CHANCE_MARGIN
        ),
    ]
    return all_of(parts, "guidance 1; chance")


def summary(
    fids_by_judge: dict[str, tuple[dict[str, Estimate], dict[str, Estimate], dict[tuple[str, str], Estimate]]],
    voting: frozenset[str] | None = None,
) -> Verdict:
    """Section 9: every diffusion model generates better samples than every member of the autoencoder
    family. Per judge: (diffusion FIDs by model, autoencoder FIDs by model, paired differences keyed
    (autoencoder, diffusion model) = AE FID minus diffusion FID); each diffusion model must beat the
    best autoencoder by the margin."""
    per_judge = []
    for judge, (diffusion, autoencoders, gaps) in fids_by_judge.items():
        if not diffusion or not autoencoders:
            continue
        best = min(autoencoders, key=lambda n: autoencoders[n].value)
        parts = [
            compare(
                d,
                gaps[(best, d)],
                f"{best} (the best autoencoder)",
                fid_margin(diffusion[d], autoencoders[best]),
                judge=judge,
            )
            for d in diffusion
        ]
        judged = all_of(parts, f"the best autoencoder ({best})")
        per_judge.append(Verdict(judged.verdict, judged.control, judged.reason, parts=judged.parts, judge=judge))
    if not per_judge:
        return Verdict("inconclusive", "the best autoencoder", "no FID measured")
    return consensus(per_judge, "the best autoencoder", voting)


@dataclass(frozen=True)
class RestorationGap:
    """One comparison of section 10: ``who`` (a model and its method) against ``control`` on the missing
    pixels of ``degradation``: gap = who's PSNR minus the control's (dB), paired over the same images and masks."""

    who: str
    degradation: str
    control: str
    gap: Estimate


def infers_missing(masking: Sequence[RestorationGap], diffusion: Sequence[RestorationGap]) -> Verdict:
    """Section 10: the masking DAE infers the missing pieces of its own kind of mask (``masking``: its one pass
    against every classical control and against the plain AE of its shape, which never saw a hole), and one
    diffusion model, never trained to restore, does it for every mask and for super-resolution (``diffusion``:
    its default method against every classical control of each degradation). Every gap must clear
    ``PSNR_MARGIN``; with either side unmeasured the claim is inconclusive."""
    parts = [
        compare(f"{g.who} on {g.degradation}", g.gap, g.control, PSNR_MARGIN, " dB") for g in (*masking, *diffusion)
    ]
    control = "mean fill, biharmonic inpainting, nearest and bicubic upsampling; the plain AE"
    if not masking or not diffusion:
        missing = "the masking DAE" if not masking else "the diffusion model"
        return Verdict("inconclusive", control, f"{missing} was not measured", parts=tuple(parts))
    return all_of(parts, control)


def diffusion_manifold(controls: dict[str, Estimate], autoencoders: dict[str, Estimate]) -> Verdict:
    """Section 11: the diffusion U-Net's own features (its bottleneck, at the noise level chosen on validation
    images) cluster the classes: their k-NN accuracy beats every control by ``KNN_MARGIN`` (``controls``:
    control -> features minus control, paired over the same test images: raw pixels, a random projection of
    the same width, the same network untrained), and comes within ``MANIFOLD_PEER_MARGIN`` of each
    autoencoder's latents or beats them (``autoencoders``: name -> features minus its latents)."""
    parts = [compare("U-Net features", gap, control, KNN_MARGIN) for control, gap in controls.items()]
    parts += [
        compare("U-Net features", gap, f"{name} latents", MANIFOLD_PEER_MARGIN, non_inferiority=True)
        for name, gap in autoencoders.items()
    ]
    return all_of(parts, "raw pixels; a random projection; the untrained U-Net; the autoencoders' latents")


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation of x and y (0 when either is constant)."""
    rx, ry = np.argsort(np.argsort(x)), np.argsort(np.argsort(y))
    if len(x) < 2 or np.std(rx) == 0 or np.std(ry) == 0:
        return 0.0
    return float(np.corrcoef(rx, ry)[0, 1])
