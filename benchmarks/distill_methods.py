"""Few-step students of one teacher: progressive distillation in the published recipe and in aediff's earlier one,
and consistency distillation, each given the same distillation budget, scored at 1, 2 and 4 network evaluations.

Variants (every one tried is reported):
- progressive, published recipe: 32 -> 1 Euler steps in five halvings sharing the budget, the learning rate decayed
  linearly to 0 within each, no EMA of the student (aediff's default since this benchmark); the 4- and 2-step
  students are the rounds that end there;
- progressive, earlier recipe: the same halvings at a constant learning rate, the EMA (0.999) as the next teacher;
- consistency: one student on the Karras grid of --cd-levels levels (target network mu 0.95), sampled with
  multistep consistency sampling at 1, 2 and 4 steps.

Controls that must lose: the teacher itself at 1, 2 and 4 evaluations (dpm++, and its one jump D(x, sigma_max)).
The reference: the teacher's 20-step default. Every row is scored from the same seeds against the test split (the
table) and against --choice-images images of the training split (the validation set, where variants are compared),
in the classifier judge's features, with the class balance of its samples.

    python benchmarks/distill_methods.py --teacher /work/runs/bench26/diffusion \
        --judge /work/runs/stability-2m/runs/classifier --minutes 10
    python benchmarks/distill_methods.py ... --minutes 30 --iterations-from benchmarks/results/distill_methods_10m.json

Writes benchmarks/results/distill_methods_<minutes>m.json and .md (--out).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import torch

import aediff
from aediff.diffusion.samplers import SamplerOptions
from aediff.evaluation import generation_score, sample_images
from aediff.evaluation.judges import judges_for
from aediff.evaluation.speed import network_rows
from aediff.evaluation.suite import judged_class_balance
from aediff.training.distill import DistillConfig, distill
from results_files import machine, write_results

VARIANTS = {  # name -> DistillConfig fields (steps and the budget are set per run)
    "progressive, published recipe": {"method": "progressive", "teacher_steps": 32, "steps": 1},
    "progressive, earlier recipe": {
        "method": "progressive",
        "teacher_steps": 32,
        "steps": 1,
        "lr_decay": False,
        "ema_decay": 0.999,
    },  # fmt: skip
    "consistency": {"method": "consistency", "steps": 1},
}


def students(teacher: Any, train: Any, args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    """Every variant's students by (variant, steps) -> (model, sampler), and each variant's rounds."""
    found, rounds = {}, {}
    for name in args.only:
        fields = VARIANTS[name]
        if fields["method"] == "consistency":
            fields = {**fields, "teacher_steps": args.cd_levels}
        config = DistillConfig(**budget(name, args), lr=args.lr, seed=args.seed, **fields)
        kept: dict[int, Any] = {}
        student = distill(teacher.model, train, config, report=print, on_round=kept.__setitem__)
        rounds[name] = config.history
        if config.method == "consistency":
            found |= {(name, steps): (student, "consistency") for steps in (1, 2, 4)}
        else:
            found |= {(name, steps): (kept[steps], "euler") for steps in (1, 2, 4)}
    return found, rounds


def budget(variant: str, args: argparse.Namespace) -> dict[str, Any]:
    """The variant's distillation budget: --minutes of time; or, with --iterations-from, the iterations its rounds
    reached in that earlier run times minutes / that run's minutes (so that the budget, once measured on idle
    cores, does not depend on what the machine does meanwhile)."""
    if args.iterations_from is None:
        return {"max_minutes": args.minutes}
    earlier = json.loads(args.iterations_from.read_text())
    rounds = earlier["rounds"][variant]
    per_round = sum(r["iterations"] for r in rounds) / len(rounds)
    return {"iterations": round(per_round * args.minutes / earlier["minutes"])}


def score_row(model: Any, sampler: str, steps: int, classifier: Any, references: dict, args) -> dict:
    """``args.samples`` samples of ``model`` (its default condition: a class-conditioned model draws every class
    in turn at its default guidance), timed; FID against every reference (split -> (data, judge, features))."""
    options = SamplerOptions(sampler=sampler, steps=steps)
    started = time.perf_counter()
    with network_rows(model) as rows:  # a guided evaluation is two passes
        images = sample_images(model, args.samples, seed=args.seed, options=options)
    row: dict[str, Any] = {"sampler": sampler, "steps": steps, "seconds": time.perf_counter() - started,
                           "network_passes": rows[0] // args.samples}  # fmt: skip
    for split, (data, judge, features) in references.items():
        s = generation_score(images, judge.features, data, feature_extractor=judge.name, reference_name=split,
                             seed=args.seed, reference_features=features)  # fmt: skip
        row[split] = {"fid": s.fid, "fid_se": s.fid_se}
    balance = judged_class_balance(classifier, images, references["test"][0].labels)
    row["confident"], row["chi_square"] = balance.confident_share, balance.chi_square
    return row


def markdown(r: dict) -> str:
    m = r["machine"]
    reference = r["rows"]["teacher, dpm++ 20 steps (its default)"]
    lines = [
        f"# Few-step students, {r['minutes']:g}-minute distillation budget (mnist5k)",
        "",
        f"Budget: {r['budget']}.",
        "",
        f"`{r['command']}` on {m['cpu']} ({m['threads']} threads), torch {m['torch']}. Teacher: {r['teacher']} "
        f"({r['teacher_steps']} training steps). {r['samples']} samples per row from the same seeds; FID in the "
        "classifier judge's features (+- 1.96 bootstrap standard errors) against the test split and against "
        f"{r['choice_images']} training images (validation: where variants are compared); ratio: test FID over the "
        "teacher's 20-step test FID.",
        "",
        "| row | steps | network passes | test FID | / teacher's 20 | test FID (layers) | validation FID | confident "
        "| chi-square | seconds |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in r["rows"].items():
        test, validation, layers = row["test"], row["validation"], row["test (layers)"]
        lines.append(
            f"| {name} | {row['steps']} | {row['network_passes']} | {test['fid']:.2f} +- "
            f"{1.96 * (test['fid_se'] or 0):.2f} | {test['fid'] / reference['test']['fid']:.2f} | "
            f"{layers['fid']:.2f} +- {1.96 * (layers['fid_se'] or 0):.2f} | {validation['fid']:.2f} | "
            f"{row['confident']:.3f} | {row['chi_square']:.1f} | {row['seconds']:.1f} |"
        )
    lines += ["", "| variant | round | iterations | seconds | final loss |", "|---|---|---|---|---|"]
    for name, rounds in r["rounds"].items():
        lines += [f"| {name} | {h['teacher_steps']} -> {h['steps']} | {h['iterations']} | {h['seconds']:.0f} | "
                  f"{h['final_loss']:.4g} |" for h in rounds]  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", type=Path, required=True, help="a trained diffusion run")
    parser.add_argument("--judge", type=Path, required=True, help="a trained classifier run")
    parser.add_argument("--minutes", type=float, default=10.0, help="distillation budget of each variant")
    parser.add_argument(
        "--iterations-from", type=Path, default=None, help="an earlier results file: its iterations scaled to --minutes"
    )
    parser.add_argument("--only", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--cd-levels", type=int, default=18, help="consistency: levels of the Karras grid")
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--choice-images", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    out = args.out or Path(__file__).parent / "results" / f"distill_methods_{args.minutes:g}m"
    started = time.time()
    teacher = aediff.load(args.teacher, device="cpu")
    train, test = teacher.data.load_by_position("train"), teacher.data.load_by_position("test")
    choice = train.subset(torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[: args.choice_images])
    classifier = aediff.load(args.judge, device="cpu").model.eval()
    judge, layers = judges_for(classifier)
    references = {
        "test": (test, judge, judge.reference_features(test)),
        "validation": (choice, judge, judge.reference_features(choice)),
        "test (layers)": (test, layers, layers.reference_features(test)),
    }
    found, rounds = students(teacher, train, args)
    rows = {"teacher, dpm++ 20 steps (its default)": (teacher.model, "dpm++", 20)}
    for steps in (1, 2, 4):
        rows[f"teacher, dpm++ {steps} steps (control)"] = (teacher.model, "dpm++", steps)
    rows["teacher, one jump D(x, sigma_max) (control)"] = (teacher.model, "consistency", 1)
    for (name, steps), (model, sampler) in sorted(found.items(), key=lambda item: (item[0][0], -item[0][1])):
        rows[f"{name}, {sampler} {steps} steps"] = (model, sampler, steps)
    scored = {}
    for name, (model, sampler, steps) in rows.items():
        scored[name] = score_row(model, sampler, steps, classifier, references, args)
        print(f"{name}: test FID {scored[name]['test']['fid']:.2f}", flush=True)
    results = {
        "command": "python benchmarks/distill_methods.py " + shlex.join(argv),
        "machine": machine(),
        "teacher": str(args.teacher),
        "teacher_steps": teacher.summary.steps if teacher.summary is not None else None,
        "minutes": args.minutes,
        "budget": "timed" if args.iterations_from is None else f"the iterations of {args.iterations_from.name}, scaled",
        "samples": args.samples,
        "choice_images": args.choice_images,
        "rows": scored,
        "rounds": rounds,
    }
    write_results(out, results, started, markdown)


if __name__ == "__main__":
    main(sys.argv[1:])
