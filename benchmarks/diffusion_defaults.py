"""How aediff's diffusion defaults were chosen: equal short budgets for a few alternatives, scored alike.

Each variant is `benchmarks/diffusion_budget.py --only aediff` with model overrides, trained for the same
minutes on mnist5k and scored by FID / KID of 500 samples (the default sampler, dpm++ at 20 steps) in the
features of `aediff train classifier` against mnist5k's test split.

    python benchmarks/diffusion_defaults.py --minutes 3
    python benchmarks/diffusion_defaults.py --minutes 0.1 --samples 100 --only edm --runs /tmp/defaults \
        --out /tmp/defaults/result      # a smoke run

Writes benchmarks/results/diffusion_defaults.json and .md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

VARIANTS = {
    "edm": ["schedule=edm", "parameterization=edm"],
    "eps, linear (DDPM)": ["schedule=linear", "parameterization=eps"],
    "v, cosine (default)": [],
    "eps, cosine, min-SNR-5": ["schedule=cosine", "parameterization=eps", "loss_weighting=min_snr"],
    "v, cosine, widths 64,128,128": ["channels=64,128,128"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--only", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--samples", type=int, default=500, help="samples scored per variant")
    parser.add_argument("--classifier", type=Path, default=Path("runs/clf"), help="the judge's run folder")
    parser.add_argument("--runs", type=Path, default=Path("runs/bench-defaults"), help="scratch folder of the runs")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/diffusion_defaults"))
    args = parser.parse_args()
    results = {"minutes": args.minutes, "samples": args.samples, "variants": {}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    budget_script = Path(__file__).with_name("diffusion_budget.py")
    for name in args.only:
        out = args.runs / name.split()[0].strip(",") / "result"
        command = [
            sys.executable,
            str(budget_script),
            "--only",
            "aediff",
            "--minutes",
            str(args.minutes),
            "--samples",
            str(args.samples),
            "--sweep-samples",
            "0",
            "--classifier",
            str(args.classifier),
            "--runs",
            str(out.parent / "runs"),
            "--out",
            str(out),
        ]
        if VARIANTS[name]:
            command += ["--set", *VARIANTS[name]]
        print("==", name, file=sys.stderr, flush=True)
        subprocess.run(command, check=True)
        row = json.loads(out.with_suffix(".json").read_text())["contenders"]["aediff"]
        results["variants"][name] = {
            k: row[k]
            for k in ("steps", "train_images_per_s", "parameters", "fid", "kid_mean", "sample_images_per_s_per_nfe")
        }
        args.out.with_suffix(".json").write_text(json.dumps(results, indent=2))
    lines = [
        f"{args.minutes} min of training each on mnist5k; {results['samples']} samples (dpm++, 20 steps) "
        "scored against the test split in the classifier's features.",
        "",
        "| variant | parameters | steps | train img/s | FID | KID |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in results["variants"].items():
        lines.append(
            f"| {name} | {r['parameters'] / 1e6:.2f}M | {r['steps']} | {r['train_images_per_s']:.0f} | "
            f"{r['fid']:.3f} | {r['kid_mean']:.4f} |"
        )
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
