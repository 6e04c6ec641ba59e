"""How long the test suite takes: the quick suite (`make test`), the full one (`make test-full`, what CI runs)
and, for the record, the suite of an earlier commit as it was run then (serial `pytest tests`).

Each variant runs once, one after the other on an otherwise idle machine, through the same interpreter; the
earlier commit runs from a temporary git worktree with its own sources first on the path. Reports pytest's
own duration and outcome counts and its 20 slowest tests.

    python benchmarks/test_suite.py --before 319623d --out benchmarks/results/test_suite
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from results_files import machine, write_results

ROOT = Path(__file__).resolve().parents[1]
SUMMARY = re.compile(r"^=*\s*(?P<counts>\d+ (?:passed|failed|skipped|error).*?) in (?P<seconds>[\d.]+)s", re.M)
DURATION = re.compile(r"^(?P<seconds>[\d.]+)s (?P<when>call|setup|teardown)\s+(?P<test>\S+)", re.M)
QUICK = ["-n", "2", "-m", "not slow"]
FULL = ["-n", "2"]


def run_pytest(label: str, checkout: Path, args: list[str]) -> dict:
    """``python -m pytest tests ARGS --durations=20`` in ``checkout`` (its sources first on the path): pytest's
    seconds, its outcome counts, the wall seconds and the 20 slowest tests."""
    env = {**os.environ, "PYTHONPATH": str(checkout / "src")}
    command = [sys.executable, "-m", "pytest", "tests", *args, "--durations=20", "-p", "no:cacheprovider"]
    print(f"{label}: {' '.join(command[1:])} (in {checkout})", flush=True)
    started = time.perf_counter()
    done = subprocess.run(command, cwd=checkout, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    summary = ([None] + list(SUMMARY.finditer(done.stdout)))[-1]  # the last one: pytest's closing line
    if summary is None:
        raise SystemExit(f"{label}: no pytest summary line; the end of its output:\n{done.stdout[-3000:]}")
    counts = {k: int(n) for n, k in re.findall(r"(\d+) (\w+)", summary["counts"])}
    slowest = [{**m.groupdict(), "seconds": float(m["seconds"])} for m in DURATION.finditer(done.stdout)]
    print(f"  {summary['counts']} in {float(summary['seconds']):.0f}s (wall {wall:.0f}s)", flush=True)
    return {
        "label": label,
        "command": f"python -m pytest tests {' '.join(args)}".strip(),
        "pytest_seconds": float(summary["seconds"]),
        "wall_seconds": wall,
        "exit_code": done.returncode,
        "counts": counts,
        "slowest": slowest,
    }


def before_checkout(rev: str, folder: Path) -> Path:
    """A detached worktree of ``rev`` in ``folder`` (removed by the caller)."""
    subprocess.run(["git", "worktree", "add", "--detach", str(folder), rev], cwd=ROOT, check=True, capture_output=True)
    return folder


def markdown(results: dict) -> str:
    lines = [
        "# Test suite durations",
        "",
        f"Command: `{results['command']}`. CPU: {results['machine']['cpu']}, one run each, one after the other.",
        "",
        "| suite | command | passed | skipped | failed | pytest s | wall s |",
        "|---|---|---|---|---|---|---|",
    ]
    for v in results["variants"]:
        c = v["counts"]
        lines.append(
            f"| {v['label']} | `{v['command']}` | {c.get('passed', 0)} | {c.get('skipped', 0)} | "
            f"{c.get('failed', 0) + c.get('error', 0) + c.get('errors', 0)} | {v['pytest_seconds']:.0f} | "
            f"{v['wall_seconds']:.0f} |"
        )
    for v in results["variants"]:
        lines += ["", f"## {v['label']}: the 20 slowest", "", "| s | phase | test |", "|---|---|---|"]
        lines += [f"| {d['seconds']:.2f} | {d['when']} | `{d['test']}` |" for d in v["slowest"]]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", default=None, help="also time this commit's suite as it was run (serial)")
    parser.add_argument("--skip-full", action="store_true", help="time the quick suite only")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "test_suite")
    args = parser.parse_args()
    started = time.time()
    variants = [run_pytest("quick (make test)", ROOT, QUICK)]
    if not args.skip_full:
        variants.append(run_pytest("full (make test-full, CI)", ROOT, FULL))
    if args.before:
        with tempfile.TemporaryDirectory() as tmp:
            checkout = before_checkout(args.before, Path(tmp) / "before")
            try:
                variants.append(run_pytest(f"before ({args.before}, serial)", checkout, []))
            finally:
                subprocess.run(["git", "worktree", "remove", "--force", str(checkout)], cwd=ROOT, check=False)
    command = "python benchmarks/test_suite.py" + (f" --before {args.before}" if args.before else "")
    command += " --skip-full" if args.skip_full else ""
    results = {"command": command, "machine": machine(), "variants": variants}
    write_results(args.out, results, started, markdown)


if __name__ == "__main__":
    main()
