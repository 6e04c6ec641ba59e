"""The trainer under faults, through the CLI as a user types it: every failure is one line (exit 1, no
traceback) that says what to do, and the last good checkpoint is never lost or overwritten.

1 non-finite weights, 2 a full disk, 3 a folder that cannot be written, 4a a crash before the first checkpoint,
4b SIGTERM, 4c a second Ctrl-C, 4d options changed on --resume, 4e two writers and inconsistent checkpoints.
"""

import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import aediff
from aediff import runs
from aediff.cli import main as cli_main
from aediff.errors import RunError
from aediff.training.train import train

TINY = ["--data", "digits", "--widths", "8,16", "--batch-size", "16", "--no-progress"]
QUICK = ["--train-set", "tensorboard=false", "--train-set", "preview_every=0", "--train-set", "warmup_steps=1"]
CHECKPOINT = (runs.MODEL_FILE, runs.EMA_FILE, runs.OPTIMIZER_FILE, runs.STATE_FILE)
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "aediff.cli", "train", *args]


def aediff_train(*args: str) -> subprocess.CompletedProcess:
    """``aediff train ARGS`` in a subprocess, as typed."""
    return subprocess.run(command(*args), env=ENV, capture_output=True, text=True, timeout=300)


def start(*args: str) -> subprocess.Popen:
    return subprocess.Popen(command(*args), env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def one_line(stderr: str, start: str = "error: ") -> str:
    """The single line a failure prints (no traceback, no internal error)."""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(start), stderr
    assert "Traceback" not in stderr and "internal error" not in stderr
    return lines[0]


def checkpoint_bytes(run: Path) -> dict[str, bytes]:
    return {name: (run / name).read_bytes() for name in CHECKPOINT}


def new_run(run: Path, steps: int) -> None:
    """A finished tiny run of ``steps`` steps, as TINY and QUICK make it (in this process: it is only the set-up)."""
    quick = {"tensorboard": False, "preview_every": 0, "warmup_steps": 1, "batch_size": 16, "max_steps": steps}
    train("ae", run, "digits", model={"channels": (8, 16)}, training=quick, progress=False)


def wait_for(condition, process: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + 60
    while not condition():
        assert process.poll() is None, (what, process.communicate())
        assert time.monotonic() < deadline, f"no {what} in 60 s"
        time.sleep(0.01)


def saved_step(run: Path) -> int:
    try:
        return json.loads((run / runs.STATE_FILE).read_text())["step"]
    except FileNotFoundError:
        return 0


# --- 1 ----------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_weights_gone_non_finite_never_overwrite_the_last_good_checkpoint(tmp_path):
    run = tmp_path / "r"
    new_run(run, 2)
    good = checkpoint_bytes(run)
    # A huge LR makes the weights NaN in step 3, the last: its loss was still finite.
    blown = aediff_train("--resume", "--out", str(run), "--max-steps", "3", "--lr", "1e30", "--no-progress")
    line = one_line(blown.stderr)
    assert blown.returncode == 1
    assert "the weights became non-finite at step 3" in line and "lower --lr" in line
    assert f"the last good checkpoint (step 2) is in {run}" in line
    assert checkpoint_bytes(run) == good
    assert train(None, run, training={"lr": 1e-3}, resume=True, progress=False).step == 3  # the advice works


# --- 2 ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("failing", [2, 3], ids=["second-checkpoint", "final-checkpoint"])
def test_a_full_disk_is_one_line_and_keeps_the_earlier_checkpoint(tmp_path, monkeypatch, capfd, failing):
    """Checkpoints at steps 2 and 4 in the loop, then the final one (after the AE's latent fit): the
    ``failing``-th of them runs out of space half-way through its model file."""
    run, seen, before = tmp_path / "r", [], {}
    real = runs.journal._write_synced

    def disk_fills_up(path, data):
        if path.name == runs.MODEL_FILE + ".tmp":
            seen.append(path)
            if len(seen) == failing:
                before.update(checkpoint_bytes(run))
                real(path, data[: len(data) // 2])
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        real(path, data)

    monkeypatch.setattr(runs.journal, "_write_synced", disk_fills_up)
    args = ["train", "ae", "--out", str(run), "--max-steps", "4", *TINY, *QUICK, "--train-set", "checkpoint_every=2"]
    monkeypatch.setattr(sys, "argv", ["aediff", *args])
    with pytest.raises(SystemExit) as exit_:
        cli_main()
    line = one_line(capfd.readouterr().err)
    assert exit_.value.code == 1
    kept = json.loads(before[runs.STATE_FILE])["step"]
    assert line.startswith("error: no space left on ") and f"writing {run}'s checkpoint at step 4 (needs " in line
    assert f"MB); free space and continue with --resume; the checkpoint of step {kept} is intact" in line
    assert checkpoint_bytes(run) == before and not list(run.glob("**/*.tmp"))
    assert aediff.load(run, device="cpu").summary.steps == kept


# --- 3 ----------------------------------------------------------------------------------------------------
def test_an_out_that_cannot_be_written_fails_before_training(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("not a folder")
    refused = aediff_train("ae", "--out", str(tmp_path / "file" / "run"), "--max-steps", "20", *TINY)
    assert refused.returncode == 1
    assert "cannot create the run folder" in one_line(refused.stderr) and "choose another --out" in refused.stderr

    # A run folder that became read-only (as root, permissions do not stop writes: the write is made to fail).
    run = tmp_path / "r"
    new_run(run, 2)
    real, steps = Path.write_bytes, []

    def read_only(path, data):
        if path.parent == run:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real(path, data)

    monkeypatch.setattr(Path, "write_bytes", read_only)
    with pytest.raises(RunError, match=re.escape(f"cannot write to the run folder {run} (Permission denied); make")):
        train(None, run, training={"max_steps": 20}, resume=True, callbacks=[lambda *a: steps.append(a)])
    assert not steps


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_run_folder_refuses_to_resume_before_training(tmp_path):
    run = tmp_path / "r"
    new_run(run, 2)
    run.chmod(0o555)
    try:
        refused = aediff_train("--resume", "--out", str(run), "--max-steps", "20", "--no-progress")
    finally:
        run.chmod(0o755)
    assert refused.returncode == 1 and "cannot write to" in one_line(refused.stderr) and saved_step(run) == 2


# --- 4a ---------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_crash_before_the_first_checkpoint_resumes_from_step_0(tmp_path):
    run = tmp_path / "r"
    process = start("ae", "--out", str(run), "--max-steps", "5000", *TINY, *QUICK, "--train-set", "log_every=1")
    wait_for(lambda: (run / runs.LOG_FILE).exists(), process, "training")  # the first checkpoint: step 1000
    process.kill()
    process.communicate()
    again = aediff_train("ae", "--out", str(run), "--max-steps", "3", *TINY)
    assert again.returncode == 1 and "already holds a run; pass --resume" in one_line(again.stderr)
    resumed = aediff_train("--resume", "--out", str(run), "--max-steps", "3", "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    assert f"{run} has no checkpoint yet: training it from step 0 with its config.json" in resumed.stdout
    assert saved_step(run) == 3 and aediff.load(run, device="cpu").summary.steps == 3
    assert [json.loads(line)["step"] for line in (run / runs.LOG_FILE).read_text().splitlines()] == [1, 2, 3]


# --- 4b ---------------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize(("stop", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_one_signal_finishes_the_step_saves_and_exits_128_plus_its_number(tmp_path, stop, code):
    """SIGTERM exits 143 and one Ctrl-C 130, as other Unix tools do (a Ctrl-C once exited 0: a script could not
    tell a stopped training from a finished one)."""
    run = tmp_path / "r"
    process = start("ae", "--out", str(run), "--max-steps", "5000", *TINY, *QUICK, "--train-set", "log_every=1")
    wait_for(lambda: (run / runs.LOG_FILE).exists(), process, "training")
    process.send_signal(stop)
    out, err = process.communicate(timeout=120)
    assert process.returncode == code
    line = one_line(err, f"stopped by {stop.name} at step ")
    step = int(line.split("step ")[1].split(";")[0])
    assert saved_step(run) == step >= 1 and "continue with --resume" in line


# --- 4c ---------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_second_ctrl_c_aborts_with_130_and_names_the_kept_checkpoint(tmp_path):
    run = tmp_path / "r"
    # A step of about half a second: the second Ctrl-C must land before the step and its save end, also when CI
    # runs another worker beside this one (with 32,64 widths, a 0.1 s step once ended first and exited 0).
    slow = ["--widths", "64,128", "--batch-size", "512", "--train-set", "checkpoint_every=2"]
    process = start("ae", "--out", str(run), "--data", "digits", "--max-steps", "5000", *slow, *QUICK, "--no-progress")
    wait_for(lambda: saved_step(run) >= 2, process, "checkpoint")
    process.send_signal(signal.SIGINT)  # in step 3, without a checkpoint of its own: the save at the end follows
    while not process.stdout.readline().startswith("Stopping after this step"):  # the first one was handled
        assert process.poll() is None, process.communicate()
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130
    line = one_line(err, "aborted by a second SIGINT at step ")
    assert f"the last good checkpoint (step {saved_step(run)}) is in {run}; continue with --resume" in line
    assert aediff.load(run, device="cpu").summary.steps == saved_step(run)


# --- 4d ---------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_resume_applies_what_may_change_and_refuses_what_may_not(tmp_path):
    run = tmp_path / "r"
    new_run(run, 2)
    good = checkpoint_bytes(run)
    refused = aediff_train("--resume", "--out", str(run), "--max-steps", "4", "--batch-size", "8", "--no-progress")
    assert refused.returncode == 1 and checkpoint_bytes(run) == good
    assert "cannot change batch_size (16 -> 8): it sets the data order" in one_line(refused.stderr)
    changes = ["--lr", "0.0005", "--max-steps", "4", "--train-set", "grad_clip=0.5", "--train-set", "log_every=1"]
    resumed = aediff_train("--resume", "--out", str(run), *changes, "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    [line] = [line for line in resumed.stdout.splitlines() if line.startswith("Resuming")]
    assert line == f"Resuming {run} with lr 0.001 -> 0.0005, grad_clip 1.0 -> 0.5, max_steps 2 -> 4, log_every 25 -> 1"
    training = json.loads((run / runs.CONFIG_FILE).read_text())["training"]  # kept for the next resume
    assert (training["lr"], training["grad_clip"], training["max_steps"]) == (0.0005, 0.5, 4)
    log = [json.loads(line) for line in (run / runs.LOG_FILE).read_text().splitlines()]
    assert [r["step"] for r in log] == [3, 4] and all(r["lr"] <= 0.0005 for r in log)


# --- 4e ---------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_one_writer_per_run_folder_and_inconsistent_checkpoints_are_refused(tmp_path):
    run = tmp_path / "r"
    process = start("ae", "--out", str(run), "--max-steps", "5000", *TINY, *QUICK, "--train-set", "log_every=1")
    try:
        wait_for(lambda: (run / runs.LOG_FILE).exists(), process, "training")
        process.send_signal(signal.SIGSTOP)  # alive, holding the lock, and leaving the CPU to the others
        for args in (["ae", "--out", str(run), "--max-steps", "3", *TINY], ["--resume", "--out", str(run)]):
            second = aediff_train(*args)
            assert second.returncode == 1
            assert f"{run} is being written by process {process.pid}" in one_line(second.stderr)
    finally:
        process.kill()
        process.communicate()
    mixed = tmp_path / "mixed"
    new_run(mixed, 2)
    new_run(tmp_path / "other", 3)
    shutil.copy(tmp_path / "other" / runs.EMA_FILE, mixed / runs.EMA_FILE)  # an EMA of another step
    refused = aediff_train("--resume", "--out", str(mixed), "--max-steps", "4", "--no-progress")
    assert refused.returncode == 1 and "mixes steps" in one_line(refused.stderr)
