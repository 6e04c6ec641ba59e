"""Do two runs of `make demo` agree? Compare their reports section by section, against the sections that
the flip-rate benchmark (benchmarks/stability.py) found stable over training seeds at the same settings.

python benchmarks/demo_reruns.py /tmp/demo1/reports/demo /tmp/demo2/reports/demo \
    --stability benchmarks/results/stability_demo_steps.json --make-seconds 781,790 --name demo_reruns

writes benchmarks/results/NAME.{json,md}: each section's verdict in both runs, whether the seeds of the
stability benchmark agreed on it, and how far apart the two runs' numbers are (every number of every
model's evaluation: 0 when training and evaluation are bit for bit the same). --make-seconds: the
wall-clock seconds of each `make demo` as a whole (install check included), as /usr/bin/time gave them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from aediff.reports.record import ComparisonReport

RESULTS = Path(__file__).parent / "results"


def numbers(value: Any, path: str = "") -> dict[str, float]:
    """Every number in a JSON value, by its key path."""
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in numbers(item, f"{path}/{key}").items()}
    if isinstance(value, list):
        return {k: v for i, item in enumerate(value) for k, v in numbers(item, f"{path}/{i}").items()}
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return {path: float(value)}
    return {}


def largest_difference(a: dict[str, Any], b: dict[str, Any]) -> tuple[float, str, int]:
    """The largest absolute difference between the two runs' model evaluations (timings left out: they
    measure the machine), where it is, and how many numbers were compared."""
    first, second = numbers(a), numbers(b)
    shared = [k for k in first if k in second and "seconds" not in k and "per_second" not in k]
    if not shared:
        return 0.0, "", 0
    worst = max(shared, key=lambda k: abs(first[k] - second[k]))
    return abs(first[worst] - second[worst]), worst, len(shared)


def compare_runs(reports: list[Path], stability: dict[str, Any], make_seconds: list[float]) -> dict[str, Any]:
    records = [ComparisonReport.read(r / "metrics.json") for r in reports]
    raw = [json.loads((r / "metrics.json").read_text())["models"] for r in reports]
    difference, where, compared = largest_difference(raw[0], raw[1])
    sections = {}
    for key in records[0].verdicts:
        verdicts = [r.verdicts[key].verdict.verdict for r in records]
        seeds = stability["sections"].get(key, {})
        sections[key] = {
            "verdicts": verdicts,
            "runs_agree": len(set(verdicts)) == 1,
            "stable_over_seeds": seeds.get("seeds_agree"),
            "seed_verdicts": seeds.get("seed_verdicts"),
        }
    return {
        "reports": [str(r) for r in reports],
        "commands": [r.meta.command for r in records],
        "cpus": [r.meta.cpu for r in records],
        "threads": [r.meta.threads for r in records],
        "dates": [r.meta.date for r in records],
        "compare_seconds": [r.meta.wall_seconds for r in records],
        "train_seconds": [r.meta.train_seconds for r in records],
        "eval_seconds": [r.meta.eval_seconds for r in records],
        "make_demo_seconds": make_seconds,
        "stability_benchmark": stability["command"],
        "largest_difference": {"value": difference, "at": where, "numbers_compared": compared},
        "sections": sections,
        "stable_sections_that_differ": sorted(
            k for k, s in sections.items() if s["stable_over_seeds"] and not s["runs_agree"]
        ),
    }


def markdown(result: dict[str, Any]) -> str:
    diff = result["largest_difference"]
    times = ", ".join(
        f"run {i + 1}: {w:.0f} s in `aediff compare` ({t:.0f} s training, {e:.0f} s evaluation)"
        + (f", {m:.0f} s for `make demo` as a whole" if m else "")
        for i, (w, t, e, m) in enumerate(
            zip(
                result["compare_seconds"],
                result["train_seconds"],
                result["eval_seconds"],
                result["make_demo_seconds"] or [None] * 2,
                strict=True,
            )  # fmt: skip
        )
    )
    lines = [
        f"# {result['title']}",
        "",
        f"`{result['commands'][0]}`",
        "",
        f"{result['dates'][0]} and {result['dates'][1]}; {result['cpus'][0]} and {result['cpus'][1]}, "
        f"{result['threads'][0]} threads. {times}.",
        "",
        f"Largest difference between the runs over {diff['numbers_compared']} numbers of the models' "
        f"evaluations (timings left out): {diff['value']:.3g}" + (f" (at {diff['at']})." if diff["value"] else "."),
        "",
        "Sections whose seeds agreed in the stability benchmark but whose verdicts differ between the runs: "
        f"{len(result['stable_sections_that_differ'])} ({', '.join(result['stable_sections_that_differ']) or 'none'}).",
        "",
        "| section | run 1 | run 2 | runs agree | seeds agree (stability benchmark) |",
        "|---|---|---|---|---|",
    ]
    for key, s in result["sections"].items():
        stable = {True: "yes", False: "no", None: "n/a"}[s["stable_over_seeds"]]
        agree = "yes" if s["runs_agree"] else "no"
        lines.append(f"| {key} | {s['verdicts'][0]} | {s['verdicts'][1]} | {agree} | {stable} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("reports", nargs=2, type=Path, help="the two runs' report folders")
    parser.add_argument("--stability", type=Path, required=True, help="stability_NAME.json at the same settings")
    parser.add_argument("--make-seconds", default="", help="each `make demo`'s wall-clock seconds: A,B")
    parser.add_argument("--name", default="demo_reruns")
    parser.add_argument("--title", default="Two runs of `make demo`, each from a clean clone", help="how they ran")
    args = parser.parse_args(argv)
    make_seconds = [float(s) for s in args.make_seconds.split(",")] if args.make_seconds else []
    result = compare_runs(args.reports, json.loads(args.stability.read_text()), make_seconds)
    result["command"] = "python benchmarks/demo_reruns.py " + " ".join(argv)
    result["title"] = args.title
    stem = RESULTS / args.name
    stem.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    stem.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main(sys.argv[1:])
