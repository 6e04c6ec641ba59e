"""Who infers the missing pieces? Every restoration method and classical control on the same degraded test
images, and how much of the label a diffusion model's inner features carry (issue 26).

    python benchmarks/restoration.py --diffusion runs/diffusion --dae runs/dae-mask --ae runs/ae \
        --judge runs/classifier --latent-diffusion runs/latent-diffusion --images 200 \
        --out benchmarks/results/restoration

Runs are trained beforehand (the default diffusion model, a masking DAE `--noise mask:0.3`, a plain AE of the
DAE's shape, and a classifier whose features score the composites' FID); their data's test split is
restored. For each degradation (--specs: masks of several kinds and sizes, inside and outside the DAE's
training distribution, and 2x / 4x super-resolution): the diffusion model with DDNM (--steps), RePaint (its
defaults: j = 10, r = 10) and its one pass at the noise level chosen on validation images (carved from the
training split: ``choose_one_pass_sigma``), the DAE's and the AE's one pass, and the classical controls; the
DAE against diffusion's DDNM, paired over images. With --latent-diffusion: its DDNM by decode-project-encode,
its cost against plain sampling and how far each step's decoded estimate strays from the measurement. Then
the feature probes: the diffusion model's `unet-mid` and `unet-encoder` features (sigma chosen on validation,
every level tried kept) against the autoencoders' latents, raw pixels, a random projection of the same width
and the untrained network.

Writes OUT.json (every number) and OUT.md (the tables the docs quote).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import aediff
from aediff.diffusion.degradations import degradation_from_spec, spec_kind
from aediff.diffusion.restoration import RestoreOptions
from aediff.diffusion.samplers import SamplerOptions
from aediff.evaluation.judges import judges_for
from aediff.evaluation.latents import knn_controls, latent_space_metrics, network_feature_probes
from aediff.evaluation.protocols import spread_indices
from aediff.evaluation.restoration import (
    choose_one_pass_sigma,
    composite_fid,
    control_rows,
    network_evaluations,
    restoration_row,
    restoration_rows,
)
from aediff.evaluation.results import encode
from aediff.metrics.stats import paired_difference
from results_files import machine, write_results

SPECS = "random:0.3,random:0.7,box:8,box:14,half,lines:3,upscale:2,upscale:4"


def _images(dataset: Any, n: int, device: torch.device) -> torch.Tensor:
    return dataset.batch(spread_indices(len(dataset), n))["images"].to(device)


def _composite_fid(judge_run: Any, test: Any):
    return composite_fid(judges_for(judge_run.model), test) if judge_run is not None else None


def restorations(args: argparse.Namespace, runs: dict[str, Any], train: Any, test: Any) -> dict[str, Any]:
    specs = args.specs.split(",")
    diffusion = runs["diffusion"].model
    x = _images(test, args.images, diffusion.device)
    validation = _images(train, args.validation_images, diffusion.device)
    sigmas = tuple(float(s) for s in args.one_pass_sigmas.split(","))
    best, tried = choose_one_pass_sigma(diffusion, validation, specs, sigmas, args.seed)
    fid = _composite_fid(runs.get("judge"), test)
    steps = SamplerOptions(steps=args.steps)
    rows = []
    for spec in specs:
        methods = [RestoreOptions(method="ddnm", sampler=steps), RestoreOptions(method="repaint", sampler=steps),
                   RestoreOptions(method="one-pass", sigma=best[spec_kind(spec)])]  # fmt: skip
        rows += restoration_rows(diffusion, x, [spec], methods, args.seed, "diffusion", fid)
        for name in ("dae", "ae"):
            if name in runs:
                rows += restoration_rows(runs[name].model, x, [spec], [RestoreOptions()], args.seed, name, fid)
        rows += control_rows(x, [spec], args.seed, fid)
        print(f"restored {spec}", flush=True)
    return {
        "one_pass_sigma": best,
        "one_pass_sigmas_tried": tried,
        "rows": [encode(row) for row in rows],
        "dae_minus_ddnm": _dae_against_diffusion(rows),
        "winners": _winners(rows),
    }


def _dae_against_diffusion(rows: list[Any]) -> dict[str, dict[str, float]]:
    """Per degradation: the DAE's PSNR on the missing pixels minus diffusion DDNM's, paired over images."""
    out = {}
    for degradation in dict.fromkeys(r.degradation for r in rows):
        dae = next((r for r in rows if r.degradation == degradation and r.model == "dae"), None)
        ddnm = next((r for r in rows if r.degradation == degradation and r.who == "diffusion (ddnm)"), None)
        if dae is not None and ddnm is not None:
            gap = paired_difference(dae.per_image.psnr, ddnm.per_image.psnr)
            low, high = gap.interval()
            out[degradation] = {"gap": gap.value, "low": low, "high": high}
    return out


def _winners(rows: list[Any]) -> dict[str, str]:
    """Per degradation: the row with the best mean PSNR on the missing pixels (ties within its interval not
    resolved: the table has the intervals)."""
    out = {}
    for degradation in dict.fromkeys(r.degradation for r in rows):
        mine = [r for r in rows if r.degradation == degradation]
        out[degradation] = max(mine, key=lambda r: r.psnr).who
    return out


@torch.no_grad()
def latent_ddnm(args: argparse.Namespace, run: Any, test: Any) -> dict[str, Any]:
    """Latent diffusion's DDNM (decode-project-encode): PSNR on the missing pixels, seconds per image against
    plain sampling with the same steps, and the constraint's error: the RMS of A decode(z0) - y over the steps'
    latent estimates z0 (zero would mean the constraint reached the latent exactly)."""
    model = run.model
    x = _images(test, min(args.images, 100), model.device)
    out = {}
    started = time.perf_counter()
    model.sample(len(x), options=SamplerOptions(steps=args.steps), generator=torch.Generator().manual_seed(0))
    out["sample_seconds_per_image"] = (time.perf_counter() - started) / len(x)
    for spec in args.specs.split(","):
        row, errors = _latent_row(model, x, spec, args.steps, args.seed)
        out[row.degradation] = {**encode(row), "constraint_rms": errors, "final_constraint_rms": errors[-1]}
    return out


def _latent_row(model: Any, x: torch.Tensor, spec: str, steps: int, seed: int) -> tuple[Any, list[float]]:
    """One degradation restored by latent DDNM: its RestorationRow and the RMS of A decode(z0) - y of each step's
    latent estimate z0, recorded while it restores."""
    operator = degradation_from_spec(spec, len(x), tuple(x.shape[2:]), torch.Generator().manual_seed(seed))
    y, errors = operator.forward(x), []

    def restore(measured: torch.Tensor) -> torch.Tensor:
        def error(state: dict[str, Any]) -> None:
            errors.append(float((operator.forward(model.output_images(state["denoised"])) - y).pow(2).mean().sqrt()))

        generator = torch.Generator(model.device).manual_seed(seed)
        return model.restore(measured, operator, options, generator=generator, callback=error)

    options = RestoreOptions(sampler=SamplerOptions(steps=steps))
    plan = options.resolve(model.restore_methods, operator)
    row = restoration_row(x, operator, plan.method, restore, network_evaluations(model, plan), "latent-diffusion")
    return row, errors


def manifold(args: argparse.Namespace, runs: dict[str, Any], train: Any, test: Any) -> dict[str, Any]:
    diffusion = runs["diffusion"].model
    probes = {level: encode(network_feature_probes(diffusion, train, test, level, limit=args.probe_images,
                                                   seed=args.seed))
              for level in diffusion.feature_levels}  # fmt: skip
    latents = {name: encode(latent_space_metrics(runs[name].model, train, test, args.probe_images, seed=args.seed))
               for name in ("dae", "ae") if name in runs}  # fmt: skip
    widths = tuple(sorted({p["feature_dim"] for p in probes.values()}))
    controls = knn_controls(train, test, widths, args.probe_images, args.seed)
    return {"features": probes, "latents": latents, "controls": {k: float(v.mean()) for k, v in controls.items()}}


def _fids(row: dict[str, Any]) -> str:
    return ", ".join(f"{v:.3g}" for v in row["composite_fid"].values()) or "-"


def markdown(result: dict[str, Any]) -> str:
    r = result["restoration"]
    lines = [
        "# Restoration: every method and control on the same degraded images",
        "",
        f"`{result['command']}`",
        "",
        f"{result['machine']['cpu']}, {result['machine']['threads']} threads; {result['seconds']:.0f} s. "
        f"{result['images']} test images; PSNR on the missing pixels (dB, +- 1.96 SE over images), SSIM of the "
        f"whole image, FID of the composites in the judge's features ({result.get('judges', '-')}; no interval, "
        "compare within a degradation).",
        "",
        f"One-pass noise level chosen on validation: {r['one_pass_sigma']} (tried: {r['one_pass_sigmas_tried']}).",
        "",
        "| degradation | missing | model (method) or control | PSNR | SSIM | composite FID | NFE | s / image |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in r["rows"]:
        who = f"{row['model']} ({row['method']})" if row["model"] else row["method"]
        lines.append(
            f"| {row['degradation']} | {row['missing_fraction']:.2f} | {who} | "
            f"{row['psnr']:.2f} +- {1.96 * row['psnr_se']:.2f} | {row['ssim']:.3f} | {_fids(row)} | "
            f"{row['network_evaluations']} | {row['seconds_per_image']:.4f} |"
        )
    lines += ["", "Best PSNR on the missing pixels, and the masking DAE minus diffusion's DDNM (paired, 95%):", "",
              "| degradation | best | DAE minus DDNM (dB) |", "|---|---|---|"]  # fmt: skip
    for degradation, best in r["winners"].items():
        gap = r["dae_minus_ddnm"].get(degradation)
        shown = f"{gap['gap']:+.2f} [{gap['low']:+.2f}, {gap['high']:+.2f}]" if gap else "-"
        lines.append(f"| {degradation} | {best} | {shown} |")
    if "latent_ddnm" in result:
        ldm = {k: v for k, v in result["latent_ddnm"].items() if k != "sample_seconds_per_image"}
        lines += ["", "Latent diffusion, DDNM by decode-project-encode "
                  f"({result['latent_ddnm']['sample_seconds_per_image']:.4f}"
                  " s / image to sample with the same steps):", "",
                  "| degradation | PSNR | s / image | constraint RMS, first step -> last |",
                  "|---|---|---|---|"]  # fmt: skip
        for degradation, row in ldm.items():
            rms = row["constraint_rms"]
            lines.append(f"| {degradation} | {row['psnr']:.2f} +- {1.96 * row['psnr_se']:.2f} | "
                         f"{row['seconds_per_image']:.4f} | {rms[0]:.3f} -> {rms[-1]:.3f} |")  # fmt: skip
    m = result["manifold"]
    lines += ["", "| features | sigma | k-NN | linear probe | untrained k-NN | validation k-NN by sigma |",
              "|---|---|---|---|---|---|"]  # fmt: skip
    for level, p in m["features"].items():
        tried = ", ".join(f"{s}: {a:.3f}" for s, a in p["validation_knn"].items())
        lines.append(f"| diffusion {level} | {p['sigma']:g} | {p['knn_accuracy']:.3f} | "
                     f"{p['linear_probe_accuracy']:.3f} | {p['untrained_knn']:.3f} | {tried} |")  # fmt: skip
    for name, p in m["latents"].items():
        lines.append(f"| {name} latents | - | {p['knn_accuracy']:.3f} | {p['linear_probe_accuracy']:.3f} | - | - |")
    for name, acc in m["controls"].items():
        lines.append(f"| {name} | - | {acc:.3f} | - | - | - |")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--diffusion", type=Path, required=True, help="a trained pixel diffusion run")
    parser.add_argument("--dae", type=Path, help="a trained masking DAE run (--noise mask:0.3)")
    parser.add_argument("--ae", type=Path, help="a trained plain AE run")
    parser.add_argument("--judge", type=Path, help="a trained classifier run: its features score composite FID")
    parser.add_argument("--latent-diffusion", type=Path, help="a trained latent diffusion run")
    parser.add_argument("--specs", default=SPECS, help=f"degradations (default {SPECS})")
    parser.add_argument("--images", type=int, default=200, help="test images restored")
    parser.add_argument("--validation-images", type=int, default=100, help="training images to choose sigma on")
    parser.add_argument("--probe-images", type=int, default=2000, help="images per split for the probes")
    parser.add_argument("--one-pass-sigmas", default="0.25,0.5,1,2")
    parser.add_argument("--steps", type=int, default=20, help="DDNM and RePaint steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "restoration")
    args = parser.parse_args(argv)
    started = time.time()
    named = (("diffusion", args.diffusion), ("dae", args.dae), ("ae", args.ae), ("judge", args.judge))
    runs = {name: aediff.load(path) for name, path in named if path is not None}
    data = runs["diffusion"].data
    train, test = data.load_by_position("train"), data.load_by_position("test")
    result: dict[str, Any] = {
        "command": "python benchmarks/restoration.py " + shlex.join(argv),
        "machine": machine(),
        "images": args.images,
        "trained_steps": {n: _steps(r) for n, r in runs.items()},
        "restoration": restorations(args, runs, train, test),
    }
    if "judge" in runs:
        result["judges"] = ", ".join(j.name for j in judges_for(runs["judge"].model))
    if args.latent_diffusion is not None:
        result["latent_ddnm"] = latent_ddnm(args, aediff.load(args.latent_diffusion), test)
    result["manifold"] = manifold(args, runs, train, test)
    write_results(args.out, result, started, markdown)


def _steps(run: Any) -> int | None:
    """The optimizer steps a run trained (the last step its log.jsonl records), for the results file."""
    log = Path(run.path) / "log.jsonl"
    rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()] if log.is_file() else []
    steps = [row["step"] for row in rows if isinstance(row.get("step"), int)]
    return max(steps) if steps else None


if __name__ == "__main__":
    np.seterr(all="ignore")
    main(sys.argv[1:])
