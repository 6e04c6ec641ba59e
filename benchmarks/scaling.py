"""Data-parallel scaling on paper: from one device's step time and the all-reduce volume of the model's
gradients, the expected efficiency at 2, 8 and 64 GPUs on stated interconnects.

    python benchmarks/scaling.py          # ~1 min; writes benchmarks/results/scaling.{json,md}

What is measured here, in this process: each model's parameter count, its gradients' bytes (DDP all-reduces
the fp32 gradients, also under bf16 autocast), its training FLOPs per image (torch's FlopCounterMode over
forward and backward) and the operators a step dispatches. The GPU step time is read from
benchmarks/results/gpu_cifar.json when that benchmark has run on a GPU; until then it is an ESTIMATE, and
the table says so: FLOPs over an assumed share (10%, 40%) of an H200's bf16 peak, but never less than the
launch floor (5 us per operator: a small network on a large GPU waits on launches, not arithmetic).

The model (weak scaling: every GPU keeps its per-device batch, so compute per step stays t_step):
- ring all-reduce of S bytes over N GPUs: t_ar = 2 (N-1)/N * S / busbw + 2 (N-1) * alpha
  (busbw: the bus bandwidth nccl-tests' all_reduce_perf reports; alpha: the per-hop latency);
- no overlap (a lower bound on efficiency): t_step / (t_step + t_ar);
- full overlap with the backward pass (an upper bound; DDP all-reduces 25 MB buckets while backward runs,
  and backward is about 2/3 of a step): t_step / max(t_step, t_step / 3 + t_ar); gradients that fit one
  bucket wait for the whole backward, so there the two bounds are the same.
Interconnects (nccl-tests busbw at large messages, published reference figures; messages of a few MB reach
less, which alpha stands in for): NVLink-4 in an 8-GPU HGX node 460 GB/s, alpha 5 us; PCIe Gen5 without
NVLink 40 GB/s, alpha 10 us; 64 GPUs = 8 such NVLink nodes over 8x400 Gb/s InfiniBand NDR per node, 40 GB/s
per GPU across nodes, alpha 20 us.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from aediff.config import update_config
from aediff.models.registry import build_model, model_class
from results_files import machine, write_results

# name -> (image shape C, H, W; model config changes; per-device batch)
MODELS = {
    "mnist default (28x28x1)": ((1, 28, 28), {}, 64),
    "CIFAR-10 config (32x32x3, widths 128,256,256,256)": (
        (3, 32, 32),
        {"channels": (128, 256, 256, 256), "attention_resolutions": (16,)},
        128,
    ),
}
INTERCONNECTS = {  # name -> (busbw bytes/s, alpha seconds, which GPU counts it serves)
    "NVLink-4, one HGX node": (460e9, 5e-6, (2, 8)),
    "PCIe Gen5, no NVLink": (40e9, 10e-6, (2, 8)),
    "8 nodes x 8 GPUs, InfiniBand NDR": (40e9, 20e-6, (64,)),
}
H200_BF16_PEAK = 989e12  # dense bf16 FLOP/s (NVIDIA's H100/H200 SXM data sheets)
ASSUMED_UTILIZATION = (0.10, 0.40)  # the GPU estimate's range, until gpu_cifar.py has measured a step
SECONDS_PER_OPERATOR = 5e-6  # eager PyTorch on a GPU: launch and dispatch of one operator, at the least


def build(shape, changes):
    channels, size, _ = shape
    config = update_config(model_class("diffusion").config_class(),
                           {"image_channels": channels, "image_size": size, **changes})  # fmt: skip
    torch.manual_seed(0)
    return build_model("diffusion", config).train()


def training_flops_per_image(model, shape, batch: int = 4) -> float:
    images = torch.rand(batch, *shape) * 2 - 1
    with FlopCounterMode(display=False) as counter:
        loss, _ = model({"images": images})
        loss.backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / batch


class OpCounter(TorchDispatchMode):
    """Counts the aten operators a region dispatches (each a kernel launch or more on a GPU, in eager mode)."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += 1
        return func(*args, **(kwargs or {}))


def operators_per_step(model, shape, batch: int = 4) -> int:
    images = torch.rand(batch, *shape) * 2 - 1
    with OpCounter() as counter:
        loss, _ = model({"images": images})
        loss.backward()
    model.zero_grad(set_to_none=True)
    return counter.count


def allreduce_seconds(size_bytes: float, gpus: int, busbw: float, alpha: float) -> float:
    return 2 * (gpus - 1) / gpus * size_bytes / busbw + 2 * (gpus - 1) * alpha


DDP_BUCKET_BYTES = 25e6  # DDP's default bucket_cap_mb


def efficiency(step: float, allreduce: float, gradient_bytes: float) -> tuple[float, float]:
    """(no overlap, full overlap with backward) for a step of ``step`` seconds and its all-reduce. Gradients
    that fit one DDP bucket are all-reduced after the whole backward: no overlap at all."""
    alone = step / (step + allreduce)
    return alone, alone if gradient_bytes <= DDP_BUCKET_BYTES else step / max(step, step / 3 + allreduce)


def gpu_steps(name: str, flops_per_step: float, operators: int, measured: dict | None) -> dict[str, float]:
    """The GPU step times to plan with: measured by gpu_cifar.py (CIFAR config, when it has run), else the
    estimate at each assumed utilization, never below the operators' launch floor."""
    if measured and name.startswith("CIFAR") and "aediff, bf16" in measured.get("throughput", {}):
        rate = max(v["images_per_s"] for k, v in measured["throughput"].items() if k.startswith("aediff"))
        return {f"measured on {measured['machine'].get('gpu', 'GPU')}": measured["batch"] / rate}
    floor = operators * SECONDS_PER_OPERATOR
    return {
        f"estimate: {u:.0%} of H200 bf16 peak, launch floor {floor * 1e3:.1f} ms": max(
            floor, flops_per_step / (H200_BF16_PEAK * u)
        )
        for u in ASSUMED_UTILIZATION
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gpu-results", type=Path, default=Path("benchmarks/results/gpu_cifar.json"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/scaling"))
    args = parser.parse_args()
    started = time.time()
    measured = json.loads(args.gpu_results.read_text()) if args.gpu_results.exists() else None
    results = {"machine": machine(), "interconnects": {k: list(v) for k, v in INTERCONNECTS.items()}, "models": {}}
    for name, (shape, changes, batch) in MODELS.items():
        model = build(shape, changes)
        parameters = sum(p.numel() for p in model.parameters() if p.requires_grad)
        flops, operators = training_flops_per_image(model, shape), operators_per_step(model, shape)
        row = {"parameters": parameters, "gradient_bytes": 4 * parameters, "train_flops_per_image": flops,
               "operators_per_step": operators, "batch_per_device": batch,
               "gpu_step_s": gpu_steps(name, flops * batch, operators, measured), "efficiency": {}}  # fmt: skip
        steps = row["gpu_step_s"]
        for link, (busbw, alpha, counts) in INTERCONNECTS.items():
            for gpus in counts:
                t_ar = allreduce_seconds(row["gradient_bytes"], gpus, busbw, alpha)
                for step_name, step in steps.items():
                    low, high = efficiency(step, t_ar, row["gradient_bytes"])
                    cell = {"allreduce_s": t_ar, "step_s": step, "no_overlap": low, "overlap": high}
                    row["efficiency"][f"{gpus} | {link} | {step_name}"] = cell
        results["models"][name] = row
        print(name, f"{parameters / 1e6:.2f}M params, {flops / 1e9:.2f} GFLOP/image", flush=True)
    write_results(args.out, results, started, markdown)


def markdown(r: dict) -> str:
    m = r["machine"]
    lines = [f"Data-parallel scaling on paper (`python benchmarks/scaling.py`, counted on {m['cpu']}, "
             f"torch {m['torch']}). Model and interconnect figures: the script's docstring.", ""]  # fmt: skip
    for name, m in r["models"].items():
        lines += [
            f"## {name}",
            "",
            f"{m['parameters'] / 1e6:.2f}M parameters, {m['gradient_bytes'] / 1e6:.1f} MB of fp32 gradients per "
            f"all-reduce, {m['train_flops_per_image'] / 1e9:.2f} GFLOP per training image; batch "
            f"{m['batch_per_device']} per device; {m['operators_per_step']} operators per forward and backward.",
            "",
            "| GPUs | interconnect | step time from | step, ms | all-reduce, ms | efficiency (no overlap - overlap) |",
            "|---|---|---|---|---|---|",
        ]
        for key, e in m["efficiency"].items():
            gpus, link, source = key.split(" | ")
            lines.append(f"| {gpus} | {link} | {source} | {e['step_s'] * 1e3:.2f} | {e['allreduce_s'] * 1e3:.3f} | "
                         f"{e['no_overlap']:.2f} - {e['overlap']:.2f} |")  # fmt: skip
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
