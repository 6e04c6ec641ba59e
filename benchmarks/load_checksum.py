"""What verifying a weights file's checksum costs when a run loads, on the largest configuration.

Trains the CIFAR-10 diffusion configuration (32x32x3, widths 128,256,256,256, attention at 16: 23.16M
parameters) for one step on random images, then loads the run with `aediff.load` again and again, alternating
loads that verify the checksum with loads that skip it (the digest key hidden from the reader), and reports the
median of each and their difference as a share of the load.

    python benchmarks/load_checksum.py            # ~2 min; writes benchmarks/results/load_checksum.{json,md}
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import aediff
from aediff.runs import validation
from aediff.runs.format import content_digest
from results_files import machine, write_results

CIFAR = {"channels": (128, 256, 256, 256), "attention_resolutions": (16,)}


def cifar_run(folder: Path) -> Path:
    """A one-step run of the CIFAR-10 configuration (its weights are what is measured, not its quality)."""
    images = np.random.default_rng(0).integers(0, 256, (16, 32, 32, 3), dtype=np.uint8)
    np.savez(folder / "images.npz", images=images)
    run = folder / "run"
    aediff.train("diffusion", run, f"npz:{folder / 'images.npz'}", model=CIFAR,
                 training={"max_steps": 1, "batch_size": 4, "tensorboard": False}, progress=False)  # fmt: skip
    return run


def timed_load(run: Path, verify: bool) -> float:
    hidden, validation.DIGEST_KEY = validation.DIGEST_KEY, validation.DIGEST_KEY if verify else "(not read)"
    try:
        start = time.perf_counter()
        aediff.load(run, device="cpu")
        return time.perf_counter() - start
    finally:
        validation.DIGEST_KEY = hidden


def markdown(r: dict) -> str:
    return (
        "# Verifying the checksum of a weights file on load\n\n"
        f"`{r['command']}` on {r['machine']['cpu']} ({r['machine']['threads']} threads), torch "
        f"{r['machine']['torch']}. The CIFAR-10 configuration, {r['parameters'] / 1e6:.2f}M parameters, "
        f"ema.safetensors {r['file_mb']:.1f} MB; median of {r['rounds']} alternating loads each.\n\n"
        "| load | seconds |\n|---|---|\n"
        f"| without verifying | {r['unverified_s']:.3f} |\n"
        f"| verifying the XXH3-128 checksum | {r['verified_s']:.3f} |\n\n"
        f"Verification costs {r['verified_s'] - r['unverified_s']:.3f} s, {r['share']:.1%} of the load, by the "
        f"difference of the medians; the checksum alone takes {r['digest_s'] * 1000:.1f} ms on the same bytes "
        f"(median), {r['digest_share']:.1%} of a verified load.\n"
    )


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "load_checksum")
    args = parser.parse_args(argv)
    started = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        run = cifar_run(Path(tmp))
        timed_load(run, True)  # warm the page cache and the imports
        times = {True: [], False: []}
        for _ in range(args.rounds):
            for verify in (True, False):
                times[verify].append(timed_load(run, verify))
        parameters = sum(p.numel() for p in aediff.load(run, device="cpu").model.parameters())
        file_mb = (run / "ema.safetensors").stat().st_size / 1e6
        data = (run / "ema.safetensors").read_bytes()
        digest = []
        for _ in range(args.rounds):  # the checksum alone, on the same bytes: the part of a load it costs
            start = time.perf_counter()
            content_digest(data)
            digest.append(time.perf_counter() - start)
    verified, unverified = statistics.median(times[True]), statistics.median(times[False])
    results = {
        "command": "python benchmarks/load_checksum.py " + shlex.join(argv),
        "machine": machine(),
        "parameters": parameters,
        "file_mb": file_mb,
        "rounds": args.rounds,
        "times": {"verified": times[True], "unverified": times[False]},
        "verified_s": verified,
        "unverified_s": unverified,
        "share": (verified - unverified) / verified,
        "digest_s": statistics.median(digest),
        "digest_share": statistics.median(digest) / verified,
    }
    write_results(args.out, results, started, markdown)


if __name__ == "__main__":
    main(sys.argv[1:])
