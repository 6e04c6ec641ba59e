"""The network sizes of the colour-small rule (colour images up to 32 px: ``aediff.models.defaults``), searched on
a validation split carved from CIFAR-10's TRAINING split. CIFAR-10's test split is never read.

The budget, declared before any result. Per group of GROUPS (the families of the rule's networks), each candidate
trains for --minutes of wall clock on this machine's CPU, one after the other (run it on a quiet machine: a busy
one gives a candidate fewer steps), on the training part of the split. Candidates differ only in what GROUPS
names (the widths, or the spatial latent's channels); everything else is what the rule gives a new run on CIFAR-10
(e.g. the diffusion network's attention at 8 px, its learning rate), as `aediff train FAMILY --data cifar10` has it.
Diffusion trains unconditional here (the denoising score below does not see a class), where a plain run on
CIFAR-10 is class-conditioned.

The split: --train-images + --validation-images of CIFAR-10's 50,000 training images (a seeded draw; all of
them by default), of which --validation-images (the same share of every class, seed 0) are held out for scoring.
Each candidate is scored on the held-out images (--limit of them, spread evenly):
- ae, vae, ae-spatial: reconstruction MSE (lower is better) and PSNR of the validation images;
- diffusion: the MSE of its one-step x0 estimate of validation images noised at each of SIGMAS (the same noise
  for every candidate), averaged over the levels (lower is better); with --judge (a classifier run trained on
  CIFAR-10's training split), also FID of --samples samples (20 DPM-Solver++ steps) against the validation
  images in its features, which then decides.
The candidate with the best score per group is what the rule should hold. Every candidate's result is written,
chosen or not, with the machine (CPU name, threads, torch) and the command.

    python benchmarks/colour_defaults.py --minutes 5 --data-dir ../shared/data        # the search (~1 h)
    python benchmarks/colour_defaults.py --minutes 0.05 --train-images 300 --validation-images 100 --limit 50 \
        --groups ae diffusion --runs /tmp/colour-smoke --out /tmp/colour-smoke/result   # a smoke run

Writes benchmarks/results/colour_defaults.json and .md (--out), rewritten after every candidate.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import aediff
from aediff.data import DataConfig, load_dataset
from aediff.evaluation import denoising_metrics, generation_score, judges_for, reconstruction_metrics, sample_images
from aediff.models.defaults import DataShape
from aediff.runs import median_images_per_second, resolve_data_defaults
from aediff.training.train import train
from results_files import machine, save, write_results

CIFAR = DataShape(3, 32, 32)
# group -> (family, {candidate: model overrides}); the first candidate of each is the greyscale default's size,
# the one marked "(rule)" is what the rule holds now (provisional)
GROUPS: dict[str, tuple[str, dict[str, dict[str, Any]]]] = {
    "ae": ("ae", {
        "16,32,64 (grey default)": {"channels": [16, 32, 64]},
        "32,64,128 (rule)": {"channels": [32, 64, 128]},
        "64,128,256": {"channels": [64, 128, 256]},
    }),
    "vae": ("vae", {
        "16,32,64 (grey default)": {"channels": [16, 32, 64]},
        "32,64,128 (rule)": {"channels": [32, 64, 128]},
        "64,128,256": {"channels": [64, 128, 256]},
    }),
    "ae-spatial": ("ae", {  # the latent that latent diffusion works in: 8x8 at the rule's three stages
        "latent 4 channels (rule)": {"latent": "spatial", "latent_channels": 4},
        "latent 8 channels": {"latent": "spatial", "latent_channels": 8},
    }),
    "diffusion": ("diffusion", {
        "32,64,64 (grey default)": {"channels": [32, 64, 64]},
        "48,96,96": {"channels": [48, 96, 96]},
        "64,128,128 (rule)": {"channels": [64, 128, 128]},
    }),
}  # fmt: skip
SIGMAS = (0.1, 0.3, 0.6, 1.0)  # noise levels of the diffusion score, in [-1, 1] pixel units
SPLIT_SEED = 0


def validation_split(runs: Path, train_images: int, validation_images: int, data_dir: str | None) -> DataConfig:
    """A seeded draw of train_images + validation_images of CIFAR-10's training split as an npz, whose "test"
    split (``DataConfig.load("test")``) is the validation part: the same share of every class, seed SPLIT_SEED."""
    total = train_images + validation_images
    path = runs / f"cifar10-train-{train_images}-{validation_images}.npz"
    if not path.exists():
        full = load_dataset("cifar10", "train", data_dir=data_dir)
        if total > len(full):
            raise SystemExit(f"--train-images + --validation-images is {total}; CIFAR-10 trains on {len(full)}")
        keep = torch.randperm(len(full), generator=torch.Generator().manual_seed(SPLIT_SEED))[:total]
        runs.mkdir(parents=True, exist_ok=True)
        np.savez(path, images=full.images[keep].permute(0, 2, 3, 1).numpy(), labels=full.labels[keep].numpy())
    return DataConfig(spec=f"npz:{path}", seed=SPLIT_SEED, test_fraction=validation_images / total)


def train_candidate(family: str, overrides: dict, data: DataConfig, out: Path, minutes: float) -> aediff.runs.Run:
    """``family`` with the rule's defaults and ``overrides``, trained for ``minutes`` into ``out`` (replaced)."""
    if out.exists():
        shutil.rmtree(out)
    model = {**overrides, **({"conditioning.kind": "none"} if family == "diffusion" else {})}
    training = {"max_minutes": minutes, "log_every": 10, "checkpoint_every": 10**6, "preview_every": 0,
                "tensorboard": False}  # fmt: skip
    train(family, out, data, model=model, training=training, progress=False)
    return aediff.load(out, device="cpu")


def score(run: aediff.runs.Run, family: str, validation: Any, args: argparse.Namespace, judge: Any) -> dict:
    """The candidate's validation numbers and its ``score`` (lower is better; see the module's docstring)."""
    model = run.model
    if family != "diffusion":
        found = reconstruction_metrics(model, validation, limit=args.limit)
        return {"mse": found["mse"], "mse_se": found["mse_se"], "psnr": found["psnr"], "score": found["mse"]}
    levels = {}
    for sigma in SIGMAS:
        found = denoising_metrics(model, validation, f"gaussian:{sigma:g}", seed=0, limit=args.limit)
        levels[f"{sigma:g}"] = {"mse": found["mse"], "mse_se": found["mse_se"], "psnr": found["psnr"]}
    row: dict[str, Any] = {"denoising": levels, "mse": float(np.mean([v["mse"] for v in levels.values()]))}
    row["score"] = row["mse"]
    if judge is not None:
        images = sample_images(model, args.samples, seed=1)
        fid = generation_score(images, judge.features, validation, feature_extractor=judge.name,
                               reference_name="validation", seed=0, reference_features=judge.reference)  # fmt: skip
        row |= {"fid": fid.fid, "fid_se": fid.fid_se, "score": fid.fid}
    return row


class Judge:
    """The classifier's first feature space and the validation images' features in it, computed once."""

    def __init__(self, folder: Path, validation: Any):
        classifier = aediff.load(folder, device="cpu").model.eval()
        first = judges_for(classifier)[0]
        self.name, self.features, self.reference = first.name, first.features, first.reference_features(validation)


def markdown(r: dict) -> str:
    m = r["machine"]
    judged = "FID in the judge's features decides" if r["judge"] else "the mean denoising MSE decides (no --judge)"
    lines = [
        "# Colour-small network sizes, searched on a validation split of CIFAR-10's training split",
        "",
        f"Machine: {m['cpu']}, {m['threads']} threads, torch {m['torch']}. Budget: {r['minutes']:g} min of "
        f"training per candidate. Split: {r['train_images']} training and {r['validation_images']} validation "
        f"images from CIFAR-10's training split (seed {SPLIT_SEED}), {r['scored_images']} of them scored; the "
        f"test split is not read. Diffusion: noise levels {', '.join(map(str, SIGMAS))}; {judged}. "
        f"Command: `{r['command']}`",
        "",
        "| group | candidate | parameters | steps | train img/s | validation MSE | validation PSNR (dB) | FID "
        "| chosen |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for group, rows in r["groups"].items():
        best = min(rows, key=lambda name: rows[name]["validation"]["score"]) if rows else None
        for name, row in rows.items():
            v = row["validation"]
            psnr = v["psnr"] if "psnr" in v else np.mean([level["psnr"] for level in v["denoising"].values()])
            fid = f"{v['fid']:.2f}" if "fid" in v else ""
            lines.append(
                f"| {group} | {name} | {row['parameters']:,} | {row['steps']} | {row['images_per_second']:.0f} | "
                f"{v['mse']:.5f} | {psnr:.2f} | {fid} | {'yes' if name == best else ''} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=5.0, help="training budget per candidate (wall clock)")
    parser.add_argument("--groups", nargs="*", default=list(GROUPS), choices=list(GROUPS))
    parser.add_argument("--train-images", type=int, default=45_000, help="of CIFAR-10's training split")
    parser.add_argument("--validation-images", type=int, default=5_000, help="held out of CIFAR-10's training split")
    parser.add_argument("--limit", type=int, default=None, help="validation images scored (default: all)")
    parser.add_argument("--judge", type=Path, default=None, help="a classifier run trained on CIFAR-10 (FID decides)")
    parser.add_argument("--samples", type=int, default=1000, help="diffusion samples per FID (with --judge)")
    parser.add_argument("--data-dir", default=None, help="where cifar10-jpeg.tar.gz is (else $AEDIFF_DATA)")
    parser.add_argument("--runs", type=Path, default=Path("runs/colour-defaults"), help="scratch folder of the runs")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "colour_defaults")
    args = parser.parse_args(argv)
    started = time.time()
    data = validation_split(args.runs, args.train_images, args.validation_images, args.data_dir)
    validation = data.load("test")  # the held-out part of CIFAR-10's TRAINING split
    judge = Judge(args.judge, validation) if args.judge else None
    results: dict[str, Any] = {
        "machine": machine(),
        "command": "python benchmarks/colour_defaults.py " + shlex.join(argv),
        "minutes": args.minutes,
        "train_images": len(data.load("train")),
        "validation_images": len(validation),
        "scored_images": min(args.limit or len(validation), len(validation)),
        "judge": str(args.judge) if args.judge else None,
        "sigmas": list(SIGMAS),
        "groups": {},
    }
    for group in args.groups:
        family, candidates = GROUPS[group]
        rows = results["groups"].setdefault(group, {})
        for name, overrides in candidates.items():
            run = train_candidate(family, overrides, data, args.runs / group / slug(name), args.minutes)
            rows[name] = {
                "family": family,
                "overrides": overrides,
                "data_defaults": run.data_defaults.record() if run.data_defaults else None,
                "parameters": sum(p.numel() for p in run.model.parameters()),
                "steps": run.summary.steps,
                "images_per_second": median_images_per_second(run),
                "validation": score(run, family, validation, args, judge),
            }
            print(f"{group} / {name}: {run.summary.steps} steps, score {rows[name]['validation']['score']:.5f}")
            save(args.out, results, markdown)
    results["rule_now"] = {g: resolve_data_defaults(GROUPS[g][0], CIFAR).record() for g in args.groups}
    write_results(args.out, results, started, markdown)


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")


if __name__ == "__main__":
    main(sys.argv[1:])
