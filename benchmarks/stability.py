"""How often a comparison's verdicts flip between training seeds: `aediff compare --seeds N` on one
configuration, summarised per section (each seed's own verdict, the pooled verdict, the stability, the
verdict along the budget) with the machine and the time it took.

python benchmarks/stability.py --name demo --budget 400steps --steps-per-family diffusion=120 \
    --samples 500 --limit 200 --seeds 3 --out runs/stability-demo

writes benchmarks/results/stability_demo.{json,md}. The comparison's own report (report.html, metrics.json)
stays in --out. Under a step budget the verdicts do not depend on the machine's speed or load; the times do,
so time the configuration alone on an idle machine.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from aediff.config import parse_budget
from aediff.environment import cpu_model
from aediff.reports.compare import CompareConfig, parse_family_steps, run_compare
from aediff.reports.record import ComparisonReport
from results_files import save

RESULTS = Path(__file__).parent / "results"


def summary(record: ComparisonReport, seconds: float, command: str) -> dict[str, Any]:
    """The benchmark's results: per section the seeds' verdicts, the pooled one and its stability."""
    sections = {}
    for key, claim in record.verdicts.items():
        seeds = claim.seed_verdicts or {str(record.meta.seeds[0]): claim.verdict.verdict}
        sections[key] = {
            "verdict": claim.verdict.verdict,
            "seed_verdicts": seeds,
            "seeds_agree": len(set(seeds.values())) == 1,
            "stability": claim.stability,
            "budget_verdicts": claim.budget_verdicts,
            "reason": claim.verdict.reason,
        }
    trained = {name: m.training_speed.steps for name, m in record.models.items() if m.training_speed is not None}
    return {
        "command": command,
        "compare_command": record.meta.command,
        "cpu": record.meta.cpu,
        "threads": record.meta.threads,
        "date": record.meta.date,
        "seeds": record.meta.seeds,
        "budget": record.meta.budget.describe(),
        "family_steps": record.meta.family_steps,
        "steps_of_the_first_seed": trained,
        "wall_seconds": seconds,
        "train_seconds": record.meta.train_seconds,
        "eval_seconds": record.meta.eval_seconds,
        "sections_whose_seeds_disagree": sorted(k for k, s in sections.items() if not s["seeds_agree"]),
        "sections": sections,
    }


def markdown(result: dict[str, Any]) -> str:
    seeds = result["seeds"]
    lines = [
        f"# Verdict stability over {len(seeds)} training seeds",
        "",
        f"`{result['command']}`",
        "",
        f"{result['date']}; {result['cpu']}, {result['threads']} threads; budget {result['budget']}"
        + "".join(f", {f}: {n} steps" for f, n in result["family_steps"].items())
        + f". Wall time {result['wall_seconds']:.0f} s (training {result['train_seconds']:.0f} s, "
        f"evaluation {result['eval_seconds']:.0f} s).",
        "",
        f"Sections whose seeds disagree: {len(result['sections_whose_seeds_disagree'])} of "
        f"{len(result['sections'])} ({', '.join(result['sections_whose_seeds_disagree']) or 'none'}).",
        "",
        "| section | pooled verdict | " + " | ".join(f"seed {s}" for s in seeds) + " | stability | along the budget |",
        "|---|---|" + "---|" * len(seeds) + "---|---|",
    ]
    for key, s in result["sections"].items():
        per_seed = [s["seed_verdicts"][str(seed)] for seed in seeds]
        stability = "n/a" if s["stability"] is None else f"{s['stability']:.2f}"
        budget = " / ".join(f"{v} ({f})" for f, v in s["budget_verdicts"].items()) or "n/a"
        lines.append(f"| {key} | {s['verdict']} | " + " | ".join(per_seed) + f" | {stability} | {budget} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", required=True, help="results go to benchmarks/results/stability_NAME.*")
    parser.add_argument("--data", default="mnist5k")
    parser.add_argument("--budget", default="30s", help="as `aediff compare --budget`: 30s, 2m, 400steps")
    parser.add_argument("--steps-per-family", default="", help="as `aediff compare --steps-per-family`")
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="the comparison's folder (report, runs)")
    args = parser.parse_args(argv)
    config = CompareConfig(
        data=args.data,
        budget=parse_budget(args.budget, "--budget"),
        family_steps=parse_family_steps(args.steps_per_family) if args.steps_per_family else {},
        samples=args.samples,
        limit=args.limit,
        seeds=args.seeds,
        seed=args.seed,
    )
    command = "python benchmarks/stability.py " + shlex.join(argv)
    started = time.perf_counter()
    record = run_compare(config, args.out, progress=False, log=print, command=command, replace_runs=True)
    result = summary(record, time.perf_counter() - started, command)
    result["cpu"] = result["cpu"] or cpu_model()
    save(RESULTS / f"stability_{args.name}", result, markdown)
    print(markdown(result))


if __name__ == "__main__":
    main(sys.argv[1:])
