"""The sampler table: every sampler, aediff's and diffusers' (``--sampler diffusers:NAME``), at 5, 10 and 20
network evaluations per image on one trained diffusion model, scored on the test split in both of the judge
classifier's feature spaces, with the seconds each took and the class balance of its samples.

For each sampler and each evaluation budget the step count is the largest whose evaluations fit the budget
(Heun-type schedulers spend 2 steps - 1, PLMS steps + 1); the table records the evaluations actually spent.
Every cell draws the same starting noise (seed 0); the cells run one after the other in one process, so their
seconds compare (nothing else may run on the machine meanwhile). Distilled students (--student NAME=RUN) are
scored at 1, 2 and 4 steps with their own sampler.

    python benchmarks/samplers.py --diffusion /work/runs/bench26/diffusion \
        --judge /work/runs/stability-2m/runs/classifier --samples 1000

Writes benchmarks/results/samplers.json and .md (--out).
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import torch

import aediff
from aediff.diffusion.samplers import DIFFUSERS_SAMPLER_NAMES, SAMPLER_NAMES, SamplerOptions, sampler_spec
from aediff.errors import AediffError
from aediff.evaluation import judges_for, sample_images
from aediff.evaluation.protocols import generation_score
from aediff.evaluation.speed import network_rows
from aediff.metrics.balance import class_balance
from results_files import machine, save, write_results

# diffusers' schedulers tested to draw aediff's samplers' images within 1e-4 on a cosine run
# (tests/test_diffusers_samplers.py, SAME_METHOD): --skip-same leaves them out and says so
SAME_ON_COSINE = {"diffusers:EulerDiscreteScheduler": "euler", "diffusers:HeunDiscreteScheduler": "heun",
                  "diffusers:DPMSolverMultistepScheduler": "dpm++", "diffusers:DDIMScheduler": "ddim"}  # fmt: skip


def steps_for(sampler: str, nfe: int) -> int | None:
    """The most steps whose network evaluations fit ``nfe`` (None: not even one step does)."""
    spec = sampler_spec(sampler)
    fitting = [s for s in range(1, nfe + 1) if spec.evaluations(s) <= nfe]
    return max(fitting) if fitting else None


@torch.no_grad()
def score(images: torch.Tensor, judges: list, classifier: Any, test: Any) -> dict[str, Any]:
    """FID (with its bootstrap standard error) in every judge, and the class balance in the classifier's reading."""
    row: dict[str, Any] = {}
    for judge in judges:
        result = generation_score(images, judge.features, test, feature_extractor=judge.name,
                                  reference_name="test", reference_features=judge.reference_features(test))  # fmt: skip
        row[f"fid_{judge.name}"] = result.fid
        row[f"fid_se_{judge.name}"] = result.fid_se
    probabilities = torch.cat([classifier.logits(chunk).softmax(1) for chunk in images.split(500)])
    balance = class_balance(probabilities.numpy(), test.labels.numpy())
    row |= {
        "confident": balance.confident_share, "confident_low": balance.confident_low,
        "confident_high": balance.confident_high, "chi_square": balance.chi_square, "p_value": balance.p_value,
        "counts": balance.counts,
    }  # fmt: skip
    return row


def cell(model: Any, sampler: str, steps: int, args: argparse.Namespace, judges: list, classifier: Any, test: Any):
    """One sampler at ``steps``: ``args.samples`` samples (the model's default condition: a class-conditioned
    model draws every class in turn at its default guidance), timed and scored."""
    options = SamplerOptions(sampler=sampler, steps=steps)
    plan = model.sampler_plan(options)
    started = time.perf_counter()
    with network_rows(model) as rows:
        images = sample_images(model, args.samples, seed=args.seed, options=options)
    seconds = time.perf_counter() - started
    row = {"sampler": sampler, "steps": steps, "nfe": plan.evaluations, "seconds": seconds,
           "network_passes": rows[0] // args.samples}  # fmt: skip
    row |= score(images, judges, classifier, test)
    print(f"{sampler:45s} steps {steps:3d} nfe {plan.evaluations:3d} {seconds:6.1f}s "
          f"FID {row['fid_classifier']:.2f} layers {row['fid_classifier-layers']:.2f} "
          f"conf {row['confident']:.3f} chi2 {row['chi_square']:.1f}", flush=True)  # fmt: skip
    return row


def markdown(results: dict[str, Any]) -> str:
    lines = [
        "# Samplers: FID in both judges and seconds, at 5, 10 and 20 network evaluations",
        "",
        f"`{results['command']}`",
        "",
        f"Machine: {results['machine']['cpu']}, {results['machine']['threads']} threads, torch "
        f"{results['machine']['torch']}. Model: `{results['model']}` ({results['model_steps']} training steps; "
        f"{results['sampling']}). NFE: denoiser evaluations per image; passes: network passes per image (a guided "
        "evaluation is two, in one batched call). "
        f"{results['samples']} samples per cell against the test split ({results['test_images']} images); FID "
        "+- 1.96 bootstrap standard errors; 'confident': the judge's top-class probability >= 0.9; chi-square: "
        "the samples' class histogram against the test split's class frequencies (9 degrees of freedom; rejects "
        "at 1% above 21.67).",
        "",
        "| sampler | steps | NFE | passes | seconds | FID (classifier) | FID (layers) | confident | chi-square "
        "| rarest / commonest |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["rows"]:
        lines.append(
            f"| {r['sampler']} | {r['steps']} | {r['nfe']} | {r['network_passes']} | {r['seconds']:.1f} | "
            f"{r['fid_classifier']:.2f} +- {1.96 * (r['fid_se_classifier'] or 0):.2f} | "
            f"{r['fid_classifier-layers']:.2f} +- {1.96 * (r['fid_se_classifier-layers'] or 0):.2f} | "
            f"{r['confident']:.3f} | {r['chi_square']:.1f} | {min(r['counts'])} / {max(r['counts'])} |"
        )
    if results["skipped"]:
        lines += ["", "Not run: " + "; ".join(f"{k}: {v}" for k, v in results["skipped"].items())]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--diffusion", type=Path, required=True, help="a trained diffusion run")
    parser.add_argument("--judge", type=Path, required=True, help="a trained classifier run (both judges)")
    parser.add_argument("--student", action="append", default=[], help="NAME=RUN, a distilled student (1, 2, 4 steps)")
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--nfe", default="5,10,20")
    parser.add_argument("--samplers", default="all", help="comma-separated names, or all")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-same", action="store_true", help="leave out schedulers tested equal to aediff's")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "samplers")
    args = parser.parse_args(argv)
    started = time.time()
    torch.manual_seed(args.seed)
    run = aediff.load(args.diffusion, device="cpu")
    model = run.model.eval()
    classifier = aediff.load(args.judge, device="cpu").model.eval()
    judges = judges_for(classifier)
    test = run.data.load_by_position("test")
    names = [*SAMPLER_NAMES, *DIFFUSERS_SAMPLER_NAMES] if args.samplers == "all" else args.samplers.split(",")
    results = {
        "command": "python benchmarks/samplers.py " + shlex.join(argv),
        "machine": machine(),
        "model": str(args.diffusion),
        "model_steps": run.summary.steps if run.summary is not None else None,
        "sampling": f"{model.config.conditioning.kind} conditioning, classes {model.config.sampling.classes}, "
        f"guidance {model.default_guidance:g}",
        "samples": args.samples,
        "test_images": len(test),
        "rows": [],
        "skipped": {},
    }
    rows, skipped = results["rows"], results["skipped"]
    for sampler in names:
        if args.skip_same and model.config.process.schedule == "cosine" and sampler in SAME_ON_COSINE:
            skipped[sampler] = f"the same images as {SAME_ON_COSINE[sampler]} within 1e-4 (tested), not rerun"
            continue
        for nfe in map(int, args.nfe.split(",")):
            steps = steps_for(sampler, nfe)
            try:
                model.sampler_plan(SamplerOptions(sampler=sampler, steps=steps))
            except AediffError as refused:
                skipped[sampler] = str(refused).split(";")[0]
                break
            rows.append(cell(model, sampler, steps, args, judges, classifier, test))
        save(args.out, results, markdown)  # what is done so far survives an interruption
    for spec in args.student:
        name, path = spec.split("=", 1)
        student = aediff.load(path, device="cpu").model.eval()
        for steps in (1, 2, 4):
            row = cell(student, student.config.sampling.sampler, steps, args, judges, classifier, test)
            rows.append(row | {"sampler": f"{name} ({row['sampler']})"})
    write_results(args.out, results, started, markdown)


if __name__ == "__main__":
    main(sys.argv[1:])
