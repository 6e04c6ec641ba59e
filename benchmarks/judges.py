"""Which judge sees blur? Sample sets scored against a data set's test split (--data, mnist5k by default) in every
judge (issue: FID in the classifier's penultimate features rates a 4-d autoencoder's blurry samples close to a
diffusion model's; then: do both judges behave on CIFAR-10's colour images as on digits?).

Sets (each --n images, default 500): real train images (the control), the same blurred with a Gaussian of
sigma 1 (and 0.5), samples of a trained autoencoder (--ae), samples of a trained diffusion model
(--diffusion, its default sampler) and, with --extra-sampler, of the same model with another sampler.

Scores per set:
- FID in every feature-space variant of the judge classifier (--classifier) tried for the layers judge: the
  penultimate features (the "classifier" judge), per-stage channel mean / std pooling, log std, log
  gradient energy (the shipped "classifier-layers" judge, ``Classifier.layer_features``), ... Each with a
  bootstrap interval (``aediff.metrics.fid_bootstrap``: both sets resampled) and its excess over the real
  control with a paired-bootstrap interval (same reference resamples).
- the sharpness gap (``aediff.evaluation.sharpness_gap``): mean high-frequency share of spectral power
  relative to the test images', 0 = as sharp as the data, negative = blurrier.

    python benchmarks/judges.py --ae /work/judge-runs/ae-4 --diffusion /work/judge-runs/diffusion-2000

On another data set, or with a judge classifier of other widths, only the two shipped judges are scored
(``--variants shipped``, the default there), since the variants index the default classifier's layers:

    python benchmarks/judges.py --data cifar10 --classifier RUNS/classifier --ae RUNS/ae-16 \
        --diffusion RUNS/diffusion-10m --out benchmarks/results/judges_cifar10

Inception-v3 weights are not on disk here (none are downloaded), so no set is scored in Inception.

Writes benchmarks/results/judges.json and .md (--out).
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

import aediff
from aediff.data import load_dataset
from aediff.diffusion.samplers import SamplerOptions
from aediff.evaluation import gaussian_blur, judges_for, sample_images, sharpness_gap
from aediff.metrics import fid_bootstrap, frechet_distance
from aediff.metrics.stats import Estimate, difference_of_draws
from aediff.models.classifier import Classifier
from results_files import machine, write_results

# --- the feature-space variants tried for the layers judge -----------------------------------------------
# Encoder activations of the default classifier (channels 32, 64, 128; one block per stage), by index into
# the encoder's skips: 0 stem [32, 28, 28], 1 stage-0 block [32, 28, 28], 2 downsample [32, 14, 14],
# 3 stage-1 block [64, 14, 14], 4 downsample [64, 7, 7], 5 stage-2 block [128, 7, 7].


def _mean(a: torch.Tensor) -> torch.Tensor:
    return a.mean(dim=(2, 3))


def _std(a: torch.Tensor) -> torch.Tensor:
    return a.std(dim=(2, 3))


def _log_std(a: torch.Tensor) -> torch.Tensor:
    return a.std(dim=(2, 3)).add(1e-3).log()


def _log_gradient(a: torch.Tensor) -> torch.Tensor:
    dx = a[..., :, 1:] - a[..., :, :-1]
    dy = a[..., 1:, :] - a[..., :-1, :]
    return (dx.pow(2).mean(dim=(2, 3)) + dy.pow(2).mean(dim=(2, 3))).sqrt().add(1e-3).log()


def _pool2(a: torch.Tensor) -> torch.Tensor:
    return F.adaptive_avg_pool2d(a, 2).flatten(1)


# name -> ([(skip index, statistic)], with the penultimate features?, description)
VARIANTS: dict[str, tuple[list[tuple[int, Callable[[torch.Tensor], torch.Tensor]]], bool, str]] = {
    "penultimate": ([], True, "the 'classifier' judge: penultimate features only"),
    "mean+std stages 0-2 + pen": (
        [(1, _mean), (1, _std), (3, _mean), (3, _std), (5, _mean), (5, _std)],
        True,
        "spatial mean and std of every channel after each stage's block, plus the penultimate features",
    ),
    "std stages 0-2 + pen": ([(1, _std), (3, _std), (5, _std)], True, "spatial std after each stage, plus pen."),
    "mean+std stages 0-1 + pen": (
        [(1, _mean), (1, _std), (3, _mean), (3, _std)],
        True,
        "mean and std of the two early stages only, plus pen.",
    ),
    "std stem+stage 0 + pen": ([(0, _std), (1, _std)], True, "std of the two full-resolution maps, plus pen."),
    "2x2 pool stage 0 + pen": ([(1, _pool2)], True, "stage-0 map average-pooled to 2x2, plus pen."),
    "log std stem,stages 0-1 + pen": (
        [(0, _log_std), (1, _log_std), (3, _log_std)],
        True,
        "log of the spatial std (scale-free), plus pen.",
    ),
    "log std stages 0-2 + pen": ([(1, _log_std), (3, _log_std), (5, _log_std)], True, "log std per stage, plus pen."),
    "log grad stem+stage 0 + pen": (
        [(0, _log_gradient), (1, _log_gradient)],
        True,
        "the shipped 'classifier-layers' judge: log RMS spatial gradient of the two full-resolution maps, plus pen.",
    ),
    "log grad stem+stage 0 (no pen)": ([(0, _log_gradient), (1, _log_gradient)], False, "as above without pen."),
}
SHIPPED = {"classifier": "penultimate", "classifier-layers": "log grad stem+stage 0 + pen"}


@torch.no_grad()
def variant_features(classifier: Classifier, images: torch.Tensor, batch_size: int = 250) -> dict[str, torch.Tensor]:
    """Every variant's features of ``images`` [N, 1, 28, 28] in [-1, 1]: {name: [N, D]}, one encoder pass."""
    parts: dict[str, list[torch.Tensor]] = {name: [] for name in VARIANTS}
    for start in range(0, len(images), batch_size):
        x = images[start : start + batch_size]
        h, skips = classifier.encoder(x)
        penultimate = F.silu(classifier.to_features(classifier.pool(h)))
        for name, (stats, with_pen, _) in VARIANTS.items():
            pieces = [stat(skips[i]) for i, stat in stats] + ([penultimate] if with_pen else [])
            parts[name].append(torch.cat(pieces, dim=1))
    return {name: torch.cat(chunks) for name, chunks in parts.items()}


@torch.no_grad()
def shipped_features(classifier: Classifier, images: torch.Tensor, batch_size: int = 250) -> dict[str, torch.Tensor]:
    """The two shipped judges' features of ``images`` [N, C, H, W] in [-1, 1], under their variants' names."""
    judges = judges_for(classifier)
    return {
        SHIPPED[j.name]: torch.cat([j.features(images[i : i + batch_size]) for i in range(0, len(images), batch_size)])
        for j in judges
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="mnist5k", help="the data set the models were trained on (its test split)")
    parser.add_argument("--classifier", type=Path, default=Path("runs/clf"), help="the judge: a classifier run")
    parser.add_argument(
        "--variants",
        choices=["all", "shipped"],
        default=None,
        help="every feature-space variant (the default classifier on mnist5k: the default there) or the two "
        "shipped judges only (the default elsewhere)",
    )
    parser.add_argument("--ae", type=Path, required=True, help="run folder of the autoencoder")
    parser.add_argument("--diffusion", type=Path, required=True, help="run folder of the diffusion model")
    parser.add_argument("--extra-sampler", default=None, help="also sample the diffusion model as SAMPLER:STEPS")
    parser.add_argument("--n", type=int, default=500, help="images per sample set")
    parser.add_argument("--draws", type=int, default=50, help="bootstrap draws per FID")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/judges"))
    parser.add_argument("--note", action="append", default=[], help="a sentence for the report (repeatable)")
    args = parser.parse_args()
    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    print(command, flush=True)
    started = time.time()

    judge_run = aediff.load(args.classifier)
    classifier = judge_run.model.eval()
    default_layers = isinstance(classifier, Classifier) and tuple(classifier.config.channels) == (32, 64, 128)
    variants = args.variants or ("all" if args.data == "mnist5k" and default_layers else "shipped")
    if variants == "all" and not default_layers:
        sys.exit(f"{args.classifier}: the variants index the default classifier's layers (channels 32, 64, 128)")
    features = variant_features if variants == "all" else shipped_features
    test = load_dataset(args.data, "test")
    train = load_dataset(args.data, "train")
    reference = test.batch(torch.arange(len(test)))["images"]
    # a random subset: the splits are stored class by class
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(args.seed))[: args.n]
    real = train.batch(order)["images"]

    sets: dict[str, dict] = {
        "real": {"images": real, "what": f"{args.n} {args.data} train images (random), the control"},
        "blurred sigma 0.5": {"images": gaussian_blur(real, 0.5), "what": "the real set, Gaussian blur sigma 0.5"},
        "blurred sigma 1": {"images": gaussian_blur(real, 1.0), "what": "the real set, Gaussian blur sigma 1"},
    }
    for name, path, options in [
        ("ae", args.ae, None),
        ("diffusion", args.diffusion, None),
        *(
            [(f"diffusion {args.extra_sampler}", args.diffusion, _sampler(args.extra_sampler))]
            if args.extra_sampler
            else []
        ),
    ]:
        run = aediff.load(path)
        t0 = time.time()
        with torch.no_grad():
            images = sample_images(run.model, args.n, args.seed, options=options)
        steps = run.summary.steps if run.summary is not None else None
        sampler = (
            f"{options.sampler} {options.steps} steps"
            if options is not None
            else _default_sampler(run.config)
            if run.family == "diffusion"
            else "decoder of codes from the fitted latent Gaussian"
        )
        sets[name] = {
            "images": images,
            "what": f"{args.n} samples of {path} ({run.family}, {steps} training steps; {sampler})",
            "sample_seconds": time.time() - t0,
        }
        print(f"sampled {name}: {time.time() - t0:.0f}s", flush=True)

    ref_feats = features(classifier, reference)
    # the shipped judges must be the variants of the same name, or the table misreports them
    shipped = {j.name: j for j in judges_for(classifier)}
    with torch.no_grad():
        layer = shipped["classifier-layers"].features(reference[:64])
        pen = shipped["classifier"].features(reference[:64])
    torch.testing.assert_close(layer, ref_feats[SHIPPED["classifier-layers"]][:64])
    torch.testing.assert_close(pen, ref_feats[SHIPPED["classifier"]][:64])

    results: dict = {
        "command": command,
        "machine": machine(),
        "notes": args.note,
        "reference": f"{args.data}:test ({len(reference)} images)",
        "variants_scored": variants,
        "classifier": str(args.classifier),
        "bootstrap_draws": args.draws,
        "sets": {k: {kk: vv for kk, vv in v.items() if kk != "images"} for k, v in sets.items()},
        "variants": {},
        "sharpness_gap": {},
        "shipped_judges": {
            name: {"variant": v, "description": shipped[name].description} for name, v in SHIPPED.items()
        },
    }
    for name, data in sets.items():
        results["sharpness_gap"][name] = sharpness_gap(data["images"], reference, seed=args.seed).to_dict()
    set_feats = {name: features(classifier, data["images"]) for name, data in sets.items()}
    for variant in ref_feats:
        description = VARIANTS[variant][2]
        ref = ref_feats[variant].numpy()
        scores, draws = {}, {}
        for name in sets:
            feats = set_feats[name][variant].numpy()
            point = frechet_distance(feats, ref)
            # same seed: every set's draw i uses the same reference resample, so differences are paired
            draws[name] = fid_bootstrap(feats, ref, draws=args.draws, seed=args.seed)
            scores[name] = {"fid": Estimate.from_draws(point, draws[name]).to_dict()}
        for name in sets:
            for control, key in (("real", "excess_over_real"), ("diffusion", "minus_diffusion")):
                scores[name][key] = difference_of_draws(
                    scores[name]["fid"]["value"], draws[name], scores[control]["fid"]["value"], draws[control]
                ).to_dict()
        results["variants"][variant] = {
            "dim": int(ref.shape[1]),
            "description": description,
            "scores": scores,
            "ranking": sorted(sets, key=lambda s: scores[s]["fid"]["value"]),
            "ae_minus_diffusion": scores["ae"]["minus_diffusion"],  # the key older files have
        }
        print(
            f"{variant:34s} D={ref.shape[1]:4d} " + " ".join(f"{s}={scores[s]['fid']['value']:.3f}" for s in sets),
            flush=True,
        )
    write_results(args.out, results, started, _markdown)


def _sampler(spec: str) -> SamplerOptions:
    sampler, _, steps = spec.partition(":")
    if not steps.isdigit():
        sys.exit(f"--extra-sampler takes SAMPLER:STEPS, e.g. ddpm:50; got {spec!r}")
    return SamplerOptions(sampler=sampler, steps=int(steps))


def _default_sampler(config) -> str:
    return f"default sampler: {config.sampling.sampler} {config.sampling.steps} steps"


def _fmt(e: dict, digits: int = 2) -> str:
    return f"{e['value']:.{digits}f} [{e['low']:.{digits}f}, {e['high']:.{digits}f}]"


def _above(e: dict) -> str:
    """Whether a difference's 95% interval lies above 0, below it, or covers it."""
    return "clearly above 0" if e["low"] > 0 else "clearly below 0" if e["high"] < 0 else "not clearly different from 0"


def _ranks_below(v: dict, name: str) -> str:
    """Whether set ``name`` clearly ranks below the real control and the diffusion model in variant ``v``: its
    paired FID differences to each (runs from before the difference to diffusion was kept give the AE's only)."""
    scores = v["scores"][name]
    against = {"real": scores["excess_over_real"], "diffusion": scores.get("minus_diffusion")}
    if against["diffusion"] is None and name == "ae":
        against["diffusion"] = v["ae_minus_diffusion"]
    said = [f"FID({name}) - FID({control}) = {_fmt(d)}, {_above(d)}" for control, d in against.items() if d]
    below = [control for control, d in against.items() if d and d["low"] > 0]
    verdict = f"ranks clearly below {' and '.join(below)}" if below else "ranks clearly below neither"
    return f"{', '.join(said)} ({name} {verdict})"


def _findings(r: dict) -> list[str]:
    """The claims the issue asks about, read off the numbers (so a rerun cannot leave stale prose)."""
    out = []
    names = {"classifier": r["shipped_judges"]["classifier"]["variant"]}
    names["classifier-layers"] = r["shipped_judges"]["classifier-layers"]["variant"]
    for judge, variant in names.items():
        out.append(f"{judge} judge: " + "; ".join(_ranks_below(r["variants"][variant], name)
                                                  for name in ("blurred sigma 1", "ae")) + ".")  # fmt: skip
    pen = r["variants"][names["classifier"]]["ranking"]
    lay = r["variants"][names["classifier-layers"]]["ranking"]
    swapped = [f"{a} ahead of {b}" for i, a in enumerate(pen) for b in pen[i + 1 :] if lay.index(a) > lay.index(b)]
    out.append(
        "Where the classifier judge disagrees with the layers judge, it puts: "
        + (
            "; ".join(swapped) + " (the layers judge orders each of these pairs the other way)."
            if swapped
            else "nothing: both judges rank the sets alike."
        )
    )
    gap = r["sharpness_gap"]
    out.append(
        "Sharpness gap: "
        + "; ".join(f"{name} {_fmt(g, 3)} ({_above(g).replace('clearly ', '')})" for name, g in gap.items())
        + "."
    )
    return out


def _paired_table(sets: list[str], judges: dict[str, dict]) -> list[str]:
    """Each set's paired FID difference to the real control and to the diffusion model, in both judges (none
    for runs from before the difference to diffusion was kept)."""
    if any("minus_diffusion" not in v["scores"]["real"] for v in judges.values()):
        return []
    header = [f"{judge}: minus {control}" for judge in judges for control in ("real", "diffusion")]
    lines = ["", "Paired differences (the same reference resamples), above 0 = further from the data:", ""]
    lines += ["| set | " + " | ".join(header) + " |", "|---|" + "---|" * len(header)]
    for name in sets:
        keys = ("excess_over_real", "minus_diffusion")
        cells = [_fmt(v["scores"][name][key]) for v in judges.values() for key in keys]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def _markdown(r: dict) -> str:
    sets = list(r["sets"])
    lines = [
        f"# Judges on {r['reference'].split(':')[0]}: which feature space sees blur",
        "",
        f"Reference: {r['reference']}; judge classifier `{r['classifier']}`; CPU: {r['machine']['cpu']} "
        f"(torch {r['machine']['torch']}, {r['machine']['threads']} threads). Intervals are 95% "
        f"(value +- 1.96 se), se from {r['bootstrap_draws']} bootstrap draws (FID: both sets resampled; "
        "excess over real: paired draws with the same reference resamples). A single FID's interval is wide (the "
        "reference's own sampling noise is in it); compare sets by the paired differences, which exclude it.",
        "",
        "Command:",
        "",
        f"    {r['command']}",
        "",
        "Sets:",
        "",
    ]
    lines += [f"- **{name}**: {s['what']}" for name, s in r["sets"].items()]
    if r["notes"]:
        lines += ["", "Notes:", ""] + [f"- {note}" for note in r["notes"]]
    lines += ["", "## Findings", ""]
    lines += [f"- {f}" for f in _findings(r)]
    lines += ["", "## The two shipped judges and the sharpness gap", ""]
    header = "| set | FID, classifier | FID, classifier-layers | layers: excess over real | sharpness gap |"
    lines += [header, "|---|---|---|---|---|"]
    pen = r["variants"][r["shipped_judges"]["classifier"]["variant"]]
    lay = r["variants"][r["shipped_judges"]["classifier-layers"]["variant"]]
    for name in sets:
        excess = "(the control)" if name == "real" else _fmt(lay["scores"][name]["excess_over_real"])
        lines.append(
            f"| {name} | {_fmt(pen['scores'][name]['fid'])} | {_fmt(lay['scores'][name]['fid'])} | "
            f"{excess} | {_fmt(r['sharpness_gap'][name], 3)} |"
        )
    lines += _paired_table(sets, {"classifier": pen, "classifier-layers": lay})
    gap_rank = sorted(sets, key=lambda s: -r["sharpness_gap"][s]["value"])
    lines += [
        "",
        "Rankings, best (closest to the data) first:",
        "",
        f"- classifier: {' < '.join(pen['ranking'])}",
        f"- classifier-layers: {' < '.join(lay['ranking'])}",
        f"- sharpness gap, highest (most high-frequency power) first: {' > '.join(gap_rank)}",
        "",
        "## Every variant tried for the layers judge"
        if r.get("variants_scored", "all") == "all"
        else "## The two shipped judges (the variants index the default classifier on digits: not scored here)",
        "",
        "FID of each set (point value; intervals in judges.json). 'blur1 / real' is the blurred set's FID over "
        "the real control's; 'ae - diffusion' is the paired difference of the two models' FIDs.",
        "",
        "| variant | D | " + " | ".join(sets) + " | blur1 / real | ae - diffusion |",
        "|---|---|" + "---|" * len(sets) + "---|---|",
    ]
    for variant, v in r["variants"].items():
        fids = [v["scores"][s]["fid"]["value"] for s in sets]
        ratio = v["scores"]["blurred sigma 1"]["fid"]["value"] / max(v["scores"]["real"]["fid"]["value"], 1e-12)
        lines.append(
            f"| {variant} | {v['dim']} | "
            + " | ".join(f"{f:.3f}" for f in fids)
            + f" | {ratio:.1f} | {_fmt(v['ae_minus_diffusion'])} |"
        )
    lines += ["", "Variants:", ""]
    lines += [f"- **{name}** ({v['dim']}-d): {v['description']}" for name, v in r["variants"].items()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
