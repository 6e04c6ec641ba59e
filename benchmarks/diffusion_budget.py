"""aediff's diffusion model on mnist5k at a CPU budget: FID / KID of its samples and FID against sampling steps.

The model trains for --minutes on mnist5k's training split (batch 64), then draws 1,000 samples scored by FID
and KID in the features of `aediff train classifier` against mnist5k's test split; then every sampler at
several step counts. This run is the pixel-space reference of benchmarks/conditioning.py (latent diffusion).

The comparison with diffusers and denoising-diffusion-pytorch that this script used to make (each peer once,
untuned, on the test split) is replaced by benchmarks/peers.py (validation-split tuning, the peers' own
recipes and sweeps, equal budgets); its old rows stay in benchmarks/results/diffusion_budget.json as a record.

    aediff train classifier --data mnist5k --out runs/clf --epochs 15      # the feature extractor, once
    python benchmarks/diffusion_budget.py --minutes 10                      # the documented run
    python benchmarks/diffusion_budget.py --minutes 1 --sweep-samples 200   # a smoke run

Writes benchmarks/results/diffusion_budget.json and .md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

import aediff
from aediff.data import DataConfig
from aediff.diffusion import SAMPLERS, SamplerOptions
from aediff.evaluation import generation_score, sample_images
from aediff.models import Model
from aediff.runs import median_images_per_second
from aediff.training.train import train
from results_files import machine

BATCH = 64


def timed_training(step: Callable[[torch.Tensor], float], data, minutes: float, seed: int = 0) -> dict:
    """Run ``step(batch)`` on shuffled batches until ``minutes`` pass; returns steps and median images/s."""
    g = torch.Generator().manual_seed(seed)
    steps, start, window_start, rates = 0, time.perf_counter(), time.perf_counter(), []
    order = torch.randperm(len(data), generator=g)
    position = 0
    while time.perf_counter() - start < minutes * 60:
        if position + BATCH > len(data):
            order, position = torch.randperm(len(data), generator=g), 0
        step(data.batch(order[position : position + BATCH])["images"])
        position += BATCH
        steps += 1
        if steps % 20 == 0:
            now = time.perf_counter()
            rates.append(20 * BATCH / (now - window_start))
            window_start = now
    return {
        "steps": steps,
        "train_images_per_s": statistics.median(rates) if rates else float("nan"),
        "train_seconds": time.perf_counter() - start,
    }


def timed_sampling(sample: Callable[[int], torch.Tensor], n: int, nfe: int, chunk: int = 250) -> tuple:
    """Draw n samples in chunks; returns (images [n, 1, 28, 28] in [-1, 1], images/s per NFE)."""
    start = time.perf_counter()
    images = torch.cat([sample(min(chunk, n - i)).cpu() for i in range(0, n, chunk)])
    seconds = time.perf_counter() - start
    return images.clamp(-1, 1), n * nfe / seconds


# --- contenders ----------------------------------------------------------------------------------------------


def seeded_sampler(model: Model) -> Callable[[int], torch.Tensor]:
    """``sample(n)``: n images with the model's default sampler, each call seeded 0, 1, 2, ... in turn."""
    seed = iter(range(10**6))

    def sample(n: int) -> torch.Tensor:
        return model.sample(n, generator=torch.Generator(model.device).manual_seed(next(seed)))

    return sample


def default_nfe(model: Model) -> int:
    """Network evaluations per sample of the model's default sampler at its default steps."""
    sampling = model.config.sampling
    return SAMPLERS[sampling.sampler].evaluations(sampling.steps)


def run_aediff(args, train_set) -> tuple[dict, Model]:
    run = args.runs / "aediff"
    if run.exists():
        import shutil

        shutil.rmtree(run)
    from aediff.config import parse_assignment

    overrides = dict(parse_assignment(s) for s in args.set)
    result = train(
        "diffusion",
        run,
        args.data,
        model=overrides,
        progress=False,
        training={"max_minutes": args.minutes, "batch_size": BATCH, "log_every": 20},
    )
    loaded = aediff.load(run)
    model = loaded.model
    stats = {
        "steps": result.step,
        "train_images_per_s": median_images_per_second(loaded),
        "parameters": sum(p.numel() for p in model.parameters()),
        "config": dataclasses.asdict(loaded.config),
    }
    return stats, model


# --- the run -------------------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0, help="training budget per contender")
    parser.add_argument("--data", default="mnist5k")
    parser.add_argument("--classifier", type=Path, default=Path("runs/clf"))
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--sweep-samples", type=int, default=1000, help="samples per point of the step sweep")
    parser.add_argument("--sweep-steps", type=int, nargs="*", default=[5, 10, 20, 50])
    parser.add_argument("--reference-steps", type=int, default=250, help="one long run of the default sampler")
    parser.add_argument("--sweep-samplers", nargs="*", default=["ddim", "euler", "heun", "dpm++", "ddpm"])
    parser.add_argument("--only", nargs="*", default=["aediff"], choices=["aediff"])
    parser.add_argument("--set", nargs="*", default=[], help="aediff model overrides, key=value")
    parser.add_argument("--runs", type=Path, default=Path("runs/bench-diffusion"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/diffusion_budget"))
    parser.add_argument(
        "--sweep-only",
        action="store_true",
        help="no training: add --sweep-samplers x --sweep-steps to the existing results, "
        "sampling the aediff run left in --runs",
    )
    parser.add_argument("--rescore", action="store_true", help="--sweep-only: also redo aediff's main row")
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())

    data = DataConfig(spec=args.data)
    train_set, test = data.load("train"), data.load("test")
    classifier = aediff.load(args.classifier).model

    def score(images):
        return generation_score(
            images,
            classifier.features,
            test,
            feature_extractor=f"classifier:{args.classifier}",
            reference_name=f"{args.data}:test",
        ).to_dict()

    results = {
        "machine": machine(),
        "minutes": args.minutes,
        "batch_size": BATCH,
        "samples": args.samples,
        "contenders": {},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)

    def save():
        args.out.with_suffix(".json").write_text(json.dumps(results, indent=2))
        write_markdown(results, args.out.with_suffix(".md"))

    previous = args.out.with_suffix(".json")
    if not args.sweep_only and previous.exists():
        # contenders left out by --only keep their rows from the last run at the same budget
        kept = json.loads(previous.read_text())
        if kept.get("minutes") == args.minutes:
            results["contenders"] = {k: v for k, v in kept["contenders"].items() if k not in args.only}

    if args.sweep_only:
        results = json.loads(args.out.with_suffix(".json").read_text())
        model = aediff.load(args.runs / "aediff").model
        if args.rescore:  # sample and score the default sampler again (e.g. after a sampler fix)
            torch.manual_seed(0)
            images, per_nfe = timed_sampling(seeded_sampler(model), args.samples, default_nfe(model))
            results["contenders"]["aediff"].update({"sample_images_per_s_per_nfe": per_nfe, **score(images)})
            print("aediff rescored", json.dumps(results["contenders"]["aediff"]), file=sys.stderr, flush=True)
            save()
        for sampler in args.sweep_samplers:
            for steps in args.sweep_steps:
                images = sample_images(
                    model, results["sweep_samples"], seed=1, options=SamplerOptions(sampler=sampler, steps=steps)
                )
                results["aediff_step_sweep"].setdefault(sampler, {})[str(steps)] = score(images)["fid"]
                print(
                    f"sweep {sampler} {steps}: FID {results['aediff_step_sweep'][sampler][str(steps)]:.3f}",
                    file=sys.stderr,
                    flush=True,
                )
                save()
        return

    for name in args.only:
        print(f"== {name}: training {args.minutes} min", file=sys.stderr, flush=True)
        stats, model = run_aediff(args, train_set)
        nfe, sample = default_nfe(model), seeded_sampler(model)
        stats["sampler"] = f"{model.config.sampling.sampler}, {model.config.sampling.steps} steps"
        torch.manual_seed(0)
        images, per_nfe = timed_sampling(sample, args.samples, nfe)
        stats.update({"nfe": nfe, "sample_images_per_s_per_nfe": per_nfe, **score(images)})
        from aediff.data import save_image_grid

        save_image_grid(images[:100], args.out.parent / f"diffusion_budget_{name}.png", nrow=10)
        results["contenders"][name] = stats
        print(name, json.dumps(stats), file=sys.stderr, flush=True)
        save()
        if name == "aediff" and args.sweep_samples:
            sweep = results.setdefault("aediff_step_sweep", {})
            results["sweep_samples"] = args.sweep_samples
            grid = [(sampler, steps) for sampler in args.sweep_samplers for steps in args.sweep_steps]
            if (model.config.sampling.sampler, args.reference_steps) not in grid:
                grid.append((model.config.sampling.sampler, args.reference_steps))
            for sampler, steps in grid:
                images = sample_images(
                    model, args.sweep_samples, seed=1, options=SamplerOptions(sampler=sampler, steps=steps)
                )
                fid = score(images)["fid"]
                sweep.setdefault(sampler, {})[str(steps)] = fid
                print(f"sweep {sampler} {steps}: FID {fid:.3f}", file=sys.stderr, flush=True)
                save()
    save()


def write_markdown(results: dict, path: Path) -> None:
    lines = [
        f"{results['minutes']} min of training each on mnist5k's train split, batch {results['batch_size']}, "
        f"{results['samples']} samples scored against mnist5k's test split in the features of "
        f"`aediff train classifier`; torch {results['machine']['torch']}, "
        f"{results['machine']['threads']} threads.",
        "",
        "| contender | parameters | steps | train img/s | sampler (NFE) | sample img/s x NFE | FID | KID |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results["contenders"].items():
        lines.append(
            f"| {name} | {r['parameters'] / 1e6:.2f}M | {r['steps']} | {r['train_images_per_s']:.0f} | "
            f"{r['sampler']} ({r['nfe']}) | {r['sample_images_per_s_per_nfe']:.0f} | {r['fid']:.3f} | "
            f"{r['kid_mean']:.4f} |"
        )
    sweep = results.get("aediff_step_sweep")
    if sweep:
        steps = sorted({int(s) for row in sweep.values() for s in row})
        lines += [
            "",
            f"aediff: FID against sampling steps ({results.get('sweep_samples')} samples each)",
            "",
            "| sampler | " + " | ".join(f"{s} steps" for s in steps) + " |",
            "|---|" + "---|" * len(steps),
        ]
        for sampler, row in sweep.items():
            lines.append(
                f"| {sampler} | " + " | ".join(f"{row[str(s)]:.3f}" if str(s) in row else "" for s in steps) + " |"
            )
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
