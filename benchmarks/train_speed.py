"""Where a training step of the default diffusion model spends its time, and what makes it faster on a CPU.

One process measures every variant of the same step (the trainer's own work: the loss on a batch of 64
mnist5k images, backward, gradient clipping, AdamW, the EMA update), interleaved in rounds so that a
change in the machine's speed touches every variant alike; the figure per variant is the median over rounds.

    python benchmarks/train_speed.py                      # ~5 min; writes benchmarks/results/train_speed.{json,md}
    python benchmarks/train_speed.py --rounds 2 --steps 3 # a smoke run

Variants: fp32, channels_last, bf16 autocast (where the CPU has avx512_bf16 or AMX; the default there), bf16
with channels_last and with torch.compile, torch.compile of the network (the trainer's `--compile`), the EMA
update as one fused foreach call, and fp32 on one thread (how much the second core buys, for running two
trainings side by side). The first 3 steps of each variant are timed apart (compilation happens there), and
the table charges them to a 10-minute run. A torch.profiler table of the fp32 step
gives the time per operator, and of the default step per kind of operator. The FLOPs of one step (forward and
backward, torch's FlopCounterMode) against the machine's dense matrix-product throughput in fp32 and bf16,
measured in the same run, give the share of the machine's limit each variant attains.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections.abc import Callable
from copy import deepcopy
from pathlib import Path

import torch

from aediff.config import update_config
from aediff.data import DataConfig
from aediff.device import cpu_has_bf16
from aediff.models.registry import build_model, model_class
from aediff.runs.training_config import TrainConfig
from aediff.training.setup import speed_up
from aediff.training.train import fill_data_shape
from aediff.training.trainer import EMA
from results_files import machine, write_results

BATCH = 64


def default_model(train_set):
    cls = model_class("diffusion")
    config = update_config(fill_data_shape(cls.config_class(), train_set), cls.data_defaults(train_set))
    torch.manual_seed(0)
    return build_model("diffusion", config)


def make_step(model, *, channels_last=False, bf16=False, compile_network=False, fused_ema=False) -> Callable:
    """The trainer's step for one variant (its layout and compilation through the trainer's own ``speed_up``);
    returns step(batch) -> loss."""
    model = deepcopy(model).train()
    ema = EMA(model, 0.999)  # before speed_up, as in the trainer: the EMA stays eager
    speed_up(model, TrainConfig(channels_last=channels_last, compile=compile_network), torch.device("cpu"))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ema_params = list(ema.model.parameters())
    params = list(model.parameters())
    autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext
    counter = iter(range(10**9))

    def step(batch):
        if channels_last:
            batch = {**batch, "images": batch["images"].contiguous(memory_format=torch.channels_last)}
        with autocast():
            loss, _ = model(batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        t = next(counter)
        if fused_ema:
            with torch.no_grad():
                torch._foreach_lerp_(ema_params, params, 1 - min(0.999, (1 + t) / (10 + t)))
        else:
            ema.update(model, t)
        return float(loss)

    return step


def images_per_second(step, batches, steps: int) -> float:
    start = time.perf_counter()
    for i in range(steps):
        step(batches[i % len(batches)])
    return steps * BATCH / (time.perf_counter() - start)


def step_flops(model, batch) -> dict[str, float]:
    """Floating-point operations of one training step's forward and backward (torch's FlopCounterMode: convolutions
    and matrix products, the work a CPU's peak refers to; a multiply-add counts 2), by operator."""
    from torch.utils.flop_counter import FlopCounterMode

    model = deepcopy(model).train()
    with FlopCounterMode(display=False) as counter:
        loss, _ = model(batch)
        loss.backward()
    return {str(op): float(n) for op, n in counter.get_flop_counts()["Global"].items()}


def matmul_flops_per_second(dtype: torch.dtype, size: int = 2048, repeats: int = 5) -> float:
    """The machine's dense matrix-product throughput in ``dtype``: a size x size product, the median of
    ``repeats`` timings (after one warm-up), in FLOP/s (2 size^3 per product)."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    a @ b
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2 * size**3 / statistics.median(times)


# operator -> what it is, for the profile grouped by kind
KINDS = (
    ("convolution", ("convolution", "conv")),
    ("matrix products (attention, linear)", ("bmm", "addmm", "mm", "matmul", "linear", "baddbmm")),
    ("normalization", ("group_norm", "layer_norm", "batch_norm")),
    ("optimizer", ("Optimizer", "adam", "_foreach")),
    ("EMA", ("lerp",)),
    ("copies and layout", ("copy_", "to_copy", "clone", "contiguous", "cat", "empty", "as_strided", "_to_copy")),
)


def kind_of(op: str) -> str:
    for kind, keys in KINDS:
        if any(key in op for key in keys):
            return kind
    return "elementwise and small kernels"


def profile_table(step, batches, steps: int = 10) -> list[dict]:
    """Self CPU time per operator of ``steps`` fp32 steps, the top 15, in % of the total."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for i in range(steps):
            step(batches[i % len(batches)])
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    rows = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)
    return [{"op": e.key, "percent": 100 * e.self_cpu_time_total / total, "calls": e.count} for e in rows]


def by_kind(profile: list[dict]) -> dict[str, float]:
    """The profile's % of self CPU time summed by kind of operator (KINDS)."""
    kinds: dict[str, float] = {}
    for row in profile:
        kinds[kind_of(row["op"])] = kinds.get(kind_of(row["op"]), 0.0) + row["percent"]
    return dict(sorted(kinds.items(), key=lambda item: -item[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10, help="steps per variant per round")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/train_speed"))
    args = parser.parse_args()
    started = time.time()
    threads = torch.get_num_threads()
    train_set = DataConfig(spec="mnist5k").load("train")
    g = torch.Generator().manual_seed(0)
    batches = [train_set.batch(torch.randperm(len(train_set), generator=g)[:BATCH]) for _ in range(8)]
    model = default_model(train_set)

    variants = {
        "fp32": {},
        "fp32, fused EMA": {"fused_ema": True},
        "channels_last": {"channels_last": True},
        "torch.compile": {"compile_network": True},
    }
    if cpu_has_bf16():
        variants["bf16 autocast"] = {"bf16": True}
        variants["bf16 + channels_last"] = {"bf16": True, "channels_last": True}
        variants["bf16 + torch.compile"] = {"bf16": True, "compile_network": True}
    steps = {name: make_step(model, **kw) for name, kw in variants.items()}
    warm_up = {}
    for name, step in steps.items():  # warm-up, compilation included: 3 steps
        t0 = time.perf_counter()
        images_per_second(step, batches, 3)
        warm_up[name] = time.perf_counter() - t0
        print(f"{name}: warm-up {warm_up[name]:.1f}s", flush=True)
    rates: dict[str, list[float]] = {name: [] for name in steps}
    rates["fp32, 1 thread"] = []
    for r in range(args.rounds):
        for name, step in steps.items():
            rates[name].append(images_per_second(step, batches, args.steps))
        torch.set_num_threads(1)
        rates["fp32, 1 thread"].append(images_per_second(steps["fp32"], batches, args.steps))
        torch.set_num_threads(threads)
        print(f"round {r}: " + ", ".join(f"{k} {v[-1]:.0f}" for k, v in rates.items()), flush=True)
    results = {
        "machine": machine(),
        "batch_size": BATCH,
        "rounds": args.rounds,
        "steps_per_round": args.steps,
        "parameters": sum(p.numel() for p in model.parameters()),
        "images_per_s": {k: statistics.median(v) for k, v in rates.items()},
        "images_per_s_all": rates,
        "warm_up_seconds": warm_up,  # the first 3 steps, compilation included
        "profile_fp32": profile_table(steps["fp32"], batches),
    }
    default = "bf16 autocast" if "bf16 autocast" in steps else "fp32"
    results["profile_default"] = profile_table(steps[default], batches)
    results["default_variant"] = default
    results["flops_per_step"] = step_flops(model, batches[0])
    results["peak_flops_per_s"] = {
        "fp32": matmul_flops_per_second(torch.float32),
        **({"bf16": matmul_flops_per_second(torch.bfloat16)} if cpu_has_bf16() else {}),
    }
    write_results(args.out, results, started, markdown)


def ten_minutes(rate: float, first_three_seconds: float | None) -> float:
    """Images trained in 10 minutes: the first 3 steps as timed (compilation included), the rest at ``rate``."""
    if first_three_seconds is None:  # measured only inside the rounds (the 1-thread row): no warm-up to count
        return 600 * rate
    return 3 * BATCH + max(0.0, 600 - first_three_seconds) * rate


def markdown(results: dict) -> str:
    base = results["images_per_s"]["fp32"]
    lines = [
        f"Training step of the default diffusion model ({results['parameters'] / 1e6:.2f}M parameters), batch "
        f"{results['batch_size']}, on {results['machine']['cpu']} ({results['machine']['threads']} threads), "
        f"torch {results['machine']['torch']}; median of {results['rounds']} interleaved rounds of "
        f"{results['steps_per_round']} steps.",
        "",
        "'10 min' is the images a 10-minute run trains, its first 3 steps (compilation included) timed as they "
        "ran and the rest at the median rate, over fp32's.",
        "",
        "| variant | images/s | / fp32 | first 3 steps, s | 10 min / fp32 |",
        "|---|---|---|---|---|",
    ]
    warm = results.get("warm_up_seconds", {})
    in_ten = {name: ten_minutes(rate, warm.get(name)) for name, rate in results["images_per_s"].items()}
    for name, rate in results["images_per_s"].items():
        first = f"{warm[name]:.1f}" if name in warm else ""
        lines.append(f"| {name} | {rate:.0f} | {rate / base:.2f} | {first} | {in_ten[name] / in_ten['fp32']:.2f} |")
    lines += [
        "",
        "fp32 step, self CPU time by operator (torch.profiler, 10 steps):",
        "",
        "| op | % | calls |",
        "|---|---|---|",
    ]
    lines += [f"| `{r['op']}` | {r['percent']:.1f} | {r['calls']} |" for r in results["profile_fp32"][:15]]
    if "flops_per_step" in results:
        lines += attained(results)
    return "\n".join(lines) + "\n"


def attained(results: dict) -> list[str]:
    """The markdown of the step's FLOPs against the machine's matrix-product throughput, and the default's
    profile by kind of operator."""
    flops = sum(results["flops_per_step"].values())
    peaks = results["peak_flops_per_s"]
    lines = [
        "",
        f"One step's forward and backward: {flops / 1e9:.1f} GFLOP (torch's FlopCounterMode; "
        + ", ".join(f"`{op}` {n / flops:.0%}" for op, n in results["flops_per_step"].items())
        + "). "
        "The machine's dense matrix product (2048 x 2048, median of 5, measured in this run): "
        + ", ".join(f"{dtype} {rate / 1e9:.0f} GFLOP/s" for dtype, rate in peaks.items())
        + ".",
        "",
        "| variant | GFLOP/s attained | of the fp32 product's | of the bf16 product's |",
        "|---|---|---|---|",
    ]
    for name, rate in results["images_per_s"].items():
        achieved = flops * rate / results["batch_size"]
        shares = [f"{achieved / peaks[d]:.0%}" if d in peaks else "n/a" for d in ("fp32", "bf16")]
        lines.append(f"| {name} | {achieved / 1e9:.1f} | {shares[0]} | {shares[1]} |")
    lines += [
        "",
        f"The default ({results['default_variant']}) step's self CPU time by kind of operator (torch.profiler, "
        "10 steps):",
        "",
        "| kind | % |",
        "|---|---|",
    ]
    lines += [f"| {kind} | {share:.1f} |" for kind, share in by_kind(results["profile_default"]).items()]
    return lines


if __name__ == "__main__":
    main()
