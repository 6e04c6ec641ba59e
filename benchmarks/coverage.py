"""Do the report's intervals cover? Pairs of independent sample sets from one trained model, scored alike.

For each of --pairs pairs, two sets of --samples samples are drawn from the same model with different seeds
(so their true difference is zero) and scored in both judges against the test split with the same scoring seed
(so their bootstrap draws are paired, as two models' are in the report). For FID, KID, precision and recall:

- coverage: how often the stated 95% interval of the difference (paired bootstrap, ``difference_of_draws``)
  covers 0 (should be about 0.95);
- stated / observed: the mean stated standard error of the difference over the standard deviation of the
  differences across pairs (about 1 when the intervals are right; the issue asks for within a factor 1.5).

    python benchmarks/coverage.py --run RUN --judge CLASSIFIER [--pairs 20 --samples 500]
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

import aediff
from aediff.evaluation import generation_score, sample_images
from aediff.evaluation.judges import judges_for
from aediff.metrics import stats
from results_files import machine, write_results

STATISTICS = ("fid", "kid", "precision", "recall")


def scored_sets(run: Any, judges: list, test: Any, references: dict, pairs: int, samples: int) -> list[dict]:
    """2 * pairs sample sets (seeds 1000 + i), each scored in every judge: [{judge: FeatureScore}]."""
    sets = []
    for i in range(2 * pairs):
        images = sample_images(run.model, samples, seed=1000 + i)
        sets.append({
            j.name: generation_score(images, j.features, test, feature_extractor=j.name, reference_name="test",
                                     seed=0, reference_features=references[j.name])
            for j in judges
        })  # fmt: skip
        print(f"set {i + 1} of {2 * pairs} scored", flush=True)
    return sets


def coverage_rows(sets: list[dict], judge: str) -> dict[str, dict[str, float]]:
    """Per statistic: the pairs' differences, their stated standard errors, coverage and the spread ratio."""
    rows = {}
    for name in STATISTICS:
        diffs = []
        for a, b in zip(sets[0::2], sets[1::2], strict=True):
            diffs.append(stats.difference_of_draws(*a[judge].statistic(name), *b[judge].statistic(name)))
        values = np.array([d.value for d in diffs])
        stated = np.array([d.se for d in diffs])
        observed = float(values.std(ddof=1))
        rows[name] = {
            "coverage": float(np.mean(np.abs(values) <= 1.96 * stated)),
            "stated_se": float(stated.mean()),
            "observed_sd": observed,
            "ratio": float(stated.mean() / observed) if observed > 0 else float("nan"),
            "differences": values.tolist(),
            "stated": stated.tolist(),
        }
    return rows


def markdown(r: dict) -> str:
    m = r["machine"]
    lines = [
        "# Coverage of the report's intervals: pairs of sample sets from one model",
        "",
        f"`{r['command']}` on {m['cpu']} ({m['threads']} threads), torch {m['torch']}. Model: {r['run']} "
        f"({r['family']}); {r['pairs']} pairs of {r['samples']} samples, scored against the test split "
        f"({r['reference']} images) with paired bootstrap draws. Coverage: share of pairs whose 95% interval of "
        "the difference covers 0 (expected 0.95); ratio: mean stated standard error over the observed standard "
        "deviation of the differences (expected 1; within 1.5 asked).",
        "",
        "| judge | statistic | coverage | stated SE | observed SD | ratio |",
        "|---|---|---|---|---|---|",
    ]
    for judge, rows in r["judges"].items():
        for name, row in rows.items():
            lines.append(f"| {judge} | {name} | {row['coverage']:.2f} | {row['stated_se']:.4g} | "
                         f"{row['observed_sd']:.4g} | {row['ratio']:.2f} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="a trained generative run")
    parser.add_argument("--judge", type=Path, required=True, help="a trained classifier run (both judges)")
    parser.add_argument("--pairs", type=int, default=20)
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "coverage")
    args = parser.parse_args(argv)
    started = time.time()
    run = aediff.load(args.run, device="cpu")
    test = run.data.load("test")
    judges = judges_for(aediff.load(args.judge, device="cpu").model.eval())
    references = {j.name: j.reference_features(test) for j in judges}
    sets = scored_sets(run, judges, test, references, args.pairs, args.samples)
    results = {
        "command": "python benchmarks/coverage.py " + shlex.join(argv),
        "machine": machine(),
        "run": str(args.run),
        "family": run.family,
        "pairs": args.pairs,
        "samples": args.samples,
        "reference": len(test),
        "judges": {j.name: coverage_rows(sets, j.name) for j in judges},
    }
    write_results(args.out, results, started, markdown)


if __name__ == "__main__":
    main(sys.argv[1:])
