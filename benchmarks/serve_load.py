"""`aediff serve` under load: concurrent Generate requests against one server (issue 12's benchmark).

Starts `aediff serve RUN` in a subprocess on a free port of 127.0.0.1, sends one warm-up request, measures
one request alone, then ``--requests`` Generate requests at once (each ``--images`` images, ``--sampler``
with ``--steps`` steps) through gradio_client, and reports for the concurrent ones: how many succeeded, the
median and 95th-percentile latency (submit to the last output), and the time to the first trajectory
frame (submit to the first streamed output: what a user waits before the page starts moving). The server
computes ``aediff.app.limits.CONCURRENCY`` requests at once; the others wait in Gradio's queue.

    python benchmarks/serve_load.py --run runs/digits-diffusion          # the measurement in docs/app.md
    python benchmarks/serve_load.py --train-steps 30 --requests 3 --steps 3 --images 4 --out /tmp/serve_load

Without --run, a small class-conditioned diffusion model is first trained on `digits` for --train-steps
steps in a temporary folder. Writes OUT.json and OUT.md (default benchmarks/results/serve_load).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from results_files import machine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_small_diffusion(folder: Path, steps: int) -> Path:
    from aediff.cli import _model_overrides
    from aediff.training.train import train

    run = folder / "digits-diffusion"
    overrides = _model_overrides("diffusion", {"condition": "class"}, ["channels=16,32", "attention_resolutions=4"])
    train(
        "diffusion",
        run,
        "digits",
        model=overrides,
        training={"max_steps": steps, "batch_size": 64, "tensorboard": False},
        progress=False,
    )
    return run


def start_server(run: Path, port: int, log: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "aediff.cli", "serve", str(run), "--port", str(port)]
    server = subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited ({server.returncode}); its log: {log}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)
            return server
        except OSError:
            time.sleep(0.5)
    server.terminate()
    raise SystemExit(f"the server did not answer within 180 s; its log: {log}")


def one_request(client, args: argparse.Namespace, seed: int) -> dict:
    """Submit one Generate request and time it: first streamed output, last output."""
    start = time.perf_counter()
    first = None
    try:
        job = client.submit(
            args.run_name, str(args.class_index), "", "", "", args.sampler, args.steps, "", seed, args.images,
            api_name="/generate",
        )  # fmt: skip
        for _ in job:
            if first is None:
                first = time.perf_counter() - start
        grid, _, _ = job.result()
        ok = grid is not None
        error = None
    except Exception as exc:  # a failed request is counted, not fatal
        ok, error = False, f"{type(exc).__name__}: {exc}"
    return {"ok": ok, "latency_s": time.perf_counter() - start, "first_frame_s": first, "error": error}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    low, high = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (k - low)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="a digits diffusion run folder (default: train one)")
    parser.add_argument("--train-steps", type=int, default=2000, help="without --run: training steps")
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--sampler", default="dpm++")
    parser.add_argument("--class-index", type=int, default=7)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/serve_load"))
    args = parser.parse_args()
    from gradio_client import Client

    from aediff.app.limits import CONCURRENCY, QUEUE_SIZE

    work = Path(tempfile.mkdtemp(prefix="serve_load-"))
    run = args.run if args.run is not None else train_small_diffusion(work, args.train_steps)
    args.run_name = run.name
    port = free_port()
    server = start_server(run, port, work / "server.log")
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        one_request(client, args, seed=0)  # warm-up: first-call costs are not the page's
        alone = one_request(client, args, seed=1)
        results: list[dict] = [{}] * args.requests

        def worker(k: int) -> None:
            results[k] = one_request(Client(f"http://127.0.0.1:{port}/", verbose=False), args, seed=100 + k)

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(args.requests)]
        wall = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall = time.perf_counter() - wall
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
    done = [r for r in results if r["ok"]]
    latencies = [r["latency_s"] for r in done]
    firsts = [r["first_frame_s"] for r in done if r["first_frame_s"] is not None]
    summary = {
        "command": shlex.join(["python", *sys.argv]),
        "run": str(run),
        "requests": args.requests,
        "succeeded": len(done),
        "errors": [r["error"] for r in results if not r["ok"]],
        "sampler": args.sampler,
        "steps": args.steps,
        "images_per_request": args.images,
        "server_concurrency": CONCURRENCY,
        "queue_size": QUEUE_SIZE,
        "wall_s": wall,
        "latency_median_s": statistics.median(latencies) if latencies else None,
        "latency_p95_s": percentile(latencies, 0.95) if latencies else None,
        "first_frame_median_s": statistics.median(firsts) if firsts else None,
        "first_frame_p95_s": percentile(firsts, 0.95) if firsts else None,
        "alone": alone,
        "per_request": results,
        "machine": machine(cores=os.cpu_count()),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(summary, indent=2))

    def seconds(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f} s"

    lines = [
        "# `aediff serve` under load",
        "",
        f"{args.requests} concurrent Generate requests ({args.images} images, {args.sampler}, {args.steps} steps, "
        f"class {args.class_index}) against one server on {summary['machine']['cpu']} "
        f"({summary['machine']['cores']} cores); the server computes {CONCURRENCY} at once, the rest queue.",
        "",
        "| | value |",
        "|---|---|",
        f"| succeeded | {len(done)} / {args.requests} |",
        f"| latency, median | {seconds(summary['latency_median_s'])} |",
        f"| latency, 95th percentile | {seconds(summary['latency_p95_s'])} |",
        f"| time to first trajectory frame, median | {seconds(summary['first_frame_median_s'])} |",
        f"| time to first trajectory frame, 95th percentile | {seconds(summary['first_frame_p95_s'])} |",
        f"| one request alone: latency / first frame | {seconds(alone['latency_s'])} / "
        f"{seconds(alone['first_frame_s'])} |",
        f"| all {args.requests} requests, wall clock | {seconds(wall)} |",
        "",
        f"Command: `{summary['command']}`",
    ]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
