"""Run folders that are damaged, foreign, read-only or being written: `aediff.load` and the CLI refuse a damaged
one with one line naming the file, what is wrong and what to do; loading never writes to a folder, so a
read-only one loads and a training that is being read is never disturbed; one writer at a time."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import aediff
from aediff import runs
from aediff.errors import RunError

TINY = ["channels=8,16"]  # as tests/conftest.py: the model assignments every tiny run shares
AEDIFF = str(Path(sys.executable).with_name("aediff"))
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
FIX = r"retrain|restore|upgrade aediff|fix it"  # every refusal says what to do


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_runs) -> Path:
    """A finished tiny AE run (3 steps: model, EMA, optimizer, state.json, log), trained once per module."""
    folder = tmp_path_factory.mktemp("run-folders")
    tiny_runs(folder, [("ae", "ae", {"bottleneck": 8}, TINY)], steps=3)
    return folder / "ae"


def _copy(tiny_run: Path, folder: Path) -> Path:
    run = folder / "run"
    shutil.copytree(tiny_run, run)
    return run


def _contents(run: Path) -> dict[str, bytes | None]:
    """Every path under ``run`` -> its bytes (None for a folder): to tell that nothing was written."""
    return {str(p.relative_to(run)): None if p.is_dir() else p.read_bytes() for p in sorted(run.rglob("*"))}


# --- the damage table ---------------------------------------------------------------------------------------
def _edit_json(name: str, edit: Callable[[Any], Any]) -> Callable[[Path], None]:
    def damage(run: Path) -> None:
        path = run / name
        path.write_text(json.dumps(edit(json.loads(path.read_text()))))

    return damage


def _set(key: str, value: Any, section: str | None = None) -> Callable[[dict], dict]:
    def edit(record: dict) -> dict:
        (record[section] if section else record)[key] = value
        return record

    return edit


def _drop(key: str) -> Callable[[dict], dict]:
    return lambda record: {k: v for k, v in record.items() if k != key}


def _edit_tensors(name: str, edit: Callable[[dict, dict], None]) -> Callable[[Path], None]:
    """Rewrite the safetensors file ``name`` after ``edit(tensors, metadata)``."""

    def damage(run: Path) -> None:
        path = run / name
        with safe_open(str(path), "pt") as f:
            metadata = dict(f.metadata() or {})
        metadata.pop(runs.DIGEST_KEY, None)  # rewritten by another tool: the other checks must catch the edit
        tensors = load_file(path)
        edit(tensors, metadata)
        save_file(tensors, path, metadata)

    return damage


def _flip_bit(name: str, offset_in_data: int, bit: int) -> Callable[[Path], None]:
    """One bit of the file's tensor bytes flipped in place (a bit error on disk or in a copy), the header and its
    checksum untouched. Float32 is little-endian: byte 0 bit 0 is the mantissa's lowest, byte 3 bit 6 the
    exponent's highest."""

    def damage(run: Path) -> None:
        path = run / name
        data = bytearray(path.read_bytes())
        data[8 + int.from_bytes(data[:8], "little") + offset_in_data] ^= 1 << bit
        path.write_bytes(bytes(data))

    return damage


def _as_int32(tensors: dict, metadata: dict) -> None:
    """One float weight's bits stored as int32 (same shape and bytes): safetensors loads it without a word."""
    name = _first_weight(tensors)
    tensors[name] = tensors[name].view(torch.int32)


def _first_weight(tensors: dict) -> str:
    return next(k for k, v in tensors.items() if v.ndim == 4)


def _fill(value: float) -> Callable[[dict, dict], None]:
    def edit(tensors: dict, metadata: dict) -> None:
        name = _first_weight(tensors)
        tensors[name] = torch.full_like(tensors[name], value)

    return edit


def _flip_exponent_bit(tensors: dict, metadata: dict) -> None:
    """The top exponent bit of one weight flipped (a bit error on disk): |w| < 2 becomes |w| * 2**128."""
    name = _first_weight(tensors)
    bits = tensors[name].clone().view(torch.int32).flatten()
    bits[tensors[name].abs().flatten().argmax()] ^= 1 << 30
    tensors[name] = bits.view(torch.float32).reshape(tensors[name].shape)


def _reshape(tensors: dict, metadata: dict) -> None:
    name = _first_weight(tensors)
    tensors[name] = torch.zeros(3, 3, 3, 3)


def _rename_a_tensor(tensors: dict, metadata: dict) -> None:
    name = _first_weight(tensors)
    tensors["foreign." + name] = tensors.pop(name)


def _step_meta(step: str) -> Callable[[dict, dict], None]:
    return lambda tensors, metadata: metadata.update(step=step)


def _truncate(name: str, keep: float) -> Callable[[Path], None]:
    def damage(run: Path) -> None:
        data = (run / name).read_bytes()
        (run / name).write_bytes(data[: int(len(data) * keep)])

    return damage


def _write(name: str, data: bytes) -> Callable[[Path], None]:
    return lambda run: (run / name).write_bytes(data)


def _replace_by_folder(name: str) -> Callable[[Path], None]:
    def damage(run: Path) -> None:
        (run / name).unlink()
        (run / name).mkdir()
        (run / name / "x").write_text("?")

    return damage


def _mixed_checkpoint(run: Path) -> None:
    """What the fault campaign found after a reader deleted a training's *.tmp: model, EMA and optimizer of
    three different checkpoints."""
    for name, step in (("model.safetensors", "25"), ("ema.safetensors", "30"), (runs.OPTIMIZER_FILE, "31")):
        _edit_tensors(name, _step_meta(step))(run)
    _edit_json(runs.STATE_FILE, _set("step", 31))(run)


@dataclass
class Damage:
    name: str
    damage: Callable[[Path], None]
    match: str  # in the message, beside the file it names
    file: str  # the file the message names
    cli: bool = False  # also through `aediff sample` in a subprocess


DAMAGES = [
    Damage("config-is-a-list", _write("config.json", b"[1, 2]"), "should hold a JSON object", "config.json", True),
    Damage("config-not-json", _write("config.json", b'{"family": "ae",'), "not valid JSON", "config.json"),
    Damage("model-entry-null", _edit_json("config.json", _set("model", None)), "'model' should", "config.json", True),
    Damage("family-unknown", _edit_json("config.json", _set("family", "gan")), "unknown model family", "config.json"),
    Damage("family-not-text", _edit_json("config.json", _set("family", 3)), "'family' should be", "config.json", True),
    Damage("family-missing", _edit_json("config.json", _drop("family")), "lacks the 'family'", "config.json"),
    Damage("version-as-text", _edit_json("config.json", _set("format_version", "2")), "format_version", "config.json"),
    Damage("image-size-0", _edit_json("config.json", _set("image_size", 0, "model")), "model config", "config.json"),
    Damage("bottleneck-true", _edit_json("config.json", _set("bottleneck_dim", True, "model")), "model", "config.json"),
    Damage("training-a-list", _edit_json("config.json", _set("training", [1])), "training config", "config.json"),
    Damage("wrong-shape", _edit_tensors("ema.safetensors", _reshape), "has shape", "ema.safetensors", True),
    Damage("foreign-tensor", _edit_tensors("ema.safetensors", _rename_a_tensor), "does not match", "ema.safetensors"),
    Damage("ema-a-folder", _replace_by_folder("ema.safetensors"), "is a folder", "ema.safetensors", True),
    Damage("ema-cut-short", _truncate("ema.safetensors", 0.6), "cut short", "ema.safetensors"),
    Damage("model-cut-short", _truncate("model.safetensors", 0.9), "cut short", "model.safetensors", True),
    Damage("model-garbage", _write("model.safetensors", bytes(range(256)) * 16), "not a valid", "model.safetensors"),
    Damage("ema-all-nan", _edit_tensors("ema.safetensors", _fill(float("nan"))), "NaN", "ema.safetensors", True),
    Damage("ema-inf", _edit_tensors("ema.safetensors", _fill(float("inf"))), "infinite", "ema.safetensors"),
    Damage("ema-flipped-bit", _edit_tensors("ema.safetensors", _flip_exponent_bit), "beyond", "ema.safetensors"),
    # once loaded with exit 0: a mantissa bit changes a weight a little, and safetensors checks only the header
    Damage("ema-mantissa-bit", _flip_bit("ema.safetensors", 0, 0), "differ from the checksum", "ema.safetensors", True),
    Damage("ema-exponent-bit", _flip_bit("ema.safetensors", 7, 6), "differ from the checksum", "ema.safetensors"),
    Damage("ema-int32", _edit_tensors("ema.safetensors", _as_int32), "stored as int32 where", "ema.safetensors", True),
    Damage("optimizer-cut-short", _truncate(runs.OPTIMIZER_FILE, 0.5), "cut short", runs.OPTIMIZER_FILE),
    Damage("state-not-json", _write(runs.STATE_FILE, b'{"step": 3,'), "not valid JSON", runs.STATE_FILE, True),
    Damage("state-no-step", _edit_json(runs.STATE_FILE, _drop("step")), "lacks 'step'", runs.STATE_FILE),
    Damage("state-step-text", _edit_json(runs.STATE_FILE, _set("step", "3")), "whole number", runs.STATE_FILE, True),
    Damage("mixed-steps", _mixed_checkpoint, "mixes steps.*step 25.*step 30.*step 31", "model.safetensors", True),
    Damage("step-meta-garbage", _edit_tensors("model.safetensors", _step_meta("x")), "step metadata", "model.safetens"),
    Damage("pending-garbage", _write("pending.json", b"[oops"), "cannot be told", "pending.json"),
]
# Three through the CLI here: tests/test_bad_inputs.py runs every kind of damage through it as a user types it.
CLI = [d for d in DAMAGES if d.cli][:3]


def test_the_table_is_large_and_some_go_through_the_cli():
    assert len(DAMAGES) >= 20 and len(CLI) == 3
    assert len({d.name for d in DAMAGES}) == len(DAMAGES)


@pytest.mark.parametrize("case", DAMAGES, ids=lambda d: d.name)
def test_load_refuses_a_damaged_run_with_one_line_and_writes_nothing(case, tiny_run, tmp_path):
    run = _copy(tiny_run, tmp_path)
    case.damage(run)
    before = _contents(run)
    with pytest.raises(RunError) as caught:
        aediff.load(run, device="cpu")
    message = str(caught.value)
    assert "\n" not in message and case.file in message, message
    assert re.search(case.match, message) and re.search(FIX, message), message
    assert _contents(run) == before


@pytest.fixture(scope="module")
def cli_results(tiny_run, tmp_path_factory) -> dict[str, tuple[subprocess.CompletedProcess, Path, dict]]:
    """`aediff sample RUN --out ...` on a copy of the tiny run for every CLI case of the table, all started at once
    (each is mostly Python start-up): name -> (the finished process, the run folder, its contents before)."""
    started = {}
    for case in CLI:
        run = _copy(tiny_run, tmp_path_factory.mktemp(case.name))
        case.damage(run)
        command = [AEDIFF, "sample", str(run), "--out", str(run.parent / "samples.png")]
        process = subprocess.Popen(command, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        started[case.name] = (process, run, _contents(run))
    results = {}
    for name, (process, run, before) in started.items():
        stdout, stderr = process.communicate(timeout=120)
        results[name] = (subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr), run, before)
    return results


@pytest.mark.parametrize("case", CLI, ids=lambda d: d.name)
def test_the_cli_refuses_a_damaged_run_with_one_error_line(case, cli_results):
    done, run, before = cli_results[case.name]
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 1, done.stderr
    assert len(lines) == 1 and lines[0].startswith("error:") and case.file in lines[0], done.stderr
    assert "Traceback" not in done.stderr and "internal error" not in done.stderr
    assert _contents(run) == before and not (run.parent / "samples.png").exists()


# --- read-only folders: loading never writes --------------------------------------------------------------------
@pytest.fixture
def read_only(monkeypatch):
    """Make a folder read-only: chmod -R a-w where that binds (not as root); else every way this process could
    change a file fails as on a read-only folder (which is stricter: no file anywhere can be changed)."""
    changed: list[Path] = []

    def deny(*args, **kwargs):
        raise PermissionError(13, "Permission denied (simulated read-only folder)")

    def apply(run: Path) -> None:
        for path in [run, *run.rglob("*")]:
            path.chmod(path.stat().st_mode & ~0o222)
            changed.append(path)
        if os.access(run, os.W_OK):  # root: permissions do not bind
            for name in ("unlink", "remove", "replace", "rename", "rmdir", "mkdir", "truncate"):
                monkeypatch.setattr(os, name, deny)
            real_open = open

            def open_for_reading(file, mode="r", *args, **kwargs):
                if any(c in mode for c in "wax+"):
                    deny()
                return real_open(file, mode, *args, **kwargs)

            monkeypatch.setattr("builtins.open", open_for_reading)

    yield apply
    monkeypatch.undo()
    for path in changed:
        path.chmod(path.stat().st_mode | 0o200)


def test_a_read_only_run_with_a_stray_tmp_loads_and_keeps_it(tiny_run, tmp_path, read_only):
    run = _copy(tiny_run, tmp_path)
    (run / "model.safetensors.tmp").write_bytes(b"half a checkpoint of a training that crashed")
    (run / runs.STATE_FILE).with_name("state.json.tmp").write_bytes(b'{"st')
    expected = aediff.load(tiny_run, device="cpu").model.state_dict()
    before = _contents(run)
    read_only(run)
    loaded = aediff.load(run, device="cpu")
    assert loaded.summary.steps == 3 and (run / "model.safetensors.tmp").exists()
    assert all(torch.equal(expected[k], v) for k, v in loaded.model.state_dict().items())
    assert runs.check_checkpoint_consistent(run) == 3
    assert _contents(run) == before


def _crash_after_the_commit_point(run: Path, monkeypatch) -> dict[str, torch.Tensor]:
    """Commit a checkpoint of step 4 (EMA weights halved) and crash after moving its first file into place, as a
    training killed at that instant; returns the committed EMA weights."""
    ema = {k: v / 2 if v.is_floating_point() else v for k, v in load_file(run / "ema.safetensors").items()}
    state = {**json.loads((run / runs.STATE_FILE).read_text()), "step": 4, "images_seen": 128}
    meta = {"step": "4"}
    files = {
        runs.MODEL_FILE: runs.tensors_to_bytes(load_file(run / runs.MODEL_FILE), meta),
        runs.EMA_FILE: runs.tensors_to_bytes(ema, meta),
        runs.OPTIMIZER_FILE: runs.tensors_to_bytes(load_file(run / runs.OPTIMIZER_FILE), meta),
        runs.STATE_FILE: json.dumps(state).encode(),
    }
    real_replace = os.replace

    def killed_after_the_first_move(src, dst):
        real_replace(src, dst)
        if not str(dst).endswith(runs.PENDING_FILE):
            raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", killed_after_the_first_move)
    with pytest.raises(KeyboardInterrupt):
        runs.write_files_atomically(run, files)
    monkeypatch.undo()
    assert (run / runs.PENDING_FILE).exists() and (run / "model.safetensors.tmp").exists()  # ema moved
    return ema


def test_a_read_only_run_with_a_pending_commit_loads_what_it_committed(tiny_run, tmp_path, monkeypatch, read_only):
    run = _copy(tiny_run, tmp_path)
    committed = _crash_after_the_commit_point(run, monkeypatch)
    before = _contents(run)
    read_only(run)
    loaded = aediff.load(run, device="cpu")
    assert loaded.summary.steps == 4 and runs.check_checkpoint_consistent(run) == 4
    assert all(torch.equal(committed[k], v) for k, v in loaded.model.state_dict().items())
    assert _contents(run) == before


def test_recover_finishes_the_commit_when_it_may_write_and_refuses_when_it_may_not(tiny_run, tmp_path, monkeypatch):
    run = _copy(tiny_run, tmp_path)
    _crash_after_the_commit_point(run, monkeypatch)
    (run / "stray.tmp").write_bytes(b"debris")
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: False if Path(path) == run else real_access(path, mode))
    with pytest.raises(RunError, match="not writable"):
        runs.recover(run)
    monkeypatch.undo()
    runs.recover(run)
    assert not list(run.rglob("*.tmp")) and not (run / runs.PENDING_FILE).exists()
    assert runs.check_checkpoint_consistent(run) == 4


# --- one writer at a time ---------------------------------------------------------------------------------------
def test_the_writer_lock_records_its_holder_and_goes_away(tmp_path):
    run = tmp_path / "run"
    assert runs.live_writer(run) is None
    with runs.writer_lock(run):
        record = json.loads((run / runs.LOCK_FILE).read_text())
        assert record["pid"] == os.getpid() and record["host"] and record["started"]
        assert runs.live_writer(run) == os.getpid()
        with runs.writer_lock(run):  # re-entrant: the holder's own inner lock passes through
            pass
        assert (run / runs.LOCK_FILE).exists()
    assert not (run / runs.LOCK_FILE).exists() and runs.live_writer(run) is None


def test_a_live_writer_is_refused_to_other_writers_and_a_stale_lock_is_taken_over(tiny_run, tmp_path):
    run = _copy(tiny_run, tmp_path)
    (run / "model.safetensors.tmp").write_bytes(b"being written")
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        record = {"pid": other.pid, "host": os.uname().nodename, "started": "2026-01-01 00:00:00 UTC"}
        (run / runs.LOCK_FILE).write_text(json.dumps(record))
        assert runs.live_writer(run) == other.pid
        message = f"being written by process {other.pid} .*wait for it or stop it"
        with pytest.raises(RunError, match=message):
            with runs.writer_lock(run):
                pass
        with pytest.raises(RunError, match=message):
            runs.recover(run)  # would delete the writer's *.tmp
        with pytest.raises(RunError, match=message):
            runs.write_files_atomically(run, {"x.txt": b"x"})
        assert aediff.load(run, device="cpu").summary.steps == 3  # a reader reads, and leaves the *.tmp be
        assert (run / "model.safetensors.tmp").exists()
    finally:
        other.kill()
        other.wait()
    assert runs.live_writer(run) is None  # its process is gone: stale
    for stale in (json.dumps(record), "not json"):
        (run / runs.LOCK_FILE).write_text(stale)
        with runs.writer_lock(run):
            assert json.loads((run / runs.LOCK_FILE).read_text())["pid"] == os.getpid()
        assert not (run / runs.LOCK_FILE).exists()


def test_check_finite_weights_names_the_first_bad_tensor():
    good = {"a": torch.ones(3), "steps": torch.tensor([2**40])}  # integers are counters, not weights
    runs.check_finite_weights(good, "here")
    with pytest.raises(RunError, match=r"^the model: tensor 'b' holds NaN"):
        runs.check_finite_weights({**good, "b": torch.tensor([float("nan")]), "c": torch.tensor([1e9])}, "the model")
    with pytest.raises(RunError, match="tensor 'c' holds 1e\\+09"):
        runs.check_finite_weights({**good, "c": torch.tensor([1e9])}, "x")


# --- a reader beside a running training ---------------------------------------------------------------------------
@pytest.mark.slow
def test_loading_a_run_in_a_tight_loop_never_disturbs_its_training(tmp_path):
    run = tmp_path / "run"
    command = [
        AEDIFF, "train", "ae", "--data", "digits", "--out", str(run), "--max-steps", "60", "--batch-size", "32",
        "--widths", "8,16", "--bottleneck", "8", "--train-set", "checkpoint_every=2", "--train-set",
        "tensorboard=false", "--no-progress",
    ]  # fmt: skip
    training = subprocess.Popen(command, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    loads, steps = 0, set()
    try:
        deadline = time.monotonic() + 60
        while training.poll() is None and time.monotonic() < deadline:
            if not (run / runs.STATE_FILE).exists() and not (run / (runs.STATE_FILE + ".tmp")).exists():
                time.sleep(0.02)  # no checkpoint yet
                continue
            loaded = aediff.load(run, device="cpu")  # raises on a checkpoint that mixes steps
            loads, steps = loads + 1, steps | {loaded.summary.steps}
    finally:
        stdout, stderr = training.communicate(timeout=120)
    assert training.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert loads >= 3 and len(steps) >= 2, (loads, steps)  # it read the run while the training wrote it
    assert runs.check_checkpoint_consistent(run) == 60
    assert not list(run.rglob("*.tmp")) and not (run / runs.PENDING_FILE).exists()
    assert not (run / runs.LOCK_FILE).exists()


def test_a_flipped_bit_anywhere_in_a_weights_file_is_refused(tiny_run, tmp_path):
    """Property: one bit flipped at a random position of ema.safetensors (its length prefix, JSON header with
    names, dtypes, shapes, offsets and metadata, or its tensor bytes) never loads: the checksum, the header's
    checks or the shapes refuse it, naming the file. 120 positions, a third in the header."""
    import random

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    path = run / "ema.safetensors"
    original = path.read_bytes()
    start = 8 + int.from_bytes(original[:8], "little")
    rng = random.Random(0)
    positions = [rng.randrange(start) for _ in range(40)] + [rng.randrange(start, len(original)) for _ in range(80)]
    loaded = []
    for position in positions:
        damaged = bytearray(original)
        damaged[position] ^= 1 << rng.randrange(8)
        path.write_bytes(bytes(damaged))
        try:
            aediff.load(run, device="cpu")
            loaded.append(position)
        except RunError as exc:
            assert "ema.safetensors" in str(exc)
    assert loaded == [], f"loaded with a flipped bit at bytes {loaded} (tensor data from {start})"
    path.write_bytes(original)
    assert aediff.load(run, device="cpu").unverified_weights is None  # the undamaged file verifies


def test_weights_written_before_checksums_still_load_and_say_so(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    path = run / "ema.safetensors"
    with safe_open(str(path), "pt") as f:
        metadata = {k: v for k, v in (f.metadata() or {}).items() if k != runs.DIGEST_KEY}
    save_file(load_file(path), path, metadata)  # as aediff wrote it before issue 29
    assert aediff.load(run, device="cpu").unverified_weights == path
