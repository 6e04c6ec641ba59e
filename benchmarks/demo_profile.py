"""Where the demo's time goes, before and after a change: the cumulative seconds of its parts in two cProfile
runs of the demo's `aediff compare` (one per commit, one after the other on one machine).

python -m cProfile -o OLD.prof -m aediff.cli compare <the demo's options> --out OLD --no-progress   # each commit
python benchmarks/demo_profile.py OLD.prof NEW.prof --labels 5b778b0,52103bf --name demo_profile_colour

writes benchmarks/results/NAME.{json,md}: each part's seconds in both runs and their difference. cProfile adds
its own overhead to both runs alike; the parts are aediff's functions (name and file), summed over their calls.
"""

from __future__ import annotations

import argparse
import pstats
import sys
import time
from pathlib import Path

from results_files import machine, save

RESULTS = Path(__file__).parent / "results"
DEMO = (
    "aediff compare --data mnist5k --budget 300steps --steps-per-family diffusion=200,latent-diffusion=200 "
    "--snapshots none --restore-images 50 --restore-steps 10 --samples 500 --limit 200 --overwrite --no-progress"
)

# (label, file ending, function name): the demo's stages, then the evaluation's protocols.
PARTS = [
    ("aediff compare", "reports/compare.py", "run_compare"),
    ("training (13 models)", "reports/compare.py", "_train_all"),
    ("evaluation", "reports/evaluate.py", "evaluate_all"),
    ("report", "reports/sections.py", "build_report"),
    ("sampling", "evaluation/protocols.py", "sample_images"),
    ("denoising sweeps", "evaluation/denoising.py", "denoising_sweep"),
    ("diffusion likelihood", "evaluation/protocols.py", "diffusion_nll"),
    ("FID / KID / precision / recall (every score)", "evaluation/protocols.py", "generation_score"),
    ("rFID (every autoencoder, both judges)", "evaluation/suite.py", "reconstruction_fid"),
    ("latent-space probes", "evaluation/latents.py", "latent_space_metrics"),
]


def cumulative_seconds(profile: Path) -> dict[str, dict[str, float]]:
    """{part label: {"seconds": cumulative seconds, "calls": calls}} of PARTS in one cProfile file (0 when absent)."""
    stats = pstats.Stats(str(profile)).stats
    out = {}
    for label, ending, name in PARTS:
        found = [(v[3], v[1]) for (file, _, func), v in stats.items() if func == name and file.endswith(ending)]
        out[label] = {"seconds": sum(s for s, _ in found), "calls": sum(c for _, c in found)}
    return out


def markdown(result: dict) -> str:
    old, new = result["labels"]
    lines = [
        "# Where the demo's time goes, before and after",
        "",
        f"`python -m cProfile -o PROF -m aediff.cli {DEMO.removeprefix('aediff ')} --out REPORT`, "
        f"at {old} and at {new}",
        "",
        f"{result['date']}; {result['machine']['cpu']}, {result['machine']['threads']} threads, one run per commit, "
        "one after the other, on this machine "
        "(cProfile's overhead in both). Cumulative seconds of each part, summed over its calls.",
        "",
        f"| part | {old} (s) | {new} (s) | difference (s) |",
        "|---|---|---|---|",
    ]
    for label, row in result["parts"].items():
        a, b = row[old]["seconds"], row[new]["seconds"]
        lines.append(f"| {label} | {a:.1f} | {b:.1f} | {b - a:+.1f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("profiles", nargs=2, type=Path, help="the old and the new run's cProfile files")
    parser.add_argument("--labels", required=True, help="the two commits: OLD,NEW")
    parser.add_argument("--name", default="demo_profile")
    args = parser.parse_args()
    labels = args.labels.split(",")
    if len(labels) != 2:
        parser.error(f"--labels needs two names, OLD,NEW; got {args.labels!r}")
    runs = [cumulative_seconds(p) for p in args.profiles]
    result = {
        "command": "python benchmarks/demo_profile.py " + " ".join(sys.argv[1:]),
        "profiled": DEMO,
        "labels": labels,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine(),
        "parts": {label: dict(zip(labels, (r[label] for r in runs), strict=True)) for label in runs[0]},
    }
    save(RESULTS / args.name, result, markdown, indent=2)
    print(markdown(result))


if __name__ == "__main__":
    main()
