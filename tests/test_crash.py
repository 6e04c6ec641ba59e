"""kill -9 at random moments never loses a run: what is on disk always loads, ``--resume`` always continues,
and the run that was killed and resumed ends with the same weights, bit for bit, as one that never was.

Two chains of processes, at once, of 5 kills each: a tiny ``aediff train`` (40 steps of batch 16, a checkpoint
and a log line at every step, so that many kills land inside a checkpoint write) is killed with SIGKILL at a
random moment; its folder is checked (it loads, its checkpoint is consistent); ``aediff train --resume``
continues it and is itself the next one killed, once it has committed a checkpoint past the one it resumed
from (so every kill's folder is proven resumable); after the 5th kill the last ``--resume`` runs to the end.
The kill moments are drawn (seeded) over the whole run: a checkpoint after which to kill, then either a delay
of up to one step's wall time (train + checkpoint) or, every other kill, up to 3 ms after the next checkpoint
write began (seen from outside: its first ``*.tmp`` file appears; no hook inside the writer).

Measured on 2 busy CPU cores (load 4-6): 10 kills, of which 5-6 landed during a checkpoint write
(``pending.json`` or ``*.tmp`` files present right after the kill), 0-1 before the first checkpoint; all
resumed, and both chains' final model, EMA and optimizer tensors equal the uninterrupted run's
(``torch.equal``, on CPU). About 30 s.
"""

import json
import os
import random
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import aediff
from aediff import runs
from aediff.training.train import train

pytestmark = pytest.mark.slow  # end to end: `make test-full` and CI run it, `make test` leaves it out

STEPS, KILLS, STEP_WALL, WRITE_WALL = 40, 10, 0.05, 0.003
ARGS = [
    *("--data", "digits", "--widths", "8,16", "--batch-size", "16", "--max-steps", str(STEPS), "--no-progress"),
    *("--train-set", "checkpoint_every=1", "--train-set", "log_every=1", "--train-set", "warmup_steps=5"),
    *("--train-set", "tensorboard=false", "--train-set", "preview_every=0"),
]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def aediff_train(out: Path, resume: bool) -> subprocess.Popen:
    """``aediff train ae ... --out OUT`` (with --resume: ``aediff train --resume --out OUT``) as a user types it."""
    tail = ["--resume", "--no-progress"] if resume else ["ae", *ARGS]
    command = [sys.executable, "-m", "aediff.cli", "train", "--out", str(out), *tail]
    return subprocess.Popen(command, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def saved_step(run: Path) -> int:
    """The step of the run's committed checkpoint (0 without one); state.json is replaced atomically."""
    try:
        return json.loads((run / runs.STATE_FILE).read_text())["step"]
    except FileNotFoundError:
        return 0


def wait_until_saved(process: subprocess.Popen, run: Path, step: int) -> None:
    """Until the process has committed the checkpoint of ``step`` (for step 0: has written config.json, just
    before training); fails if it ended first."""
    deadline = time.monotonic() + 60
    while not ((run / runs.CONFIG_FILE).exists() if step == 0 else saved_step(run) >= step):
        assert process.poll() is None, f"training ended before the kill: {process.communicate()}"
        assert time.monotonic() < deadline, "no progress in 60 s"
        time.sleep(0.002)


def wait_for_a_write(process: subprocess.Popen, run: Path) -> None:
    """Until the process starts writing its next checkpoint (the first file of its journal appears)."""
    first = run / (runs.MODEL_FILE + ".tmp")
    deadline = time.monotonic() + 60
    while not first.exists():
        assert process.poll() is None, f"training ended before the kill: {process.communicate()}"
        assert time.monotonic() < deadline, "no checkpoint write in 60 s"
        time.sleep(0.0005)


def mid_write(run: Path) -> bool:
    """Whether a checkpoint write was cut short (its journal's files are there: ``runs.recover`` clears them)."""
    return (run / runs.PENDING_FILE).exists() or any(run.glob("**/*.tmp"))


def check_killed_run(run: Path) -> bool:
    """The folder a kill left: without a checkpoint (False) only its config; else (True) a consistent
    checkpoint that loads."""
    if runs.check_checkpoint_consistent(run) is None:  # killed before the first checkpoint: resumes from step 0
        assert not (run / runs.MODEL_FILE).exists() and not (run / runs.STATE_FILE).exists()
        return False
    for weights in ("ema", "model"):
        assert aediff.load(run, weights=weights, device="cpu").summary.steps >= 1
    return True


def train_uninterrupted(out: Path) -> None:
    """The run ARGS make, in this process (one interpreter start less), on one thread as the CLI's (the
    order of a sum, hence its rounding, may depend on the thread count)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        quick = {"tensorboard": False, "preview_every": 0, "warmup_steps": 5, "checkpoint_every": 1, "log_every": 1}
        training = {**quick, "batch_size": 16, "max_steps": STEPS}
        train("ae", out, "digits", model={"channels": (8, 16)}, training=training, progress=False)
    finally:
        torch.set_num_threads(threads)


def kill_chain(run: Path, seed: int, kills: int) -> tuple[int, int]:
    """Train into ``run``, killing ``kills`` times (see the module's docstring), then resume to the end.
    Returns (kills during a checkpoint write, kills before the first checkpoint)."""
    rng = random.Random(seed)
    targets = sorted(rng.randrange(0, STEPS - 3) for _ in range(kills))
    during_writes = before_checkpoint = 0
    for kill, target in enumerate(targets):
        resumed_from = (runs.check_checkpoint_consistent(run) or 0) if kill else 0  # reads a pending commit too
        process = aediff_train(run, resume=kill > 0)
        wait_until_saved(process, run, max(target, resumed_from + 1) if kill else target)
        if kill % 2:  # every other kill aims at a checkpoint write: the next one, a moment after it began
            wait_for_a_write(process, run)
            time.sleep(rng.uniform(0, WRITE_WALL))
        else:
            time.sleep(rng.uniform(0, STEP_WALL))
        process.kill()  # SIGKILL: no handler runs, nothing is flushed
        process.communicate()
        during_writes += mid_write(run)
        before_checkpoint += not check_killed_run(run)
    final = aediff_train(run, resume=True)
    assert final.wait(120) == 0, final.communicate()
    return during_writes, before_checkpoint


def test_kill_9_at_random_moments_loses_nothing_and_resume_is_bit_exact(tmp_path):
    folders = [tmp_path / "a", tmp_path / "b"]
    with ThreadPoolExecutor(len(folders)) as pool:  # two chains at once: a chain uses one core at a time
        counts = list(pool.map(kill_chain, folders, [20261130, 20261201], [KILLS // 2, KILLS - KILLS // 2]))
    during_writes, before_checkpoint = (sum(c) for c in zip(*counts, strict=True))
    print(f"{KILLS} kills: {during_writes} during a checkpoint write, {before_checkpoint} before the first one")
    train_uninterrupted(tmp_path / "reference")
    for run in folders:
        for name in (runs.MODEL_FILE, runs.EMA_FILE, runs.OPTIMIZER_FILE):
            expected, got = load_file(tmp_path / "reference" / name), load_file(run / name)
            assert expected.keys() == got.keys()
            assert all(torch.equal(expected[key], got[key]) for key in expected), (run.name, name)
