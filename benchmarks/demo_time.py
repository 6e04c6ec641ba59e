"""Is the demo as fast as before a change, and are its verdicts the same? Interleaved runs of the demo's
`aediff compare` at two commits on one machine, nothing else running, paired in run order.

git worktree add /work/old OLD; git worktree add /work/new NEW      # the two commits, side by side
for label in old1 new1 new2 old2 old3 new3 new4 old4; do             # pairs alternate their order
  tree=/work/${label%?}; start=$(date +%s.%N)
  (cd $tree && PYTHONPATH=$tree/src python -m aediff.cli compare <DEMO> --out DIR/$label); rc=$?
  echo "$label $(git -C $tree rev-parse --short HEAD) rc=$rc seconds=$(echo "$(date +%s.%N) - $start" | bc) \
started=$(date -d @${start%.*} +%T)" >> DIR/times.txt
done
python benchmarks/demo_time.py DIR/times.txt --old OLD --new NEW --name demo_time_colour

Consecutive runs make a pair (one per commit; the order alternates, so a drift of the machine over the session
falls on both); the difference new - old gets a t interval over the pairs. Writes benchmarks/results/NAME.{json,md}:
every run's seconds (the command, `compare`'s own, its training, its evaluation), the paired differences, and
whether every section's verdict agreed in every run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from scipy import stats

from aediff.reports.record import ComparisonReport
from demo_reruns import largest_difference
from results_files import machine, save

RESULTS = Path(__file__).parent / "results"
DEMO = (
    "aediff compare --data mnist5k --budget 300steps --steps-per-family diffusion=200,latent-diffusion=200 "
    "--snapshots none --restore-images 50 --restore-steps 10 --samples 500 --limit 200 --out DIR/LABEL "
    "--overwrite --no-progress"
)
MEASURES = ("command", "compare", "training", "evaluation")


def read_runs(times: Path) -> list[dict[str, Any]]:
    """The runs of ``times`` in order: label, commit, and the seconds of MEASURES (from the line and the report)."""
    runs = []
    for line in times.read_text().split("\n"):
        words = line.split()
        if len(words) < 4 or not words[2].startswith("rc="):
            continue
        if words[2] != "rc=0":
            raise SystemExit(f"{line!r}: that run failed; rerun it before timing")
        meta = ComparisonReport.read(times.parent / words[0] / "metrics.json").meta
        command = float(words[3].removeprefix("seconds="))
        seconds = dict(zip(MEASURES, (command, meta.wall_seconds, meta.train_seconds, meta.eval_seconds), strict=True))
        runs.append({"label": words[0], "commit": words[1], "cpu": meta.cpu, "started": words[4].split("=")[1]})
        runs[-1]["seconds"] = seconds
    return runs


def paired_differences(runs: list[dict[str, Any]], old: str, new: str) -> dict[str, dict[str, Any]]:
    """{measure: per-pair differences new - old, their mean and its 95% t interval} over consecutive pairs."""
    if len(runs) < 2 or len(runs) % 2:
        raise SystemExit(f"{len(runs)} runs: pairs need an even number, one run of each commit per pair")
    pairs = [runs[i : i + 2] for i in range(0, len(runs), 2)]
    for pair in pairs:
        if sorted(r["commit"] for r in pair) != sorted([old, new]):
            raise SystemExit(f"runs {[r['label'] for r in pair]} are not one {old} run and one {new} run")
    out = {}
    for measure in MEASURES:
        diffs = [
            next(r for r in p if r["commit"] == new)["seconds"][measure]
            - next(r for r in p if r["commit"] == old)["seconds"][measure]
            for p in pairs
        ]
        mean = sum(diffs) / len(diffs)
        interval = None
        if len(diffs) > 1:
            sem = stats.sem(diffs)
            interval = list(stats.t.interval(0.95, len(diffs) - 1, loc=mean, scale=sem)) if sem > 0 else [mean, mean]
        out[measure] = {"differences": diffs, "mean": mean, "interval95": interval}
    return out


def verdict_agreement(times: Path, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Every section's verdict in every run, and the largest difference of any number between the first run
    and each other (timings left out)."""
    reports = [times.parent / r["label"] / "metrics.json" for r in runs]
    records = [ComparisonReport.read(p) for p in reports]
    raw = [json.loads(p.read_text())["models"] for p in reports]
    sections = {key: [r.verdicts[key].verdict.verdict for r in records] for key in records[0].verdicts}
    differences = {}
    for run, models in zip(runs[1:], raw[1:], strict=True):
        value, where, compared = largest_difference(raw[0], models)
        differences[run["label"]] = {"value": value, "at": where, "numbers_compared": compared}
    return {
        "sections": sections,
        "sections_that_differ": sorted(k for k, v in sections.items() if len(set(v)) > 1),
        "largest_difference_from_first_run": differences,
    }


def markdown(result: dict[str, Any]) -> str:
    old, new = result["old"], result["new"]
    lines = [
        "# The demo's time and verdicts, before and after",
        "",
        f"`python -m aediff.cli {DEMO.removeprefix('aediff ')}` at {old} and at {new}, interleaved; "
        f"`{result['command']}`",
        "",
        f"{result['date']}; {result['machine']['cpu']}, {result['machine']['threads']} threads; nothing else running.",
        "",
        "| run | commit | started | command (s) | compare (s) | training (s) | evaluation (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in result["runs"]:
        s = r["seconds"]
        lines.append(
            f"| {r['label']} | {r['commit']} | {r['started']} | {s['command']:.1f} | {s['compare']:.1f} | "
            f"{s['training']:.1f} | {s['evaluation']:.1f} |"
        )
    lines += ["", f"Paired differences {new} - {old} (consecutive runs), mean and 95% t interval:", ""]
    lines += ["| measure | per pair (s) | mean (s) | 95% interval (s) |", "|---|---|---|---|"]
    for measure, d in result["differences"].items():
        low, high = d["interval95"] or (float("nan"), float("nan"))
        per_pair = ", ".join(f"{v:+.1f}" for v in d["differences"])
        lines.append(f"| {measure} | {per_pair} | {d['mean']:+.1f} | [{low:+.1f}, {high:+.1f}] |")
    agreement = result["verdicts"]
    differ = ", ".join(agreement["sections_that_differ"]) or "none"
    lines += ["", f"Sections: {len(agreement['sections'])}; sections whose verdict differs between runs: {differ}."]
    for label, d in agreement["largest_difference_from_first_run"].items():
        lines.append(
            f"- {label} against {result['runs'][0]['label']}: largest difference of {d['numbers_compared']:,} numbers "
            f"{d['value']:.3g}" + (f" (at {d['at']})" if d["value"] else "")
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("times", type=Path, help="the runs' times.txt; each run's report is beside it, DIR/LABEL")
    parser.add_argument("--old", required=True, help="the old commit, as times.txt names it")
    parser.add_argument("--new", required=True, help="the new commit, as times.txt names it")
    parser.add_argument("--name", default="demo_time")
    args = parser.parse_args()
    runs = read_runs(args.times)
    if len({r["cpu"] for r in runs}) != 1:
        raise SystemExit(f"the runs ran on different CPUs ({sorted({r['cpu'] for r in runs})}): not comparable")
    result = {
        "command": "python benchmarks/demo_time.py " + " ".join(sys.argv[1:]),
        "timed": DEMO,
        "old": args.old,
        "new": args.new,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine(),
        "runs": runs,
        "differences": paired_differences(runs, args.old, args.new),
        "verdicts": verdict_agreement(args.times, runs),
    }
    save(RESULTS / args.name, result, markdown, indent=2)
    print(markdown(result))


if __name__ == "__main__":
    main()
