"""Speed: how fast a model samples (and at how many network evaluations), and how fast its run trained."""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from aediff import runs
from aediff.errors import RunError
from aediff.evaluation.protocols import model_device, sample_images


def _sampling_network(model: nn.Module) -> nn.Module:
    """The module whose calls are the network evaluations of sampling: a diffusion model's denoiser, an
    autoencoder's decoder."""
    for name in ("denoiser", "decoder"):
        module = getattr(model, name, None)
        if isinstance(module, nn.Module):
            return module
    raise RunError(f"{type(model).__name__} has neither a denoiser nor a decoder to sample with")


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def sampling_speed(model: nn.Module, n: int = 64, seed: int = 0, repeats: int = 3, **options: Any) -> dict[str, Any]:
    """Time ``sample_images(model, n, seed, **options)`` (options: sampler, steps, guidance, class_labels...).

    One untimed warm-up call (it also counts the network evaluations), then ``repeats`` timed calls.
    Returns images_per_second (median over the repeats), seconds_per_image, nfe (network evaluations per
    image: the rows the denoiser, or an autoencoder's decoder, processed, over n; classifier-free
    guidance's doubled batch counts twice), num_images, repeats, device and the scalar options.
    """
    device = model_device(model)
    rows = 0

    def count(module: nn.Module, args: tuple[Any, ...]) -> None:
        nonlocal rows
        rows += len(args[0])

    hook = _sampling_network(model).register_forward_pre_hook(count)
    try:
        sample_images(model, n, seed, **options)
    finally:
        hook.remove()
    seconds = []
    for _ in range(repeats):
        _synchronize(device)
        start = time.perf_counter()
        sample_images(model, n, seed, **options)
        _synchronize(device)
        seconds.append(time.perf_counter() - start)
    median = statistics.median(seconds)
    return {"images_per_second": n / median, "seconds_per_image": median / n, "nfe": rows / n, "num_images": n,
            "repeats": repeats, "device": str(device),
            **{k: v for k, v in options.items() if isinstance(v, (bool, int, float, str))}}


def training_speed(run_dir: str | Path) -> dict[str, Any]:
    """Training throughput of a run folder, from its training state (else the last line of log.jsonl).

    Returns images_per_second (images seen / seconds spent in training steps, so checkpoints and previews
    don't count), wall_seconds (the whole training, all sessions), train_seconds, steps, images_seen.
    """
    run_dir = Path(run_dir)
    state_path, log_path = run_dir / runs.STATE_FILE, run_dir / "log.jsonl"
    if state_path.exists():
        state = json.loads(state_path.read_text())
        steps, train_seconds = int(state["step"]), float(state["train_seconds"])
        wall_seconds, images_seen = float(state["elapsed_seconds"]), int(state["images_seen"])
    elif log_path.exists() and log_path.read_text().strip():
        last = json.loads(log_path.read_text().strip().splitlines()[-1])
        batch_size = runs.read_run_config(run_dir)["training"]["batch_size"]
        steps, train_seconds = int(last["step"]), float(last["train_seconds"])
        wall_seconds, images_seen = train_seconds, steps * int(batch_size)  # the log has no wall time
    else:
        raise RunError(f"{run_dir} has no training state ({runs.STATE_FILE}) and no log.jsonl: was it trained?")
    return {"images_per_second": images_seen / max(train_seconds, 1e-9), "wall_seconds": wall_seconds,
            "train_seconds": train_seconds, "steps": steps, "images_seen": images_seen}
