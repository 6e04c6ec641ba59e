"""Who infers the missing pieces? Every restoration method and classical control on the same degraded test
images, and how much of the label a diffusion model's inner features carry (issue 26).

    python benchmarks/restoration.py --diffusion runs/diffusion-10m --dae runs/dae-mask-5m --ae runs/ae-5m \
        --images 200 --out benchmarks/results/restoration

Runs are trained beforehand (a 10-minute default diffusion model, a 5-minute masking DAE `--noise mask:0.3`,
optionally a plain AE of the DAE's shape); their data's test split is restored. For each degradation
(--specs: masks of several kinds and sizes, inside and outside the DAE's training distribution, and 2x / 4x
super-resolution): the diffusion model with DDNM (--steps), RePaint (its defaults: j = 10, r = 10) and its
one pass at the noise level chosen on validation images (carved from the training split: the sigma of
--one-pass-sigmas with the best PSNR on the missing pixels, per degradation kind), the DAE's and the AE's
one pass, and the classical controls. Then the feature probes: the diffusion model's `unet-mid` and
`unet-encoder` features (sigma chosen on validation, every level tried kept) against the autoencoders'
latents, raw pixels, a random projection of the same width and the untrained network.

Writes OUT.json (every number) and OUT.md (the tables the docs quote).
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import torch

import aediff
from aediff.diffusion.restoration import RestoreOptions
from aediff.diffusion.samplers import SamplerOptions
from aediff.evaluation.latents import knn_controls, latent_space_metrics, network_feature_probes
from aediff.evaluation.protocols import spread_indices
from aediff.evaluation.restoration import control_rows, restoration_rows
from aediff.evaluation.results import encode
from results_files import machine, write_results

SPECS = "box:8,box:14,random:0.3,random:0.7,half,lines:3,upscale:2,upscale:4"
ONE_PASS_SIGMAS = "0.25,0.5,1,2"


def _images(dataset: Any, n: int, device: torch.device) -> torch.Tensor:
    return dataset.batch(spread_indices(len(dataset), n))["images"].to(device)


def _kind(spec: str) -> str:
    return "downsample" if spec.startswith("upscale") else "mask"


def one_pass_sigma(model: Any, validation: torch.Tensor, specs: list[str], sigmas: list[float], seed: int):
    """Per degradation kind, the one-pass noise level with the best mean PSNR on the missing pixels of the
    validation images, and every level's PSNR (all reported)."""
    tried: dict[str, dict[str, float]] = {}
    for kind in ("mask", "downsample"):
        chosen = [s for s in specs if _kind(s) == kind]
        if not chosen:
            continue
        tried[kind] = {}
        for sigma in sigmas:
            rows = restoration_rows(model, validation, chosen, [RestoreOptions(method="one-pass", sigma=sigma)], seed)
            tried[kind][f"{sigma:g}"] = sum(r.psnr for r in rows) / len(rows)
    best = {kind: float(max(by, key=by.get)) for kind, by in tried.items()}
    return best, tried


def restorations(args: argparse.Namespace, runs: dict[str, Any], train: Any, test: Any) -> dict[str, Any]:
    specs = args.specs.split(",")
    diffusion = runs["diffusion"].model
    x = _images(test, args.images, diffusion.device)
    validation = _images(train, args.validation_images, diffusion.device)
    sigmas = [float(s) for s in args.one_pass_sigmas.split(",")]
    best, tried = one_pass_sigma(diffusion, validation, specs, sigmas, args.seed)
    rows = []
    for spec in specs:
        methods = [RestoreOptions(method="ddnm", sampler=SamplerOptions(steps=args.steps)),
                   RestoreOptions(method="one-pass", sigma=best[_kind(spec)])]  # fmt: skip
        if _kind(spec) == "mask":
            methods.append(RestoreOptions(method="repaint", sampler=SamplerOptions(steps=args.steps)))
        rows += [("diffusion", r) for r in restoration_rows(diffusion, x, [spec], methods, args.seed)]
        for name in ("dae", "ae"):
            if name in runs:
                rows += [
                    (name, r) for r in restoration_rows(runs[name].model, x, [spec], [RestoreOptions()], args.seed)
                ]
        rows += [("control", r) for r in control_rows(x, [spec], args.seed)]
        print(f"restored {spec}")
    return {
        "one_pass_sigma": best,
        "one_pass_sigmas_tried": tried,
        "rows": [{"model": model, **encode(row)} for model, row in rows],
    }


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


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "# Restoration: every method and control on the same degraded images",
        "",
        f"`{result['command']}`",
        "",
        f"{result['machine']['cpu']}, {result['machine']['threads']} threads; {result['seconds']:.0f} s. "
        f"{result['images']} test images; PSNR on the missing pixels (dB, +- 1.96 SE over images), SSIM of the "
        "whole image.",
        "",
        f"One-pass noise level chosen on validation: {result['restoration']['one_pass_sigma']} "
        f"(tried: {result['restoration']['one_pass_sigmas_tried']}).",
        "",
        "| degradation | missing | model | method | PSNR | SSIM | NFE | s / image |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result["restoration"]["rows"]:
        lines.append(
            f"| {r['degradation']} | {r['missing_fraction']:.2f} | {r['model']} | {r['method']} | "
            f"{r['psnr']:.2f} +- {1.96 * r['psnr_se']:.2f} | {r['ssim']:.3f} | {r['network_evaluations']} | "
            f"{r['seconds_per_image']:.3f} |"
        )
    m = result["manifold"]
    lines += ["", "| features | sigma | k-NN | linear probe | untrained k-NN |", "|---|---|---|---|---|"]
    for level, p in m["features"].items():
        lines.append(f"| diffusion {level} | {p['sigma']:g} | {p['knn_accuracy']:.3f} | "
                     f"{p['linear_probe_accuracy']:.3f} | {p['untrained_knn']:.3f} |")  # fmt: skip
    for name, p in m["latents"].items():
        lines.append(f"| {name} latents | - | {p['knn_accuracy']:.3f} | {p['linear_probe_accuracy']:.3f} | - |")
    for name, acc in m["controls"].items():
        lines.append(f"| {name} | - | {acc:.3f} | - | - |")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--diffusion", type=Path, required=True, help="a trained pixel diffusion run")
    parser.add_argument("--dae", type=Path, help="a trained masking DAE run (--noise mask:0.3)")
    parser.add_argument("--ae", type=Path, help="a trained plain AE run")
    parser.add_argument("--specs", default=SPECS, help=f"degradations (default {SPECS})")
    parser.add_argument("--images", type=int, default=200, help="test images restored")
    parser.add_argument("--validation-images", type=int, default=100, help="training images to choose sigma on")
    parser.add_argument("--probe-images", type=int, default=2000, help="images per split for the probes")
    parser.add_argument("--one-pass-sigmas", default=ONE_PASS_SIGMAS)
    parser.add_argument("--steps", type=int, default=20, help="DDNM and RePaint steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "restoration")
    args = parser.parse_args(argv)
    started = time.time()
    runs = {name: aediff.load(path) for name, path in
            (("diffusion", args.diffusion), ("dae", args.dae), ("ae", args.ae)) if path is not None}  # fmt: skip
    data = runs["diffusion"].data
    train, test = data.load_by_position("train"), data.load_by_position("test")
    result = {
        "command": "python benchmarks/restoration.py " + shlex.join(argv),
        "machine": machine(),
        "images": args.images,
        "restoration": restorations(args, runs, train, test),
        "manifold": manifold(args, runs, train, test),
    }
    write_results(args.out, result, started, markdown)


if __name__ == "__main__":
    main(sys.argv[1:])
