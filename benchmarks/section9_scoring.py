"""What scoring like with like does to section 9: its verdict from class-conditional samples on both sides (the
report's) against the verdict unconditional samples would give, for every training seed of one report and
pooled over them.

python benchmarks/section9_scoring.py /work/runs/stability-2m --name 2m_steps

writes benchmarks/results/section9_NAME.{json,md}: per seed and judge, the FID of each diffusion model and of
the best autoencoder under both scorings (class-conditional: ``--samples`` samples; unconditional:
``curve_samples``, so those sit higher by the smaller sample alone), and section 9's rule on each. The report
must keep its bootstrap draws (its own metrics.json, not a stripped results copy).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from aediff.reports import verdicts as rules
from aediff.reports.record import ComparisonReport
from aediff.reports.sections import Measured, _fids_by_judge
from aediff.reports.seeds import Ruling, over_seeds
from results_files import save

RESULTS = Path(__file__).parent / "results"


def seed_measurements(record: ComparisonReport) -> dict[int, Measured]:
    """Each training seed's models as section 9 reads them (no plan or artifacts are needed for its FIDs)."""
    runs = [(record.meta.seeds[0], record.models, record.sections)]
    runs += [(s.seed, s.models, s.sections) for s in record.other_seeds]
    return {seed: Measured(models, sections, None, record.meta, []) for seed, models, sections in runs}


def generative(m: Measured) -> list[str]:
    return [name for name, x in m.models.items() if x.generation_by_judge and x.role != "judge"]


def fids(m: Measured, unconditional: bool) -> dict[str, dict[str, float]]:
    """{judge: {model: FID}} under one scoring."""
    return {j: {n: m.fid(n, j, unconditional).value for n in generative(m)} for j in m.judges}


def scoring(measured: dict[int, Measured], unconditional: bool) -> dict[str, Any]:
    rulings = {seed: Ruling(rules.summary, (_fids_by_judge(m, generative(m), unconditional),))
               for seed, m in measured.items()}  # fmt: skip
    pooled = over_seeds(rulings)
    return {
        "per_seed": {str(seed): v for seed, v in pooled.per_seed.items()},
        "pooled": pooled.verdict.verdict,
        "pooled_reason": pooled.verdict.reason,
        "fids": {str(seed): fids(m, unconditional) for seed, m in measured.items()},
    }


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "# Section 9 scored like with like, and as before",
        "",
        f"`{result['command']}` on the report of `{result['report_command']}`",
        "",
        f"{result['date']}; {result['cpu']}. Class-conditional: {result['samples']} samples per model, labels drawn "
        f"from the training split's class frequencies; unconditional: {result['curve_samples']} samples (the null "
        "label for the class-conditioned diffusion model, a Gaussian over all latents for an autoencoder).",
        "",
        "| scoring | " + " | ".join(f"seed {s}" for s in result["seeds"]) + " | pooled |",
        "|---|" + "---|" * (len(result["seeds"]) + 1),
    ]
    for name, s in (("class-conditional (the report's)", result["class_conditional"]),
                    ("unconditional (before)", result["unconditional"])):  # fmt: skip
        lines.append(
            f"| {name} | " + " | ".join(s["per_seed"][str(k)] for k in result["seeds"]) + f" | {s['pooled']} |"
        )
    lines += ["", "FID by seed, judge and model (class-conditional / unconditional):", ""]
    lines += ["| seed | judge | model | class-conditional | unconditional |", "|---|---|---|---|---|"]
    for seed in map(str, result["seeds"]):
        for judge, by_model in result["class_conditional"]["fids"][seed].items():
            for model, value in by_model.items():
                other = result["unconditional"]["fids"][seed][judge][model]
                lines.append(f"| {seed} | {judge} | {model} | {value:.2f} | {other:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("report", type=Path, help="a comparison's folder (its metrics.json, with bootstrap draws)")
    parser.add_argument("--name", required=True, help="results go to benchmarks/results/section9_NAME.*")
    args = parser.parse_args(argv)
    record = ComparisonReport.read(args.report / "metrics.json")
    measured = seed_measurements(record)
    config = record.meta.config
    result = {
        "command": "python benchmarks/section9_scoring.py " + " ".join(argv),
        "report_command": record.meta.command,
        "cpu": record.meta.cpu,
        "date": record.meta.date,
        "seeds": list(measured),
        "samples": config["samples"],
        "curve_samples": config["curve_samples"],
        "class_conditional": scoring(measured, unconditional=False),
        "unconditional": scoring(measured, unconditional=True),
        "report_verdict": record.verdicts["summary"].verdict.verdict,
    }
    save(RESULTS / f"section9_{args.name}", result, markdown)
    print(markdown(result))


if __name__ == "__main__":
    main(sys.argv[1:])
