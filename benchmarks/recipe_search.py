"""A declared search for a better 10-minute diffusion default, chosen on a validation split.

The budget, declared before any result: stage 1 trains the VARIANTS below (the default and one change each);
stage 2 trains one more, the class-conditional recipe with every stage-1 change that beat the default on
validation. Every variant trains on the same 3,500 of mnist5k's 4,000 training images (peers.py's cut; the
other 500 are the validation split) for the steps its own throughput reaches in --minutes (measured first, one
variant after another, on idle cores), so a result does not depend on what the machine did meanwhile.

Choices, all on validation (500 samples, seed 1, against the 500 validation images, classifier judge): the
guidance of a class-conditional variant from GUIDANCE (its samples cycle the classes: every class equally
often), and the variant. The test split (1,000 images) then scores every variant, chosen or not: FID in both
judges with bootstrap intervals, the confident share and the chi-square of the class histogram against the test
split's class frequencies (1,000 samples, seed 0).

    python benchmarks/recipe_search.py --judge /work/runs/stability-2m/runs/classifier --runs /work/runs/search
    python benchmarks/recipe_search.py ... --only "default" "lr 2e-3"      # part of stage 1; rerun to add more
    python benchmarks/recipe_search.py ... --stage 2                       # the combination, after stage 1

Results accumulate in benchmarks/results/recipe_search.json and .md (--out): a rerun scores what is new.
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
from aediff.data import load_dataset
from aediff.evaluation import generation_score, judges_for, sample_images
from aediff.evaluation.suite import judged_class_balance
from aediff.models import Condition
from peers import BATCH, Variant, aediff_training, measure_throughput, slug, validation_split
from results_files import machine, save

VARIANTS: dict[str, dict[str, Any]] = {  # name -> {"model": overrides, "training": overrides}
    "default": {},
    "lr 2e-3": {"training": {"lr": 2e-3}},
    "EMA 0.9995": {"training": {"ema_decay": 0.9995}},
    "batch 128, lr 2e-3": {"training": {"batch_size": 128, "lr": 2e-3}},
    "min-SNR-5 weighting": {"model": {"loss_weighting": "min_snr"}},
    "EDM (schedule, preconditioning)": {"model": {"schedule": "edm", "parameterization": "edm"}},
    "widths 32,64,128": {"model": {"channels": [32, 64, 128]}},
    "no attention": {"model": {"attention_resolutions": []}},
    "class-conditional": {"model": {"conditioning.kind": "class"}},
}
GUIDANCE = (1.0, 1.5, 2.0, 3.0)  # tried on validation for a class-conditional variant
VALIDATION_SAMPLES, TEST_SAMPLES = 500, 1000


def combined(results: dict) -> tuple[str, dict[str, Any]]:
    """Stage 2: class-conditional with every stage-1 change whose validation FID beat the default's."""
    base = results["variants"]["default"]["validation"]["fid"]
    winners = [n for n, row in results["variants"].items() if n in VARIANTS and row["validation"]["fid"] < base]
    settings: dict[str, Any] = {"model": {"conditioning.kind": "class"}, "training": {}}
    for name in winners:
        for part in ("model", "training"):
            settings[part] |= VARIANTS[name].get(part, {})
    return "class-conditional + " + (", ".join(w for w in winners if w != "class-conditional") or "nothing"), settings


def draw(model: Any, n: int, seed: int, guidance: float | None) -> torch.Tensor:
    """n samples; a class-conditional model cycles the classes (every class equally often) at ``guidance``."""
    if guidance is None:
        return sample_images(model, n, seed=seed)
    labels = torch.arange(n) % model.num_classes
    return sample_images(model, n, seed=seed, condition=Condition(class_labels=labels, guidance=guidance))


def fid(images: torch.Tensor, judge: Any, reference: Any, features: torch.Tensor, name: str) -> dict[str, float]:
    s = generation_score(images, judge.features, reference, feature_extractor=judge.name, reference_name=name,
                         seed=0, reference_features=features)  # fmt: skip
    return {"fid": s.fid, "fid_se": s.fid_se}


def evaluate(run: Any, classifier: Any, judges: list, validation: Any, test: Any) -> dict[str, Any]:
    """The guidance chosen on validation (class-conditional runs), the validation FID, and the test scores."""
    model = run.model
    first = judges[0]
    choices = list(GUIDANCE) if model.config.conditioning.kind == "class" else [None]
    by_guidance = {}
    for guidance in choices:
        images = draw(model, VALIDATION_SAMPLES, 1, guidance)
        by_guidance[str(guidance)] = fid(images, first, validation, first.reference_features(validation), "val")
    chosen = min(by_guidance, key=lambda g: by_guidance[g]["fid"])
    guidance = None if chosen == "None" else float(chosen)
    images = draw(model, TEST_SAMPLES, 0, guidance)
    balance = judged_class_balance(classifier, images, test.labels)
    return {
        "guidance": guidance, "validation_by_guidance": by_guidance, "validation": by_guidance[chosen],
        "test": {j.name: fid(images, j, test, j.reference_features(test), "test") for j in judges},
        "confident": balance.confident_share, "confident_interval": [balance.confident_low, balance.confident_high],
        "chi_square": balance.chi_square, "p_value": balance.p_value, "counts": balance.counts,
    }  # fmt: skip


def markdown(r: dict) -> str:
    lines = [
        "# A 10-minute default, searched on a validation split",
        "",
        f"Machine: {r['machine']['cpu']}, {r['machine']['threads']} threads, torch {r['machine']['torch']}. "
        f"Budget per variant: {r['minutes']:g} minutes of its own measured throughput. Validation: FID of "
        f"{VALIDATION_SAMPLES} samples against the 500 validation images (classifier judge); test: {TEST_SAMPLES} "
        "samples against the test split, +- 1.96 bootstrap standard errors; chi-square of the class histogram "
        "against the test split's frequencies (rejects at 1% above 21.67). Commands: "
        + "; ".join(f"`{c}`" for c in r["commands"]),
        "",
        "| variant | stage | img/s | steps | guidance | validation FID | test FID (classifier) | test FID (layers) "
        "| confident | chi-square |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, v in r["variants"].items():
        t = v["test"]
        lines.append(
            f"| {name} | {v['stage']} | {v['images_per_second']:.0f} | {v['steps']} | {v['guidance'] or ''} | "
            f"{v['validation']['fid']:.2f} | {t['classifier']['fid']:.2f} +- {1.96 * t['classifier']['fid_se']:.2f} | "
            f"{t['classifier-layers']['fid']:.2f} +- {1.96 * t['classifier-layers']['fid_se']:.2f} | "
            f"{v['confident']:.3f} | {v['chi_square']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def budgets(results: dict, variants: list, train_set: Any, data: Any, args: argparse.Namespace) -> dict[str, float]:
    """Each variant's training images/s, measured once on idle cores, one variant after another (stage 1 measures
    every stage-1 variant in its first run, so that later runs, on whatever machine, keep the same step budgets);
    stage 2 measures the default again beside its variant and scales by the default's stored rate."""
    stored = results.setdefault("rates", {})
    if args.stage == 1 and not stored:
        every = [Variant(n, "aediff", "search", {"model": {}, "training": {}} | s) for n, s in VARIANTS.items()]
        stored |= {v.name: measure_throughput(v, train_set, data, args.runs, args.throughput_steps) for v in every}
        results["rates_machine"] = machine()
    if args.stage == 2:
        default = Variant("default", "aediff", "search", {"model": {}, "training": {}})
        anchor = measure_throughput(default, train_set, data, args.runs, args.throughput_steps)
        for v in variants:
            rate = measure_throughput(v, train_set, data, args.runs, args.throughput_steps)
            stored[v.name] = rate * stored["default"] / anchor
    return {v.name: stored[v.name] for v in variants}


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--judge", type=Path, required=True, help="a trained classifier run (both judges)")
    parser.add_argument("--runs", type=Path, required=True, help="scratch folder of the runs")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--only", nargs="*", default=list(VARIANTS), help="stage-1 variants to run now")
    parser.add_argument("--throughput-steps", type=int, default=40, help="timed steps per variant (after 10)")
    parser.add_argument("--skip-done", action="store_true", help="leave out variants the results file already has")
    parser.add_argument("--stage", type=int, default=1, choices=(1, 2))
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "recipe_search")
    args = parser.parse_args(argv)
    args.runs.mkdir(parents=True, exist_ok=True)
    path = args.out.with_suffix(".json")
    results = json.loads(path.read_text()) if path.exists() else {"variants": {}, "commands": []}
    results |= {"machine": machine(), "minutes": args.minutes}
    results["commands"].append("python benchmarks/recipe_search.py " + shlex.join(argv))
    data = validation_split(args.runs)
    train_set, validation = data.load("train"), data.load("test")  # the 3,500 and the 500 held out
    test = load_dataset("mnist5k", "test")
    classifier = aediff.load(args.judge, device="cpu").model.eval()
    judges = judges_for(classifier)
    todo = [(n, VARIANTS[n]) for n in args.only] if args.stage == 1 else [combined(results)]
    if args.skip_done:
        todo = [(n, settings) for n, settings in todo if n not in results["variants"]]
    variants = [Variant(name, "aediff", "search", {"model": {}, "training": {}} | settings) for name, settings in todo]
    rates = budgets(results, variants, train_set, data, args)
    save(args.out, results, markdown)
    for variant in variants:
        batch = variant.settings["training"].get("batch_size", BATCH)
        steps = int(rates[variant.name] * args.minutes * 60 / batch)
        started = time.perf_counter()
        run = aediff_training(variant, args.runs / slug(variant.name), data, steps)
        row = {"stage": args.stage, "settings": variant.settings, "images_per_second": rates[variant.name],
               "steps": steps, "train_seconds": time.perf_counter() - started}  # fmt: skip
        row |= evaluate(run, classifier, judges, validation, test)
        results["variants"][variant.name] = row
        test_fid = row["test"]["classifier"]["fid"]
        print(f"{variant.name}: {steps} steps, val FID {row['validation']['fid']:.2f}, test FID {test_fid:.2f}")
        save(args.out, results, markdown)


if __name__ == "__main__":
    main(sys.argv[1:])
