"""diffusers parity: a run exported with `aediff export --format diffusers --sampler S`, sampled by
diffusers' own scheduler for S (EulerDiscreteScheduler, DDIMScheduler, DPMSolverMultistepScheduler) through
the exported pipeline, against `aediff sample --sampler S` from the same seed. Two tiny digits runs (the
default cosine / v-prediction model, and a class-conditioned EDM one, which has no DDIM export: no discrete
schedule), each trained for --steps steps.

    python benchmarks/diffusers_parity.py          # the figures in docs/interop.md

Writes benchmarks/results/diffusers_parity.json and .md.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from pathlib import Path

import diffusers
import torch
from diffusers import DiffusionPipeline

import aediff
from aediff.cli import _model_overrides
from aediff.diffusion.samplers import SamplerOptions
from aediff.export.diffusers import export_diffusers
from aediff.models import Capability, Condition
from aediff.runs import read_run_config
from aediff.training.train import train
from results_files import machine, write_results

TINY = ["channels=8,16", "attention_resolutions=4", "embedding_dim=16"]
RUNS = {  # name -> (CLI flags, model assignments, samplers exported)
    "cosine-v": ({}, TINY, ("euler", "ddim", "dpm++")),
    "edm-class": ({"condition": "class"}, [*TINY, "schedule=edm", "parameterization=edm"], ("euler", "dpm++")),
}


def parity(run_dir: Path, out: Path, sampler: str, n: int, steps: int, seed: int) -> dict:
    """max |pipeline - aediff sampler| over n images in [0, 1] from one seed, and both times."""
    run = aediff.load(run_dir, device="cpu")
    stored = read_run_config(run_dir)
    export_diffusers(run.model, stored["model"], out, run.family, run.format_version, sampler)
    pipe = DiffusionPipeline.from_pretrained(out, custom_pipeline=str(out / "pipeline.py"), trust_remote_code=True)
    pipe.set_progress_bar_config(disable=True)
    labels = torch.arange(n) % run.model.num_classes if run.model.can(Capability.CLASS_CONDITION) else None
    started = time.perf_counter()
    theirs = pipe(batch_size=n, num_inference_steps=steps, generator=torch.Generator().manual_seed(seed),
                  class_labels=labels, output_type="pt").images  # fmt: skip
    diffusers_seconds = time.perf_counter() - started
    started = time.perf_counter()
    condition = Condition(class_labels=labels) if labels is not None else None
    options = SamplerOptions(sampler=sampler, steps=steps)
    ours = (run.model.sample(n, condition, options, generator=torch.Generator().manual_seed(seed)) + 1) / 2
    aediff_seconds = time.perf_counter() - started
    return {
        "sampler": sampler,
        "scheduler": type(pipe.scheduler).__name__,
        "samples": n,
        "steps": steps,
        "max_abs_diff": float((theirs - ours).abs().max()),
        "diffusers_seconds": diffusers_seconds,
        "aediff_seconds": aediff_seconds,
    }


def markdown(r: dict) -> str:
    m = r["machine"]
    lines = [
        "# diffusers parity",
        "",
        f"`{r['command']}` on {m['cpu']} ({m['threads']} threads), torch {m['torch']}, diffusers {m['diffusers']}; "
        f"tiny digits runs trained {r['training_steps']} steps each.",
        "",
        "| run | aediff sampler | diffusers scheduler | images | steps | max abs diff (images in [0, 1]) "
        "| diffusers s | aediff s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, p in r["runs"].items():
        lines.append(
            f"| {name.split('/')[0]} | {p['sampler']} | {p['scheduler']} | {p['samples']} | {p['steps']} | "
            f"{p['max_abs_diff']:.2g} | {p['diffusers_seconds']:.2f} | {p['aediff_seconds']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=200, help="training steps of each tiny run")
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--sampling-steps", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/diffusers_parity"))
    args = parser.parse_args()
    started = time.time()
    results: dict = {
        "command": "python " + shlex.join(sys.argv),
        "machine": machine(diffusers=diffusers.__version__),
        "training_steps": args.steps,
        "runs": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name, (flags, assignments, samplers) in RUNS.items():
            train(
                "diffusion",
                root / name,
                "digits",
                model=_model_overrides("diffusion", flags, assignments),
                training={"max_steps": args.steps, "batch_size": 32, "tensorboard": False},
                progress=False,
            )
            for sampler in samplers:
                results["runs"][f"{name}/{sampler}"] = parity(
                    root / name, root / f"{name}-{sampler}", sampler, args.samples, args.sampling_steps, args.seed
                )
    write_results(args.out, results, started, markdown)


if __name__ == "__main__":
    main()
