"""Conditioned and latent diffusion, measured: conditional accuracy against guidance, the quality-diversity
trade-off, text encoders on training templates and on unseen paraphrases, captions on `emoji`, and
latent against pixel diffusion at an equal CPU budget.

    aediff train classifier --data mnist5k --out runs/clf --epochs 15       # the judge and feature space, once
    python benchmarks/diffusion_budget.py --minutes 10 --only aediff         # the pixel run `latent` compares with
    python benchmarks/conditioning.py --minutes 5 --latent-minutes 10         # the documented run
    python benchmarks/conditioning.py --minutes 0.5 --samples 200 --only class   # a smoke run

Sections (``--only``):
- class: `train diffusion --condition class`; 100 samples per digit at each guidance scale, scored by the
  classifier (accuracy: the sampled class is the classifier's top class), FID / KID against the test split
  and per-class FID (each class's samples against that class's test images).
- text-learned, text-minilm: `--condition text` with captions generated from the labels; accuracy at
  guidance 3 on the training templates and on paraphrases that no training caption used.
- latent: an AE with a spatial latent, then `train latent-diffusion` on it for --latent-minutes, against
  the pixel run of diffusion_budget.py (same budget): FID and sampling seconds per image at equal steps.
- emoji: `--condition text` on `emoji` at 32x32 for a grid of ten captions no training image had, and FID
  against the test images in the features of an autoencoder trained on emoji's train split.
Writes benchmarks/results/conditioning.json and .md.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import time
from pathlib import Path

import torch

import aediff
from aediff.data import DataConfig, caption_templates, fill_template, load_dataset, save_image_grid
from aediff.environment import cpu_model
from aediff.evaluation import generation_score, sample_images
from aediff.models import Condition
from aediff.training.train import train

NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
UNSEEN_EMOJI_CAPTIONS = [
    "red heart with a smile",
    "blue car",
    "pink robot",
    "smiling sun",
    "yellow star face",
    "cat with glasses",
    "purple flower",
    "crying moon",
    "orange fish",
    "black umbrella",
]


def paraphrases(digit: int) -> list[str]:
    """Captions no training template produces: the bare word, a riddle, the bare numeral."""
    riddle = f"the digit after {NUMBER_WORDS[digit - 1]}" if digit else "the digit before one"
    return [NUMBER_WORDS[digit], riddle, str(digit)]


def log(*parts) -> None:
    print(*parts, file=sys.stderr, flush=True)


def save_digit_grid(images: torch.Tensor, path: Path) -> None:
    """Samples drawn for the digits 0..9 in turn as a grid with one row per digit (up to 10 per row)."""
    per = min(10, len(images) // 10)
    if per == 0:
        return
    shape = images.shape[1:]
    save_image_grid(
        images[: 10 * per].reshape(per, 10, *shape).transpose(0, 1).reshape(10 * per, *shape), path, nrow=per
    )


class Judge:
    """The classifier of `aediff train classifier`: accuracy and FID / KID in its features."""

    def __init__(self, path: Path, test):
        self.model, self.test, self.path = aediff.load(path).model, test, path

    def accuracy(self, images: torch.Tensor, labels: torch.Tensor) -> float:
        with torch.no_grad():
            predicted = torch.cat(
                [self.model.logits(images[i : i + 500]).argmax(1) for i in range(0, len(images), 500)]
            )
        return float((predicted == labels).float().mean())

    def score(self, images: torch.Tensor, reference=None, name: str = "mnist5k:test") -> dict:
        return generation_score(
            images,
            self.model.features,
            reference or self.test,
            feature_extractor=f"classifier:{self.path}",
            reference_name=name,
        ).to_dict()


def train_run(
    family: str, out: Path, data: str | DataConfig, minutes: float, model: dict, steps: int | None = None
) -> Path:
    """Train for ``minutes`` (or exactly ``steps``, which makes the result independent of the machine's
    load) into ``out``, replacing a run left there by an earlier benchmark; returns the run folder."""
    budget = {"max_steps": steps} if steps else {"max_minutes": minutes}
    log(f"== training {family} {model} for {budget} -> {out}")
    if (out / "config.json").exists():
        shutil.rmtree(out)
    result = train(family, out, data, model=model, training={**budget, "batch_size": 64}, progress=False)
    return result.run_dir


def steps_of(run: aediff.Run) -> int:
    """Training steps of a run (from its training state, else its log)."""
    return run.summary.steps if run.summary is not None else 0


def class_section(args, judge: Judge) -> dict:
    run = train_run(
        "diffusion", args.runs / "class", "mnist5k", args.minutes, {"conditioning.kind": "class"}, args.steps
    )
    loaded = aediff.load(run)
    model = loaded.model
    labels = torch.arange(args.samples) % 10
    rows = {}
    for w in args.guidances:
        start = time.perf_counter()
        images = sample_images(model, args.samples, seed=1, condition=Condition(class_labels=labels, guidance=w))
        seconds = time.perf_counter() - start
        per_class = {}
        for digit in range(10):
            reference = judge.test.subset(torch.nonzero(judge.test.labels == digit).flatten())
            per_class[digit] = judge.score(images[labels == digit], reference, f"mnist5k:test, class {digit}")["fid"]
        rows[str(w)] = {
            "accuracy": judge.accuracy(images, labels),
            **judge.score(images),
            "per_class_fid": per_class,
            "mean_per_class_fid": sum(per_class.values()) / 10,
            "sample_seconds_per_image": seconds / args.samples,
        }
        save_digit_grid(images, args.out.parent / f"conditioning_class_w{w:g}.png")
        log(f"class, guidance {w}: accuracy {rows[str(w)]['accuracy']:.3f}, FID {rows[str(w)]['fid']:.2f}")
    return {"run": str(run), "steps": steps_of(loaded), "guidance": rows}


def text_section(args, judge: Judge, encoder: str) -> dict:
    run = train_run(
        "diffusion",
        args.runs / f"text-{encoder}",
        "mnist5k",
        args.minutes,
        {"conditioning.kind": "text", "text_encoder": encoder},
        args.steps,
    )
    loaded = aediff.load(run)
    model = loaded.model
    names = [str(d) for d in range(10)]
    templates, held_out = caption_templates(names), caption_templates(names, held_out=True)
    per = args.samples // 10
    labels = torch.arange(per * 10) % 10
    prompt_sets = {  # each set cycles through its wordings, 100 samples per digit
        "training templates": [fill_template(templates[i % len(templates)], str(int(d))) for i, d in enumerate(labels)],
        "held-out templates": [fill_template(held_out[i % len(held_out)], str(int(d))) for i, d in enumerate(labels)],
    }
    for k, style in enumerate(["bare word ('seven')", "riddle ('the digit after six')", "numeral ('7')"]):
        prompt_sets[style] = [paraphrases(int(d))[k] for d in labels]
    rows = {}
    for name, prompts in prompt_sets.items():
        images = sample_images(
            model, len(prompts), seed=1, condition=Condition(prompts=prompts, guidance=args.text_guidance)
        )
        rows[name] = {"accuracy": judge.accuracy(images, labels), "fid": judge.score(images)["fid"]}
        log(f"text {encoder}, {name}: accuracy {rows[name]['accuracy']:.3f}")
        if name == "riddle ('the digit after six')":
            save_digit_grid(images, args.out.parent / f"conditioning_text_{encoder}.png")
    return {"run": str(run), "steps": steps_of(loaded), "guidance": args.text_guidance, "prompts": rows}


def latent_section(args, judge: Judge) -> dict:
    autoencoder = train_run(
        "ae", args.runs / "latent-ae", "mnist5k", args.ae_minutes, {"latent": "spatial", "latent_channels": 4}
    )
    latent = train_run(
        "latent-diffusion", args.runs / "latent", "mnist5k", args.latent_minutes, {"autoencoder.path": str(autoencoder)}
    )
    out = {}
    for name, run in [("pixel", args.pixel_run), ("latent", latent)]:
        loaded = aediff.load(run)
        model = loaded.model
        sample_images(model, 8, seed=0)  # warm-up
        seconds = []
        for repeat in range(3):  # median of three timings, both models in this process
            start = time.perf_counter()
            images = sample_images(model, args.samples, seed=repeat + 1)
            seconds.append((time.perf_counter() - start) / args.samples)
        steps = steps_of(loaded)
        denoiser_parameters = sum(p.numel() for k, p in model.named_parameters() if not k.startswith("autoencoder"))
        out[name] = {
            "run": str(run),
            "training_steps": steps,
            "sampler": model.config.sampling.sampler,
            "sampling_steps": model.config.sampling.steps,
            **judge.score(images),
            "sample_seconds_per_image": sorted(seconds)[1],
            "parameters": denoiser_parameters,
        }
        save_image_grid(images[:100], args.out.parent / f"conditioning_{name}_diffusion.png", nrow=10)
        log(f"{name}: FID {out[name]['fid']:.2f}, {out[name]['sample_seconds_per_image'] * 1000:.2f} ms/image")
    out["speedup"] = out["pixel"]["sample_seconds_per_image"] / out["latent"]["sample_seconds_per_image"]
    return out


def emoji_section(args) -> dict:
    train_set = load_dataset("emoji", "train", resolution=32)
    test = load_dataset("emoji", "test", resolution=32)
    unseen = [c for c in UNSEEN_EMOJI_CAPTIONS if c not in set(train_set.captions)]
    emoji = DataConfig(spec="emoji", resolution=32)
    features_run = train_run(
        "ae", args.runs / "emoji-ae", emoji, args.ae_minutes, {"bottleneck_dim": 64, "channels": (32, 64, 64)}
    )
    run = train_run(
        "diffusion",
        args.runs / "emoji",
        emoji,
        args.minutes,
        {"conditioning.kind": "text", "channels": (32, 64, 64), "attention_resolutions": (8,)},
        args.steps,
    )
    loaded = aediff.load(run)
    model, features = loaded.model, aediff.load(features_run).model
    unseen_prompts = Condition(prompts=[c for c in unseen for _ in range(4)], guidance=args.text_guidance)
    grid = sample_images(model, len(unseen) * 4, seed=0, condition=unseen_prompts)
    save_image_grid(grid, args.out.parent / "conditioning_emoji_unseen.png", nrow=4)
    count = min(args.samples, len(test))
    test_prompts = Condition(prompts=[test.captions[i % len(test)] for i in range(count)], guidance=args.text_guidance)
    images = sample_images(model, count, seed=1, condition=test_prompts)
    score = generation_score(
        images, features.encode, test, feature_extractor=f"ae:{features_run}", reference_name="emoji:test"
    ).to_dict()
    reference = generation_score(
        train_set.batch(torch.arange(len(images)))["images"],
        features.encode,
        test,
        feature_extractor=f"ae:{features_run}",
        reference_name="emoji:test",
    ).to_dict()
    steps = steps_of(loaded)
    log(f"emoji: FID {score['fid']:.2f} (train images against test: {reference['fid']:.2f})")
    return {
        "run": str(run),
        "steps": steps,
        "unseen_captions": unseen,
        "fid": score["fid"],
        "kid_mean": score["kid_mean"],
        "train_vs_test_fid": reference["fid"],
        "samples": len(images),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=5.0, help="training budget of each conditioned model")
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help="train the conditioned models (class, text, emoji) for this many steps instead",
    )
    parser.add_argument("--latent-minutes", type=float, default=10.0, help="latent diffusion's budget")
    parser.add_argument("--ae-minutes", type=float, default=3.0, help="the autoencoders' budget")
    parser.add_argument("--pixel-run", type=Path, default=Path("runs/bench-diffusion/aediff"))
    parser.add_argument("--classifier", type=Path, default=Path("runs/clf"))
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--guidances", type=float, nargs="*", default=[1.0, 3.0, 5.0])
    parser.add_argument("--text-guidance", type=float, default=3.0)
    parser.add_argument("--only", nargs="*", default=["class", "text-learned", "text-minilm", "latent", "emoji"])
    parser.add_argument("--runs", type=Path, default=Path("runs/bench-conditioning"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/conditioning"))
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    path = args.out.with_suffix(".json")
    results = json.loads(path.read_text()) if path.exists() else {}
    results["machine"] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": cpu_model(),
    }
    results["settings"] = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "only"}
    judge = Judge(args.classifier, load_dataset("mnist5k", "test"))
    for section in args.only:
        if section == "class":
            results["class"] = class_section(args, judge)
        elif section.startswith("text-"):
            results[section] = text_section(args, judge, section.removeprefix("text-"))
        elif section == "latent":
            results["latent"] = latent_section(args, judge)
        elif section == "emoji":
            results["emoji"] = emoji_section(args)
        else:
            raise SystemExit(f"unknown section {section!r}")
        path.write_text(json.dumps(results, indent=2))
        write_markdown(results, args.out.with_suffix(".md"))


def write_markdown(results: dict, path: Path) -> None:
    s = results["settings"]
    machine = results["machine"]
    budget = f"{s['steps']} steps" if s.get("steps") else f"{s['minutes']} min"
    lines = [
        f"Conditioned models: {budget} of training each (batch 64); latent diffusion {s['latent_minutes']} min; "
        f"{s['samples']} samples; torch {machine['torch']}, {machine['threads']} threads"
        + (f", {machine['cpu']}." if machine.get("cpu") else "."),
        "",
    ]
    if "class" in results:
        lines += [
            "Class conditioning (100 samples per digit):",
            "",
            "| guidance | accuracy | FID | KID | mean per-class FID |",
            "|---|---|---|---|---|",
        ]
        for w, r in results["class"]["guidance"].items():
            lines.append(
                f"| {w} | {r['accuracy']:.3f} | {r['fid']:.2f} | {r['kid_mean']:.4f} | {r['mean_per_class_fid']:.2f} |"
            )
        lines.append("")
    for key in ("text-learned", "text-minilm"):
        if key in results:
            lines += [
                f"Text conditioning, {key.removeprefix('text-')} encoder (guidance {results[key]['guidance']}):",
                "",
                "| prompts | accuracy | FID |",
                "|---|---|---|",
            ]
            for name, r in results[key]["prompts"].items():
                lines.append(f"| {name} | {r['accuracy']:.3f} | {r['fid']:.2f} |")
            lines.append("")
    if "latent" in results:
        r = results["latent"]
        lines += [
            "Latent against pixel diffusion:",
            "",
            "| model | training steps | sampler | FID | ms per sample | parameters |",
            "|" + "---|" * 6,
        ]
        for name in ("pixel", "latent"):
            m = r[name]
            lines.append(
                f"| {name} | {m['training_steps']} | {m['sampler']}, {m['sampling_steps']} steps | "
                f"{m['fid']:.2f} | {m['sample_seconds_per_image'] * 1000:.2f} | "
                f"{m['parameters'] / 1e6:.2f}M |"
            )
        lines += ["", f"Latent sampling is {r['speedup']:.1f}x faster per image.", ""]
    if "emoji" in results:
        r = results["emoji"]
        lines += [
            f"emoji, 32x32: FID {r['fid']:.2f} over {r['samples']} samples (train images against test: "
            f"{r['train_vs_test_fid']:.2f}); {r['steps']} steps.",
            "",
        ]
    path.write_text("\n".join(lines))


if __name__ == "__main__":
    main()
