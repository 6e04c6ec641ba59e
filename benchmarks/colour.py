"""Quality per CPU-minute on colour: pixel diffusion, latent diffusion in each autoencoder's latent space, and the
VAE, each trained for the same minutes on CIFAR-10 (32x32 RGB), their samples scored in both judges.

Entries (``ENTRIES``), each given every budget of --minutes (minutes of training on this machine, all its cores;
2 cores here, so a "10 CPU-minute" budget in the issue's words is 10 minutes of the whole 2-core machine):

- ``diffusion``: `aediff train diffusion --data cifar10` for the whole budget (the data's defaults).
- ``vae``: `aediff train vae`, the whole budget; samples of its prior.
- ``ldm-ae`` / ``ldm-kl-ae`` / ``ldm-vqvae``: an autoencoder (a plain AE with a spatial latent, LDM's KL-AE with
  its patch discriminator from step 1000, the VQ-VAE) trained for --ae-share of the budget, then latent
  diffusion in its latent space for the rest: the autoencoder's time is in the budget. The share (a third) is
  a fixed choice, not a tuned one.

Every model takes its family's defaults for 32x32 RGB (rule colour-small) and seed 0; all sample unconditionally.
Scores: FID of --samples samples against CIFAR-10's test split in both judges of --judge (a CIFAR-10 classifier
run: "classifier", its penultimate features; "classifier-layers", which also sees blur), each with a bootstrap
interval (both sets resampled); the paired difference of each entry's FID to pixel diffusion's at the same
budget; samples per second of the default sampler (decoder included); training images per second. An 8x8 grid of
each entry's samples goes to docs/img/colour_ENTRY_Bm.png.

    export AEDIFF_DATA=../shared/data    # CIFAR-10 as JPEGs (cifar10-jpeg.tar.gz)
    python benchmarks/colour.py --judge RUNS/classifier --minutes 10 --runs /work/runs/colour \\
        --out benchmarks/results/colour_10m

Inception-v3 weights are not on disk here, so nothing is scored in Inception. Writes OUT.json and OUT.md.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

import aediff
from aediff.data import load_dataset
from aediff.evaluation import judges_for, sample_images
from aediff.metrics import fid_bootstrap, frechet_distance
from aediff.metrics.stats import Estimate, difference_of_draws
from aediff.reports import figures
from aediff.runs import median_images_per_second
from aediff.training.train import train
from results_files import machine, write_results

DOCS_IMAGES = Path(__file__).resolve().parents[1] / "docs" / "img"


@dataclass(frozen=True)
class Entry:
    """One contender: the family sampled, and (latent diffusion) the autoencoder trained first in its budget."""

    family: str
    what: str
    autoencoder: str | None = None  # the autoencoder's family, trained for --ae-share of the budget
    autoencoder_model: dict[str, Any] = field(default_factory=dict)


ENTRIES = {
    "diffusion": Entry("diffusion", "pixel diffusion (U-Net)"),
    "vae": Entry("vae", "VAE, samples of its prior"),
    "ldm-ae": Entry("latent-diffusion", "latent diffusion in a plain AE's spatial latent", "ae", {"latent": "spatial"}),
    "ldm-kl-ae": Entry("latent-diffusion", "latent diffusion in LDM's KL-AE latent (patch discriminator)", "kl-ae"),
    "ldm-vqvae": Entry("latent-diffusion", "latent diffusion in the VQ-VAE's latent", "vqvae"),
}


def _fresh(folder: Path) -> Path:
    if folder.exists():
        shutil.rmtree(folder)
    return folder


def train_entry(name: str, entry: Entry, minutes: float, args) -> dict[str, Any]:
    """Train ``entry`` for ``minutes`` in all into args.runs/NAME-Bm; returns what was trained and its folder."""
    base = args.runs / f"{name}-{minutes:g}m"
    record: dict[str, Any] = {"what": entry.what, "minutes": minutes}
    main_minutes = minutes
    model: dict[str, Any] = {}
    if entry.autoencoder is not None:
        ae_minutes = minutes * args.ae_share
        main_minutes = minutes - ae_minutes
        ae_folder = _fresh(base / "autoencoder")
        t0 = time.time()
        done = train(entry.autoencoder, ae_folder, args.data, model=dict(entry.autoencoder_model),
                     training={"max_minutes": ae_minutes, "seed": args.seed, "tensorboard": False},
                     progress=False)  # fmt: skip
        ae = aediff.load(ae_folder)
        record["autoencoder"] = {
            "family": entry.autoencoder,
            "minutes": ae_minutes,
            "steps": done.step,
            "wall_seconds": time.time() - t0,
            "train_images_per_s": median_images_per_second(ae),
            "parameters": sum(p.numel() for p in ae.model.parameters()),
        }
        model["autoencoder.path"] = str(ae_folder)
        print(f"{name} {minutes:g}m: trained {entry.autoencoder} ({done.step} steps)", flush=True)
    folder = _fresh(base / "model")
    t0 = time.time()
    done = train(entry.family, folder, args.data, model=model,
                 training={"max_minutes": main_minutes, "seed": args.seed, "tensorboard": False},
                 progress=False)  # fmt: skip
    run = aediff.load(folder)
    record.update(
        family=entry.family,
        model_minutes=main_minutes,
        steps=done.step,
        wall_seconds=time.time() - t0,
        train_images_per_s=median_images_per_second(run),
        parameters=sum(p.numel() for p in run.model.parameters()),
        trainable_parameters=sum(p.numel() for p in run.model.parameters() if p.requires_grad),
        run=str(folder),
    )
    print(f"{name} {minutes:g}m: trained {entry.family} ({done.step} steps)", flush=True)
    return record


@torch.no_grad()
def features(judge, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    return torch.cat([judge.features(images[i : i + batch_size]) for i in range(0, len(images), batch_size)])


@torch.no_grad()
def judge_accuracy(classifier, test, batch_size: int = 500) -> float:
    """Top-1 accuracy of the judge classifier on the test split (how much it knows of the data)."""
    right = 0
    for i in range(0, len(test), batch_size):
        batch = test.batch(torch.arange(i, min(i + batch_size, len(test))))
        right += int((classifier.logits(batch["images"]).argmax(1) == batch["labels"]).sum())
    return right / len(test)


def score_entry(record: dict, judges, reference: dict[str, torch.Tensor], args) -> tuple[dict, dict]:
    """Sample the trained entry, time it, and score FID in every judge: (scores, {judge: bootstrap draws})."""
    run = aediff.load(record["run"])
    t0 = time.perf_counter()
    images = sample_images(run.model, args.samples, args.seed)
    seconds = time.perf_counter() - t0
    scores: dict[str, Any] = {
        "samples": args.samples,
        "sample_seconds": seconds,
        "samples_per_s": args.samples / seconds,
    }
    draws = {}
    for judge in judges:
        feats = features(judge, images).numpy()
        ref = reference[judge.name].numpy()
        draws[judge.name] = fid_bootstrap(feats, ref, draws=args.draws, seed=args.seed)
        scores[f"fid_{judge.name}"] = Estimate.from_draws(frechet_distance(feats, ref), draws[judge.name]).to_dict()
    grid = DOCS_IMAGES / f"colour_{record['name']}_{record['minutes']:g}m.png"
    grid.write_bytes(figures.image_grid(images[:64], nrow=8))
    scores["grid"] = str(grid.relative_to(DOCS_IMAGES.parents[1]))
    return scores, draws


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--judge", type=Path, required=True, help="a classifier run trained on the data")
    parser.add_argument("--data", default="cifar10")
    parser.add_argument("--minutes", default="10", help="budgets, comma-separated minutes (e.g. 10,30)")
    parser.add_argument("--entries", default=",".join(ENTRIES), help=f"of {', '.join(ENTRIES)}")
    parser.add_argument("--ae-share", type=float, default=1 / 3, help="latent diffusion: the autoencoder's share")
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--draws", type=int, default=50, help="bootstrap draws per FID")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs", type=Path, default=Path("runs/colour"), help="where the models are trained")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/colour"))
    parser.add_argument("--note", action="append", default=[], help="a sentence for the report (repeatable)")
    parser.add_argument(
        "--add",
        action="store_true",
        help="add to OUT.json: keep its entries (with the same judge, data and draws) and train only the others",
    )
    args = parser.parse_args()
    names = [n.strip() for n in args.entries.split(",") if n.strip()]
    if unknown := sorted(set(names) - set(ENTRIES)):
        sys.exit(f"--entries: unknown {unknown}; choose from {', '.join(ENTRIES)}")
    budgets = [float(m) for m in args.minutes.split(",")]
    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    print(command, flush=True)
    started = time.time()

    judge_run = aediff.load(args.judge)
    judges = judges_for(judge_run.model.eval())
    test = load_dataset(args.data, "test")
    reference_images = test.batch(torch.arange(len(test)))["images"]
    reference = {j.name: features(j, reference_images) for j in judges}
    results: dict[str, Any] = {
        "command": command,
        "machine": machine(),
        "notes": args.note,
        "data": args.data,
        "reference": f"{args.data}:test ({len(reference_images)} images)",
        "judge": str(args.judge),
        "judge_accuracy": judge_accuracy(judge_run.model, test),
        "ae_share": args.ae_share,
        "bootstrap_draws": args.draws,
        "entries": {},
    }
    if args.add:
        results = _earlier(args, results)
    for minutes in budgets:
        # FID draws of the entries already scored at this budget (paired: the same reference resamples)
        draws_by_entry = {e["name"]: e["fid_draws"] for e in results["entries"].values() if e["minutes"] == minutes}
        for name in names:
            if _key(name, minutes) in results["entries"]:
                continue
            record = {"name": name, **train_entry(name, ENTRIES[name], minutes, args)}
            scores, draws_by_entry[name] = score_entry(record, judges, reference, args)
            record.update(scores, fid_draws={j: list(map(float, d)) for j, d in draws_by_entry[name].items()})
            results["entries"][_key(name, minutes)] = record
            print(f"{name} {minutes:g}m: " + ", ".join(f"FID {j.name} {scores[f'fid_{j.name}']['value']:.2f}"
                                                       for j in judges), flush=True)  # fmt: skip
            _differences(results, draws_by_entry, minutes, judges)
            write_results(args.out, results, started, _markdown)  # after each entry: a long run keeps what it has


def _key(name: str, minutes: float) -> str:
    """An entry's key in the results: NAME@Bm."""
    return f"{name}@{minutes:g}m"


def _earlier(args, fresh: dict) -> dict:
    """OUT.json's results, to add to (``--add``), its commands kept; exits unless they were scored alike."""
    path = args.out.with_suffix(".json")
    if not path.exists():
        return fresh
    earlier = json.loads(path.read_text())
    alike = ("judge", "data", "bootstrap_draws", "ae_share", "reference")
    if any(earlier.get(k) != fresh[k] for k in alike):
        sys.exit(f"--add: {path} was scored with other settings ({', '.join(alike)} must match); choose another --out")
    commands = earlier.get("commands", [earlier["command"]])
    earlier.update(commands=[*commands, fresh["command"]], command=fresh["command"])
    earlier["notes"] = earlier["notes"] + [n for n in fresh["notes"] if n not in earlier["notes"]]
    if earlier["machine"] != fresh["machine"]:
        earlier.setdefault("other_machines", []).append(fresh["machine"])
    return earlier


def _differences(results: dict, draws_by_entry: dict, minutes: float, judges) -> None:
    """Each scored entry's paired FID difference to pixel diffusion's at the same budget (once that is scored)."""
    if "diffusion" not in draws_by_entry:
        return
    pixel = results["entries"][_key("diffusion", minutes)]
    for name, draws in draws_by_entry.items():
        record = results["entries"][_key(name, minutes)]
        record["minus_diffusion"] = {
            j.name: difference_of_draws(record[f"fid_{j.name}"]["value"], draws[j.name],
                                        pixel[f"fid_{j.name}"]["value"], draws_by_entry["diffusion"][j.name]).to_dict()
            for j in judges
        }  # fmt: skip


def _fmt(e: dict, digits: int = 1) -> str:
    return f"{e['value']:.{digits}f} [{e['low']:.{digits}f}, {e['high']:.{digits}f}]"


def _markdown(r: dict) -> str:
    m = r["machine"]
    judge_names = sorted({j for e in r["entries"].values() for j in e["fid_draws"]})
    lines = [
        f"# Quality per CPU-minute on {r['data']}",
        "",
        f"CPU: {m['cpu']} ({m['threads']} threads, torch {m['torch']}). Reference: {r['reference']}; judge "
        f"classifier `{r['judge']}` (test accuracy {r['judge_accuracy']:.3f}). FID intervals are 95% "
        f"(value +- 1.96 se, {r['bootstrap_draws']} bootstrap "
        "draws, both sets resampled); 'minus diffusion' is the paired difference to pixel diffusion's FID at the "
        "same budget (same reference resamples), so the reference's own noise cancels. Latent diffusion's budget "
        f"includes its autoencoder's training ({r['ae_share']:.2f} of it).",
        "",
        "Commands (each `--add` trained and scored the entries it names, beside the earlier ones):",
        "",
        *[f"    {c}" for c in r.get("commands", [r["command"]])],
        "",
    ]
    if r.get("other_machines"):
        lines += ["Also run on: " + "; ".join(f"{m['cpu']} ({m['threads']} threads)" for m in r["other_machines"]), ""]
    if r["notes"]:
        lines += ["Notes:", ""] + [f"- {note}" for note in r["notes"]] + [""]
    header = ["entry", "budget (min)", "steps (AE + model)", "parameters"]
    header += [f"FID ({j})" for j in judge_names] + [f"minus diffusion ({j})" for j in judge_names]
    header += ["samples / s", "train images / s"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for e in r["entries"].values():
        ae = e.get("autoencoder")
        steps = f"{ae['steps']} + {e['steps']}" if ae else str(e["steps"])
        diff = e.get("minus_diffusion", {})
        row = [e["name"], f"{e['minutes']:g}", steps, f"{e['trainable_parameters']:,}"]
        row += [_fmt(e[f"fid_{j}"]) for j in judge_names]
        row += ["(itself)" if e["name"] == "diffusion" else _fmt(diff[j]) if j in diff else "" for j in judge_names]
        row += [f"{e['samples_per_s']:.1f}", f"{e['train_images_per_s']:.0f}"]
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "Entries:", ""]
    seen = {}
    for e in r["entries"].values():
        seen.setdefault(e["name"], e)
    lines += [f"- **{n}**: {e['what']}" for n, e in seen.items()]
    lines += ["", "Sample grids (8x8, the first 64 samples):", ""]
    lines += [f"- {e['name']} at {e['minutes']:g} min: `{e['grid']}`" for e in r["entries"].values()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
