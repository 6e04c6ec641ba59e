"""Streamed data: is memory flat in the dataset's size, and do the loader's workers keep up with training?

Writes a folder of small PNGs (mnist5k's 5,000 training digits, cycled, in class sub-folders; kept between
runs), then, each in a fresh process so that its peak memory is its own:
- indexes it as a streamed dataset (``folder:PATH`` with ``stream=True``) at two sizes, and reads batches of
  64 through the training batch stream (``aediff.data.loader``) with 0, 1 and 2 worker processes: images/s of
  loading alone, and the peak resident memory of the process and of its workers;
- measures what one training step of the default diffusion model consumes (images/s, fp32 and bf16) on
  batches from the same stream, to compare.

    python benchmarks/streaming.py                                   # 200,000 PNGs (~1 GB on disk, ~5 min)
    python benchmarks/streaming.py --images 20000 --small 2000       # a smoke run

Writes benchmarks/results/streaming.json and .md.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

from results_files import machine, write_results

BATCH = 64


def write_folder(root: Path, count: int) -> float:
    """count PNGs under root/class<d>/ (skipped when already there); returns the seconds spent."""
    import numpy as np
    from PIL import Image

    from aediff.data import load_dataset

    marker = root / f".complete-{count}"
    if marker.exists():
        return 0.0
    begun = time.perf_counter()
    source = load_dataset("mnist5k", "train")
    images, labels = source.images[:, 0].numpy(), source.labels.numpy()
    for d in range(10):
        (root / f"class{d}").mkdir(parents=True, exist_ok=True)
    for i in range(count):
        j = i % len(images)
        Image.fromarray(np.ascontiguousarray(images[j])).save(root / f"class{labels[j]}" / f"{i:07d}.png")
    marker.touch()
    return time.perf_counter() - begun


def probe(root: str, workers: int, batches: int) -> dict:
    """In this process: index the folder, stream ``batches`` batches."""
    import resource

    from aediff.data import load_dataset
    from aediff.data.loader import BatchPlan, StepBatches, step_batches

    begun = time.perf_counter()
    ds = load_dataset(f"folder:{root}", "all", stream=True)
    index_seconds = time.perf_counter() - begun
    stream = step_batches(StepBatches(ds, BatchPlan(len(ds), BATCH, seed=0)), 0, workers)
    next(stream)  # workers started, first batch decoded
    begun = time.perf_counter()
    for _ in range(batches):
        next(stream)
    seconds = time.perf_counter() - begun
    stream.close()
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB on Linux
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    rate = batches * BATCH / seconds
    return {"images": len(ds), "workers": workers, "index_seconds": index_seconds, "images_per_s": rate,
            "peak_rss_mib": own, "peak_worker_rss_mib": children}  # fmt: skip


def training_demand(root: str, steps: int) -> dict:
    """Images/s one default diffusion training step consumes, fp32 and bf16, on batches of the stream."""
    import torch

    from aediff.config import update_config
    from aediff.data import load_dataset
    from aediff.device import cpu_has_bf16
    from aediff.models.registry import build_model, model_class
    from aediff.training.train import fill_data_shape

    ds = load_dataset(f"folder:{root}", "all", stream=True)
    batches = [ds.batch(torch.arange(i * BATCH, (i + 1) * BATCH)) for i in range(4)]
    out = {}
    for precision in ("fp32", "bf16") if cpu_has_bf16() else ("fp32",):
        torch.manual_seed(0)
        cls = model_class("diffusion")
        model = build_model("diffusion", update_config(fill_data_shape(cls.config_class(), ds), {}))
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        rates = []
        for i in range(steps + 3):
            begun = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                loss, _ = model(batches[i % 4])
            loss.backward()
            opt.step()
            opt.zero_grad()
            if i >= 3:
                rates.append(BATCH / (time.perf_counter() - begun))
        out[precision] = sorted(rates)[len(rates) // 2]
    return out


def run_child(*args: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=200_000)
    parser.add_argument("--small", type=int, default=20_000, help="the smaller size, for the memory comparison")
    parser.add_argument("--batches", type=int, default=150, help="batches of 64 read per measurement")
    parser.add_argument("--repeats", type=int, default=3, help="measurements per row (median rate, largest memory)")
    parser.add_argument("--folder", type=Path, default=Path("runs/bench-stream"), help="where the PNG folders go")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/streaming"))
    parser.add_argument("--child", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        kind, *rest = args.child
        if kind == "probe":
            result = probe(rest[0], int(rest[1]), int(rest[2]))
        else:
            result = training_demand(rest[0], int(rest[1]))
        print(json.dumps(result))
        return
    started = time.time()
    results = {"command": "python " + shlex.join(sys.argv), "machine": machine(), "batch_size": BATCH}
    folders = {size: args.folder / f"pngs-{size}" for size in (args.small, args.images)}
    results["write_seconds"] = {size: write_folder(folder, size) for size, folder in folders.items()}
    results["loading"] = []
    for folder in folders.values():
        for workers in (0, 1, 2):  # each --repeats times, fresh processes: loading rates vary from run to run
            tries = [run_child("probe", str(folder), str(workers), str(args.batches)) for _ in range(args.repeats)]
            row = {**tries[0], "images_per_s": statistics.median(t["images_per_s"] for t in tries),
                   "images_per_s_all": [t["images_per_s"] for t in tries],
                   "peak_rss_mib": max(t["peak_rss_mib"] for t in tries),
                   "peak_worker_rss_mib": max(t["peak_worker_rss_mib"] for t in tries)}  # fmt: skip
            print(json.dumps(row), flush=True)
            results["loading"].append(row)
    results["training_images_per_s"] = run_child("train", str(folders[args.small]), "20")
    print(results["training_images_per_s"], flush=True)
    write_results(args.out, results, started, markdown)


def markdown(r: dict) -> str:
    m, train = r["machine"], r["training_images_per_s"]
    lines = [
        "# Streaming a folder of PNGs: memory and loader throughput",
        "",
        f"`{r['command']}` on {m['cpu']} ({m['threads']} threads), torch {m['torch']}. Each row is a fresh process "
        f"that indexes the folder (`stream=True`) and reads batches of {r['batch_size']} through the training batch "
        "stream; median loading rate of the repeats, largest peak resident memory of the process and of its "
        "loader workers.",
        "",
        "| images | workers | index s | loading img/s | peak RSS MiB | worker peak RSS MiB |",
        "|---|---|---|---|---|---|",
    ]
    for row in r["loading"]:
        lines.append(
            f"| {row['images']:,} | {row['workers']} | {row['index_seconds']:.1f} | {row['images_per_s']:.0f} | "
            f"{row['peak_rss_mib']:.0f} | {row['peak_worker_rss_mib']:.0f} |"
        )
    lines += [
        "",
        "A default diffusion training step consumes: "
        + ", ".join(f"{k} {v:.0f} img/s" for k, v in train.items())
        + ".",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
