"""ONNX parity: how far the exported graphs and the ONNX-only sampler are from PyTorch (issue 14).

Trains four tiny runs on `digits` (an AE, a VAE, a class-conditioned and a text-conditioned diffusion
model, the latter with its learned caption encoder; --steps each), exports each with
``aediff.export.export_onnx`` (which measures every graph's max |ONNX Runtime - PyTorch|
on a random batch), and draws --samples images with the ONNX-only Euler sampler
(``aediff.export.onnx_sampler.sample_euler``) and with aediff's own, from the same noise and sigmas, at
guidance 1 and 2. Tiny, untrained-for-quality models: the figures are about the numerics, not the images.

    OMP_NUM_THREADS=1 python benchmarks/onnx_parity.py

Writes benchmarks/results/onnx_parity.json and .md (--out).
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime
import torch

import aediff
from aediff.cli import _model_overrides
from aediff.diffusion.samplers import SamplerOptions, run_sampler
from aediff.export import export_onnx
from aediff.export.onnx_sampler import sample_euler
from aediff.models import Capability, Condition
from aediff.training.train import train
from results_files import machine, write_results

SMALL = ["channels=8,16"]
SMALL_DIFFUSION = [*SMALL, "attention_resolutions=4", "embedding_dim=16", "steps=3"]
RUNS = [  # (run name, family, CLI flags, model assignments)
    ("ae", "ae", {"bottleneck": 8}, SMALL),
    ("vae", "vae", {"bottleneck": 8}, SMALL),
    ("diffusion", "diffusion", {"condition": "class"}, SMALL_DIFFUSION),
    ("diffusion-text", "diffusion", {"condition": "text"}, [*SMALL_DIFFUSION, "text_width=32", "text_layers=1"]),
]


def condition_of(model, n: int) -> dict:
    """sample_euler's keyword for n images: class labels 0..9, or a caption per class."""
    if model.can(Capability.TEXT_CONDITION):
        return {"prompts": [f"a {i % 10}" for i in range(n)]}
    return {"class_labels": np.arange(n) % model.num_classes}


def sampler_parity(model, folder: Path, n: int, steps: int, guidance: float, seed: int) -> dict:
    """max |ONNX-only Euler - aediff's Euler| over n images from the same noise and sigmas, and both times."""
    options = model.sampler_plan(SamplerOptions(sampler="euler", steps=steps))
    sigmas = model.sampling_sigmas(options)
    noise = torch.randn(n, *model.space_shape, generator=torch.Generator().manual_seed(seed))
    condition = condition_of(model, n)
    started = time.perf_counter()
    with torch.no_grad():
        x = run_sampler(options, model.guided_denoiser(n, Condition(**condition, guidance=guidance)),
                        sigmas[0] * noise, sigmas)  # fmt: skip
        expected = model.output_images(x).numpy()
    torch_seconds = time.perf_counter() - started
    started = time.perf_counter()
    got = sample_euler(folder, noise.numpy(), sigmas.numpy(), **condition, guidance=guidance)
    onnx_seconds = time.perf_counter() - started
    return {
        "condition": next(iter(condition)),
        "guidance": guidance,
        "steps": steps,
        "samples": n,
        "max_abs_diff": float(np.abs(got - expected).max()),
        "torch_seconds": torch_seconds,
        "onnx_seconds": onnx_seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=200, help="training steps of each tiny run")
    parser.add_argument("--samples", type=int, default=64, help="images drawn by each sampler")
    parser.add_argument("--sampling-steps", type=int, default=20, help="Euler steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/onnx_parity"))
    args = parser.parse_args()
    started = time.time()
    torch.manual_seed(args.seed)
    results: dict = {
        "command": "python " + shlex.join(sys.argv),
        "machine": machine(onnxruntime=onnxruntime.__version__),
        "training_steps": args.steps,
        "graphs": {},
        "sampler": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name, family, flags, assignments in RUNS:
            train(
                family,
                root / "runs" / name,
                "digits",
                model=_model_overrides(family, flags, assignments),
                training={"max_steps": args.steps, "batch_size": 32, "tensorboard": False},
                progress=False,
            )
            model = aediff.load(root / "runs" / name, device="cpu").model
            result = export_onnx(model, root / "onnx" / name, seed=args.seed)
            results["graphs"][name] = result.max_abs_diff
            if model.can(Capability.DIFFUSION_SAMPLER):
                for guidance in (1.0, 2.0):
                    results["sampler"].append(
                        sampler_parity(model, result.out, args.samples, args.sampling_steps, guidance, args.seed)
                    )
    write_results(args.out, results, started, markdown)


def markdown(r: dict) -> str:
    m = r["machine"]
    lines = [
        "# ONNX parity",
        "",
        f"`{r['command']}` on {m['cpu']} ({m['threads']} threads), torch {m['torch']}, onnxruntime "
        f"{m['onnxruntime']}; tiny runs on digits, {r['training_steps']} training steps each.",
        "",
        "## Exported graphs: max |ONNX Runtime - PyTorch| on a random batch (fp32, tolerance 1e-4)",
        "",
        "| run | graph | max abs diff |",
        "|-----|-------|--------------|",
    ]
    for run, graphs in r["graphs"].items():
        lines += [f"| {run} | {graph} | {diff:.2e} |" for graph, diff in graphs.items()]
    lines += [
        "",
        "## ONNX-only Euler sampler against aediff's Euler sampler (same noise, same sigmas)",
        "",
        "| condition | guidance | steps | samples | max abs diff | PyTorch s | ONNX Runtime s |",
        "|-----------|----------|-------|---------|--------------|-----------|----------------|",
    ]
    lines += [
        f"| {s['condition']} | {s['guidance']:g} | {s['steps']} | {s['samples']} | {s['max_abs_diff']:.2e} | "
        f"{s['torch_seconds']:.2f} | {s['onnx_seconds']:.2f} |"
        for s in r["sampler"]
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
