"""Do the report's intervals cover? Pairs of independent sample sets from one trained model, scored alike.

For each of --pairs pairs, two sets of --samples samples are drawn from the same model with different seeds
(so their true difference is zero) and scored in both judges against one reference set with the same scoring seed
(so their bootstrap draws are paired, as two models' are in the report). The report's intervals resample the
references too (its claims are about the models, not about one test set), so the observed spread must include a
fresh reference set per pair: with --reference-pool SPEC each pair's references are --reference-size images drawn
without replacement from that data set's test split (e.g. the full MNIST test split, 10,000 images, for a model of
mnist5k digits); without it every pair is scored against the run's own test split, which leaves the references'
share of the spread out of the observed side (the stated intervals then look too wide). For FID, KID, precision
and recall:

- coverage: how often the stated 95% interval of the difference (paired bootstrap, ``difference_of_draws``)
  covers 0 (should be about 0.95);
- stated / observed: the mean stated standard error of the difference over the standard deviation of the
  differences across pairs (about 1 when the intervals are right; the issue asks for within a factor 1.5).

    python benchmarks/coverage.py --run RUN --judge CLASSIFIER [--pairs 40 --samples 500]
        [--reference-pool mnist --reference-size 1000] [--sampler-steps 20]
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

import aediff
from aediff.diffusion.samplers import SamplerOptions
from aediff.evaluation import sample_images
from aediff.evaluation.judges import judges_for
from aediff.metrics import stats
from aediff.metrics.distances import score_features
from aediff.metrics.extractors import extract_features
from results_files import machine, write_results

STATISTICS = ("fid", "kid", "precision", "recall")


def pair_references(pool: dict[str, Tensor], pairs: int, size: int | None) -> list[dict[str, Tensor]]:
    """Each pair's reference features per judge: ``size`` rows of the pool drawn without replacement (seed =
    the pair's index), or the whole pool for every pair when ``size`` is None."""
    if size is None:
        return [pool] * pairs
    count = len(next(iter(pool.values())))
    if size > count:
        raise SystemExit(f"--reference-size {size} is larger than the reference pool ({count} images)")
    rows = [torch.from_numpy(np.random.default_rng(i).choice(count, size, replace=False)) for i in range(pairs)]
    return [{name: feats[r] for name, feats in pool.items()} for r in rows]


def scored_sets(model: Any, judges: list, references: list[dict], samples: int, options: Any) -> list[dict]:
    """2 * pairs sample sets (seeds 1000 + i), each scored in every judge against its pair's references:
    [{judge: FeatureScore}]."""
    sets = []
    for i in range(2 * len(references)):
        images = sample_images(model, samples, seed=1000 + i, options=options)
        refs = references[i // 2]
        sets.append({
            j.name: score_features(
                extract_features(j.features, images), refs[j.name], feature_extractor=j.name, reference="test",
                kid_subset_size=min(1000, samples, len(refs[j.name])), seed=0,
            )
            for j in judges
        })  # fmt: skip
        print(f"set {i + 1} of {2 * len(references)} scored", flush=True)
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


def _steps(r: dict) -> str:
    return f", {r['sampler_steps']} sampler steps" if r.get("sampler_steps") else ""


def _references(r: dict) -> str:
    if r.get("fresh_references"):
        return f"a fresh set of {r['reference']} images per pair, drawn from the {r['reference_pool']}"
    pool = r.get("reference_pool", f"test split ({r['reference']} images)")
    return f"one reference set for every pair, the run's {pool} (the references' share of the spread unobserved)"


def markdown(r: dict) -> str:
    m = r["machine"]
    lines = [
        "# Coverage of the report's intervals: pairs of sample sets from one model",
        "",
        f"`{r['command']}` on {m['cpu']} ({m['threads']} threads), torch {m['torch']}. Model: {r['run']} "
        f"({r['family']}{_steps(r)}); {r['pairs']} pairs of {r['samples']} samples, scored with paired bootstrap "
        f"draws against {_references(r)}. Coverage: share of pairs whose 95% interval of "
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
    parser.add_argument("--pairs", type=int, default=40)
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--reference-pool", help="a data set spec whose test split gives each pair fresh references")
    parser.add_argument("--reference-size", type=int, default=1000, help="references per pair from the pool")
    parser.add_argument("--sampler-steps", type=int, help="a diffusion model's sampler steps (default: its own)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "coverage")
    args = parser.parse_args(argv)
    started = time.time()
    run = aediff.load(args.run, device="cpu")
    pool_data = replace(run.data, spec=args.reference_pool) if args.reference_pool else run.data
    pool = pool_data.load("test")
    judges = judges_for(aediff.load(args.judge, device="cpu").model.eval())
    references = pair_references({j.name: j.reference_features(pool) for j in judges}, args.pairs,
                                 args.reference_size if args.reference_pool else None)  # fmt: skip
    options = SamplerOptions(steps=args.sampler_steps) if args.sampler_steps else None
    sets = scored_sets(run.model, judges, references, args.samples, options)
    results = {
        "command": "python benchmarks/coverage.py " + shlex.join(argv),
        "machine": machine(),
        "run": str(args.run),
        "family": run.family,
        "pairs": args.pairs,
        "samples": args.samples,
        "sampler_steps": args.sampler_steps,
        "reference": len(next(iter(references[0].values()))),
        "reference_pool": f"{pool_data.spec} test split ({len(pool)} images)",
        "fresh_references": bool(args.reference_pool),
        "judges": {j.name: coverage_rows(sets, j.name) for j in judges},
    }
    write_results(args.out, results, started, markdown)


if __name__ == "__main__":
    main(sys.argv[1:])
