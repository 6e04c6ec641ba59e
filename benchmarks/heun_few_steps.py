"""Why Heun's method (and KDPM2) collapses at 3 steps on the default model, where Euler does not.

Traces every denoiser evaluation of Heun and Euler at 3 and 5 steps (100 samples, classes cycled, guidance 1.5,
the same noise): the noise level, the largest |x| the network is given, and the ratio of each step's noise levels.
Run with the x0 estimate clamped to [-1, 1] (the default) and without, to tell the method from the clamp.

    python benchmarks/heun_few_steps.py --diffusion /work/runs/w27/default   # ~1 min; writes results/heun_few_steps
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
import time
from pathlib import Path

import torch

import aediff
from aediff.diffusion.samplers import SamplerOptions, run_sampler
from aediff.models import Condition
from results_files import machine, write_results

CASES = [("heun", 3), ("euler", 3), ("heun", 5), ("euler", 5)]


def trace(model, sampler: str, steps: int, n: int) -> dict:
    """Each evaluation's sigma and largest |x|, and the final samples' mean |x| (before the output clamp)."""
    plan = model.sampler_plan(SamplerOptions(sampler=sampler, steps=steps))
    sigmas = model.sampling_sigmas(plan)
    noise = torch.randn(n, *model.image_shape, generator=torch.Generator().manual_seed(0))
    denoise = model.guided_denoiser(n, Condition(class_labels=torch.arange(n) % 10, guidance=1.5))
    calls = []

    def traced(x, sigma):
        calls.append({"sigma": float(sigma), "x_abs_max": float(x.abs().max())})
        return denoise(x, sigma)

    with torch.no_grad():
        x = run_sampler(plan, traced, sigmas[0] * noise, sigmas)
    ratios = [float(sigmas[i] / sigmas[i + 1]) for i in range(len(sigmas) - 2)]
    return {
        "sigmas": [float(s) for s in sigmas],
        "step_ratios": ratios,
        "calls": calls,
        "final_abs_mean": float(x.abs().mean()),
        "final_abs_max": float(x.abs().max()),
    }


def markdown(r: dict) -> str:
    lines = [
        "# Heun and Euler at 3 and 5 steps: the largest |x| each network evaluation is given",
        "",
        f"`{r['command']}` on {r['machine']['cpu']}, torch {r['machine']['torch']}; {r['samples']} samples, "
        "classes cycled, guidance 1.5. Data lie in [-1, 1]; at sigma the network expects |x| up to about 1 + 4 sigma.",
        "",
        "| clamp x0 | sampler | steps | sigma ratio of the steps | evaluations: sigma -> largest abs(x) "
        "| final mean abs(x) |",
        "|---|---|---|---|---|---|",
    ]
    for row in r["rows"]:
        calls = ", ".join(f"{c['sigma']:.4g} -> {c['x_abs_max']:.2f}" for c in row["calls"])
        ratios = ", ".join(f"{q:.0f}" for q in row["step_ratios"])
        lines.append(
            f"| {row['clip']} | {row['sampler']} | {row['steps']} | {ratios} | {calls} | {row['final_abs_mean']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--diffusion", type=Path, required=True, help="a trained class-conditioned diffusion run")
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "heun_few_steps")
    args = parser.parse_args(argv)
    started = time.time()
    model = aediff.load(args.diffusion, device="cpu").model.eval()
    rows = []
    for clip in (True, False):
        sampling = dataclasses.replace(model.config.sampling, clip_denoised=clip)
        model.config = dataclasses.replace(model.config, sampling=sampling)
        for sampler, steps in CASES:
            rows.append(
                {"clip": clip, "sampler": sampler, "steps": steps, **trace(model, sampler, steps, args.samples)}
            )
    results = {
        "command": "python benchmarks/heun_few_steps.py " + shlex.join(argv),
        "machine": machine(),
        "model": str(args.diffusion),
        "samples": args.samples,
        "rows": rows,
    }
    write_results(args.out, results, started, markdown)


if __name__ == "__main__":
    main(sys.argv[1:])
