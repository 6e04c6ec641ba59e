"""The autoencoder family on mnist5k under equal wall-clock budgets (issue: AE / VAE / DAE core).

Trains, each for the same number of minutes on this machine:
  AE at bottleneck 2, 8, 32, 128 (vector latents), a Bernoulli VAE (32-d latent, dynamically binarized
  MNIST, the literature's protocol), and a DAE trained at gaussian:0.5;
then scores each on mnist5k's test split (1,000 images): reconstruction PSNR/SSIM, the VAE's ELBO and
IWAE (k=100) NLL in nats, the DAE's PSNR on test images corrupted at its training level, and training
throughput (median images/s over the logged windows).

    python benchmarks/autoencoders.py --minutes 5                # the documented numbers (~35 min)
    python benchmarks/autoencoders.py --minutes 0.2 --only ae32  # a smoke run

Writes benchmarks/results/autoencoders.json and .md.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import aediff
from aediff.data import DataConfig
from aediff.evaluation import denoising_metrics, reconstruction_metrics, vae_likelihood
from aediff.runs import median_images_per_second
from aediff.training.train import train
from results_files import machine

MODELS = {
    "ae2": ("ae", {"bottleneck_dim": 2}),
    "ae8": ("ae", {"bottleneck_dim": 8}),
    "ae32": ("ae", {"bottleneck_dim": 32}),
    "ae128": ("ae", {"bottleneck_dim": 128}),
    "vae": ("vae", {"bottleneck_dim": 32, "likelihood": "bernoulli"}),
    "dae": ("dae", {"bottleneck_dim": 32, "corruption": "gaussian:0.5"}),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=5.0, help="training budget per model")
    parser.add_argument("--data", default="mnist5k")
    parser.add_argument("--only", nargs="*", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--runs", type=Path, default=Path("runs/bench-autoencoders"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/autoencoders"))
    parser.add_argument("--iwae-k", type=int, default=100)
    parser.add_argument("--set", nargs="*", default=[], help="model overrides for every model, key=value")
    args = parser.parse_args()

    from aediff.config import parse_assignment

    common = dict(parse_assignment(s) for s in args.set)
    data = DataConfig(spec=args.data)
    test = data.load("test")
    train_size = len(data.load("train"))
    results = {
        "machine": machine(),
        "command": shlex.join(["python", *sys.argv]),
        "data": f"{args.data}:test ({len(test)} images)",
        "minutes_per_model": args.minutes,
        "models": {},
    }
    for name in args.only:
        family, overrides = MODELS[name]
        run = args.runs / name
        if (run / "config.json").exists():
            import shutil

            shutil.rmtree(run)
        t0 = time.time()
        result = train(
            family,
            run,
            args.data,
            model={**overrides, **common},
            training={"max_minutes": args.minutes, "log_every": 20},
            progress=False,
        )
        loaded = aediff.load(run)
        model = loaded.model
        row = {
            "family": family,
            **overrides,
            "steps": result.step,
            "epochs": result.images_seen / train_size,
            "train_images_per_s": median_images_per_second(loaded),
            "parameters": sum(p.numel() for p in model.parameters()),
        }
        row.update({f"test_{k}": v for k, v in reconstruction_metrics(model, test).items() if k != "num_images"})
        if family == "vae":
            row.update(vae_likelihood(model, test, k=args.iwae_k))
        if family == "dae":
            row.update({f"denoise_{k}": v for k, v in denoising_metrics(model, test, overrides["corruption"]).items()})
        row["wall_seconds"] = time.time() - t0
        results["models"][name] = row
        print(name, json.dumps(row), file=sys.stderr, flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".json").write_text(json.dumps(results, indent=2))
    write_markdown(results, args.out.with_suffix(".md"))


def write_markdown(results: dict, path: Path) -> None:
    lines = [
        f"Data: {results['data']}; {results['minutes_per_model']} min of training per model; "
        f"torch {results['machine']['torch']}, {results['machine']['threads']} threads, {results['machine']['cpu']}.",
        "",
        f"Command: `{results['command']}`",
        "",
        "| model | steps | train img/s | test PSNR (dB) | test SSIM | other |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in results["models"].items():
        other = ""
        if row["family"] == "vae":
            other = (
                f"ELBO NLL {row['nll_elbo_nats']:.1f} nats, "
                f"IWAE(k={row['iwae_k']}) {row['nll_iwae_nats']:.1f} nats "
                f"({row['iwae_bits_per_dim']:.3f} bits/dim)"
            )
        if row["family"] == "dae":
            other = (
                f"{row['denoise_corruption']}: noisy {row['denoise_psnr_noisy']:.2f} dB -> "
                f"denoised {row['denoise_psnr']:.2f} dB"
            )
        lines.append(
            f"| {name} | {row['steps']} | {row['train_images_per_s']:.0f} | {row['test_psnr']:.2f} | "
            f"{row['test_ssim']:.3f} | {other} |"
        )
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
