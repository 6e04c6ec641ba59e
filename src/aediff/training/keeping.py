"""What a run keeps besides its live checkpoint: the last N checkpoints (RUN/checkpoints/step-XXXXXXXX) and the
weights with the lowest held-out loss (RUN/best), and the held-out loss that chooses them.

Each kept folder is a run folder of its own (config.json and the weights; a kept checkpoint also its training
state, so ``aediff train --resume --out RUN/checkpoints/step-...`` continues from it). Folders are written in a
hidden staging folder and renamed into place: a crash leaves either the old folder or the new one, whole.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from aediff import runs

CHECKPOINTS_DIR = "checkpoints"
BEST_DIR = "best"
BEST_FILE = "best.json"  # in RUN/best: the step and held-out loss it was chosen at
HELD_OUT_SEED = 1_234_567  # the held-out loss's random draws (noise levels, noise) are the same at every evaluation


def checkpoint_folder(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / CHECKPOINTS_DIR / f"step-{step:08d}"


def staging_folder(target: Path) -> Path:
    """The hidden folder ``target`` is written into before it is renamed into place."""
    return target.with_name(f".{target.name}.partial")


def write_folder(target: Path, files: dict[str, bytes]) -> None:
    """Write ``files`` (relative path -> bytes) as the folder ``target``, replacing it whole (module docstring):
    a staging folder left by a crash is cleared by the next write."""
    staging = staging_folder(target)
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    runs.write_files_atomically(staging, files)  # every file written in full and fsync'd
    shutil.rmtree(target, ignore_errors=True)
    os.replace(staging, target)
    runs.fsync_dir(target.parent)


def keep_checkpoint(run_dir: Path, step: int, files: dict[str, bytes], keep: int) -> None:
    """Add the checkpoint of ``step`` (``files``, config.json included) to RUN/checkpoints and drop the oldest
    beyond ``keep``."""
    write_folder(checkpoint_folder(run_dir, step), files)
    kept = sorted(p for p in (run_dir / CHECKPOINTS_DIR).glob("step-*") if p.is_dir())
    for old in kept[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def best_loss(run_dir: Path) -> float | None:
    """The held-out loss of the run's RUN/best, or None when it has none yet (or an unreadable one)."""
    try:
        return float(json.loads((run_dir / BEST_DIR / BEST_FILE).read_text())["heldout_loss"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


@torch.no_grad()
def held_out_loss(model: Any, dataset: Any, images: int, batch_size: int, device: torch.device) -> float:
    """The model's training loss, in eval mode, on ``images`` examples spread evenly over ``dataset`` (the
    held-out split), with the same random draws every time it is called: comparable from step to step."""
    from aediff.evaluation import iterate_images

    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(HELD_OUT_SEED)
        for batch in iterate_images(dataset, batch_size, device, limit=images):
            loss, _ = model(batch)
            total += float(loss) * len(batch["images"])
            count += len(batch["images"])
    model.train(was_training)
    return total / count


class FIDProbe:
    """FID of ``samples`` samples from a model (its default sampler, fixed seed) against the held-out split, in
    the penultimate features of the classifier run ``judge`` (``aediff train classifier``)."""

    def __init__(self, judge: str, held_out: Any, samples: int):
        from aediff.evaluation.judges import judges_for

        self.judge = judges_for(runs.load(judge, device="cpu").model)[0]
        self.held_out, self.samples = held_out, samples
        self.reference = self.judge.reference_features(held_out)

    def __call__(self, model: Any) -> float:
        from aediff.evaluation import generation_score, sample_images

        images = sample_images(model, self.samples, seed=0)
        score = generation_score(images, self.judge.features, self.held_out, feature_extractor=self.judge.name,
                                 reference_name="held-out split", reference_features=self.reference)  # fmt: skip
        return float(score.fid)
