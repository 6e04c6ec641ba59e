"""Copy a comparison report's numbers into a small results file that docs can quote and git can hold.

python benchmarks/report_results.py reports/demo benchmarks/results/compare_demo

writes compare_demo.json (metrics.json without the bootstrap draws and per-chunk lists, which are what
make it large; every verdict, interval, control and model metric stays) and compare_demo.md (the verdicts
as a table, the time split and the machine).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from aediff.reports.record import ComparisonReport

BULKY = {"fid_draws_values", "chunks"}


def strip(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: strip(v) for k, v in value.items() if k not in BULKY}
    if isinstance(value, list):
        return [strip(v) for v in value]
    return value


def markdown(record: ComparisonReport) -> str:
    meta = record.meta
    lines = [
        f"# `{meta.command or 'aediff compare'}`",
        "",
        f"{meta.date}; {meta.cpu}, {meta.threads} threads; aediff {meta.aediff}, torch {meta.torch}.",
        f"Wall time {meta.wall_seconds:.0f} s: training {meta.train_seconds:.0f} s, "
        f"evaluation {meta.eval_seconds:.0f} s.",
        "",
        "| section | verdict | control | reason |",
        "|---|---|---|---|",
    ]
    for key, claim in record.verdicts.items():
        v = claim.verdict
        lines.append(f"| {key} | {v.verdict} | {v.control} | {v.reason.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def main(report: str, out: str) -> None:
    metrics_file = Path(report) / "metrics.json"
    record = ComparisonReport.read(metrics_file)  # refuses a damaged or newer file in one line
    metrics = json.loads(metrics_file.read_text())
    Path(out).with_suffix(".json").write_text(json.dumps(strip(metrics), indent=1) + "\n")
    Path(out).with_suffix(".md").write_text(markdown(record))
    print(f"wrote {Path(out).with_suffix('.json')} and {Path(out).with_suffix('.md')}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python benchmarks/report_results.py REPORT_DIR OUT_STEM")
    main(*sys.argv[1:])
