"""Progressive distillation on mnist5k: does a 4-step student keep the teacher's quality?

Trains (or reuses) a teacher, aediff's default unconditional diffusion model, for --teacher-minutes; distils
it from 32 to 4 Euler steps (`aediff distill`, three halvings sharing --distill-minutes); then scores, from
the same seeds, --samples images of each sampler in the judge classifier's features against mnist5k's test
split: FID with its bootstrap interval, and each FID's paired difference to the student's.

The claim: the student's 4 steps are within 1.5x of the teacher's FID at 20 steps (its default dpm++). The
controls that must lose: the teacher itself in 4 steps, with Euler (the student's sampler) and with dpm++
(aediff's best few-step solver).

    python benchmarks/distill.py                                    # the figures in docs/diffusion.md
    python benchmarks/distill.py --teacher-minutes 0.2 --distill-minutes 0.2 --samples 100 \
        --runs /tmp/distill --out /tmp/distill/result              # a smoke run

A learning-rate sweep (`--lr`, with `--iterations` per round so that every variant gets the same optimizer
steps whatever else the machine does) scores only the student and the teacher's 20-step default, each against
the test split (reported) and against 1,000 images of the training split (`choice` in the results: variants
are compared there, never on test):

    python benchmarks/distill.py --teacher runs/bench-distill/teacher --iterations 220 --lr 3e-4 \
        --sweep --runs runs/bench-distill/lr3e-4 --out benchmarks/results/distill_lr3e-4

Writes benchmarks/results/distill.json and .md.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import torch

import aediff
from aediff.data import load_dataset
from aediff.diffusion.samplers import SamplerOptions
from aediff.evaluation import generation_score, sample_images
from aediff.evaluation.judges import judges_for
from aediff.metrics.stats import Estimate, difference_of_draws
from aediff.training.distill import DistillConfig, distill_run
from aediff.training.train import train
from results_files import machine, write_results

# (name, which model, sampler, steps): the student's sampler and the controls that must lose to it
SAMPLERS = [
    ("teacher, dpm++ 20 steps (its default)", "teacher", "dpm++", 20),
    ("teacher, euler 20 steps", "teacher", "euler", 20),
    ("teacher, euler 32 steps (the distillation's start)", "teacher", "euler", 32),
    ("teacher, dpm++ 4 steps (control)", "teacher", "dpm++", 4),
    ("teacher, euler 4 steps (control)", "teacher", "euler", 4),
    ("student, euler 4 steps", "student", "euler", 4),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--teacher-minutes", type=float, default=10.0)
    parser.add_argument("--distill-minutes", type=float, default=10.0)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--teacher", type=Path, default=None, help="reuse this diffusion run as the teacher")
    parser.add_argument("--classifier", type=Path, default=Path("runs/clf"), help="the judge's run folder")
    parser.add_argument("--runs", type=Path, default=Path("runs/bench-distill"), help="scratch folder of the runs")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/distill"))
    parser.add_argument("--lr", type=float, default=DistillConfig.lr, help="the distillation's AdamW learning rate")
    parser.add_argument("--iterations", type=int, default=None, help="per round, instead of --distill-minutes")
    parser.add_argument("--sweep", action="store_true", help="score the student and the teacher's default only, "
                        "against the test split and a training-split reference (the choice)")  # fmt: skip
    args = parser.parse_args()
    started = time.time()
    results: dict = {
        "command": "python " + shlex.join(sys.argv),
        "machine": machine(),
        "samples": args.samples,
    }
    teacher_dir = args.teacher or args.runs / "teacher"
    if args.teacher is None:
        begun = time.perf_counter()
        train("diffusion", teacher_dir, "mnist5k", training={"max_minutes": args.teacher_minutes}, progress=False)
        results["teacher_train_seconds"] = time.perf_counter() - begun
    teacher = aediff.load(teacher_dir)
    results["teacher"] = {"run": str(teacher_dir), "steps": teacher.summary.steps if teacher.summary else None}
    student_dir = args.runs / "student-4"
    budget = {"iterations": args.iterations} if args.iterations else {"max_minutes": args.distill_minutes}
    config = DistillConfig(steps=4, teacher_steps=32, lr=args.lr, **budget)
    results["lr"] = args.lr
    begun = time.perf_counter()
    distill_run(teacher, student_dir, load_dataset("mnist5k", "train"), config, report=print)
    results["distill_seconds"] = time.perf_counter() - begun
    results["rounds"] = config.history
    models = {"teacher": teacher.model, "student": aediff.load(student_dir).model}
    if args.sweep:
        results["scores"] = score(models, args, SAMPLERS[:1] + SAMPLERS[-1:], load_dataset("mnist5k", "test"))
        train_set = load_dataset("mnist5k", "train")
        choice = train_set.subset(
            torch.randperm(len(train_set), generator=torch.Generator().manual_seed(0))[:CHOICE_IMAGES]
        )
        results["choice"] = score(models, args, SAMPLERS[:1] + SAMPLERS[-1:], choice, "mnist5k:train (1,000)")
    else:
        results["scores"] = score(models, args, SAMPLERS, load_dataset("mnist5k", "test"))
    write_results(args.out, results, started, markdown)


CHOICE_IMAGES = 1000  # training-split images the sweep's choice is scored against


def score(models: dict, args: argparse.Namespace, samplers: list, real, real_name: str = "mnist5k:test") -> dict:
    """FID (first judge) against ``real`` with its interval and the paired difference to the student's, per
    sampler."""
    judge = judges_for(aediff.load(args.classifier).model)[0]
    reference = judge.reference_features(real)
    scores = {}
    for name, which, sampler, steps in samplers:
        begun = time.perf_counter()
        options = SamplerOptions(sampler=sampler, steps=steps)
        images = sample_images(models[which], args.samples, seed=0, options=options)
        seconds = time.perf_counter() - begun
        s = generation_score(images, judge.features, real, feature_extractor=judge.name, reference_name=real_name,
                             seed=0, reference_features=reference)  # fmt: skip
        scores[name] = {"sampler": sampler, "steps": steps, "fid": s.fid, "fid_se": s.fid_se,
                        "draws": s.fid_draws_values, "seconds": seconds}  # fmt: skip
        print(f"{name}: FID {s.fid:.3f} +- {1.96 * (s.fid_se or 0):.3f} ({seconds:.0f} s)", flush=True)
    student = scores["student, euler 4 steps"]
    for entry in scores.values():
        gap = difference_of_draws(entry["fid"], entry["draws"], student["fid"], student["draws"])
        entry["minus_student"] = gap.to_dict()
    for entry in scores.values():
        entry.pop("draws")
    return scores


def markdown(r: dict) -> str:
    m, scores = r["machine"], r["scores"]
    reference = scores["teacher, dpm++ 20 steps (its default)"]["fid"]
    lines = [
        "# Progressive distillation, 32 -> 4 Euler steps (mnist5k)",
        "",
        f"`{r['command']}` on {m['cpu']} ({m['threads']} threads), torch {m['torch']}. Teacher: "
        f"{r['teacher']['run']} ({r['teacher']['steps']} steps of training); distillation "
        f"{r['distill_seconds']:.0f} s, lr {r.get('lr', 1e-4):g}; {r['samples']} samples per row, FID in the "
        "classifier judge's features "
        "against the test split (+- 95%, bootstrap); the last column is the row's FID minus the student's, "
        "paired (+- 95%).",
        "",
        "| round | iterations | seconds | final loss |",
        "|---|---|---|---|",
    ]
    lines += [f"| {h['teacher_steps']} -> {h['steps']} | {h['iterations']} | {h['seconds']:.0f} | "
              f"{h['final_loss']:.4g} |" for h in r["rounds"]]  # fmt: skip
    lines += ["", "| sampler | NFE | FID | / teacher's 20-step FID | minus the student's | seconds |",
              "|---|---|---|---|---|---|"]  # fmt: skip
    for name, s in scores.items():
        gap = Estimate.from_dict(s["minus_student"])
        lines.append(
            f"| {name} | {s['steps']} | {s['fid']:.3f} +- {1.96 * (s['fid_se'] or 0):.3f} | "
            f"{s['fid'] / reference:.2f} | {gap.value:+.3f} +- {1.96 * gap.se:.3f} | {s['seconds']:.0f} |"
        )
    if "choice" in r:  # a sweep variant: what it is compared on (never the test split)
        choice = r["choice"]
        ratio = choice["student, euler 4 steps"]["fid"] / choice["teacher, dpm++ 20 steps (its default)"]["fid"]
        lines += ["", f"lr {r['lr']:g}. Against 1,000 training images (the sweep's choice): teacher's 20 steps "
                  f"{choice['teacher, dpm++ 20 steps (its default)']['fid']:.3f}, student "
                  f"{choice['student, euler 4 steps']['fid']:.3f}, ratio {ratio:.2f}."]  # fmt: skip
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
