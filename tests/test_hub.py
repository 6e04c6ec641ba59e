"""The Hugging Face Hub, with no network: a tiny run laid into a Hugging Face cache folder in the layout
huggingface_hub writes loads offline as ``hf://owner/name`` (in Python and through the CLI); a repository
that is not cached fails in one clear line; `aediff push` uploads exactly the run's files and a model card
(tested up to the network call, with HfApi's methods replaced)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import aediff
from aediff.errors import RunError

hub = pytest.importorskip("huggingface_hub")

from aediff.export.hub import model_card, push  # noqa: E402  (after the skip: needs huggingface_hub)
from aediff.export.hub_resolve import RUN_FILES  # noqa: E402

SMALL = ["channels=8,16"]
REPO = "someone/tiny-vae"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
PUSHED = ["config.json", "model.safetensors", "ema.safetensors", "training_state/state.json"]  # (too short to log)
SCRIPT = shutil.which("aediff", path=str(Path(sys.executable).parent))
COMMAND = [SCRIPT] if SCRIPT else [sys.executable, "-m", "aediff.cli"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_runs):
    """A VAE on digits (8x8), a few steps."""
    root = tmp_path_factory.mktemp("hub-runs")
    tiny_runs(root, [("vae", "vae", {"bottleneck": 8}, SMALL)], steps=10)
    return root / "vae"


def lay_into_cache(cache: Path, repo_id: str, folder: Path, names: list[str], commit: str = COMMIT) -> Path:
    """Put ``names`` of ``folder`` into ``cache`` as huggingface_hub stores a downloaded model repository:
    models--owner--name/blobs/<sha256>, snapshots/<commit>/<path> -> ../../blobs/<sha256>, refs/main."""
    from huggingface_hub.file_download import repo_folder_name

    repo = cache / repo_folder_name(repo_id=repo_id, repo_type="model")
    for name in names:
        data = (folder / name).read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = repo / "snapshots" / commit / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return repo / "snapshots" / commit


@pytest.fixture(scope="module")
def cache(run_dir, tmp_path_factory):
    """A Hugging Face cache folder holding the run as REPO (what `aediff push` would have uploaded)."""
    folder = tmp_path_factory.mktemp("hf-home") / "hub"
    lay_into_cache(folder, REPO, run_dir, PUSHED)
    return folder


@pytest.fixture
def offline(cache, monkeypatch):
    """HF_HUB_CACHE at the test cache, offline (read at import by huggingface_hub: its constant too, so
    that anything reaching for the network fails at once)."""
    monkeypatch.setenv("HF_HOME", str(cache.parent))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub.constants, "HF_HUB_OFFLINE", True)
    return cache


def cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> tuple[int, str]:
    full = {**os.environ, "COLUMNS": "80", "NO_COLOR": "1", **(env or {})}
    full.pop("AEDIFF_DEBUG", None)
    done = subprocess.run([*COMMAND, *args], capture_output=True, text=True, timeout=120, cwd=cwd, env=full)
    return done.returncode, done.stdout + done.stderr


def offline_env(cache: Path) -> dict[str, str]:
    return {"HF_HOME": str(cache.parent), "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.lower().startswith(("error", "internal error"))]


# --- loading -------------------------------------------------------------------------------------------------
def test_a_cached_hub_run_loads_offline_with_the_folders_weights(run_dir, offline):
    local = aediff.load(run_dir, device="cpu")
    for spec in (f"hf://{REPO}", f"hf://{REPO}@{COMMIT}", Path(f"hf://{REPO}")):  # a Path collapses "//"
        remote = aediff.load(spec, device="cpu")
        assert remote.path == offline / f"models--{REPO.replace('/', '--')}" / "snapshots" / COMMIT
        assert remote.family == local.family and remote.weights == local.weights == "ema"
        assert remote.summary == local.summary and remote.data == local.data
        mine, theirs = local.model.state_dict(), remote.model.state_dict()
        assert mine.keys() == theirs.keys()
        assert all(torch.equal(mine[k], theirs[k]) for k in mine)
    mine = aediff.load(run_dir, weights="model", device="cpu").model.state_dict()
    theirs = aediff.load(f"hf://{REPO}", weights="model", device="cpu").model.state_dict()
    assert all(torch.equal(mine[k], theirs[k]) for k in mine)


@pytest.mark.parametrize(
    "spec,words",
    [
        ("hf://nobody/missing", ["not in the local Hugging Face cache", "hf download nobody/missing"]),
        (f"hf://{REPO}@v2", [f"{REPO} at revision v2", "--revision v2"]),
    ],
)
def test_a_repository_not_in_the_cache_fails_offline_with_the_fix(spec, words, offline):
    with pytest.raises(RunError) as caught:
        aediff.load(spec, device="cpu")
    message = str(caught.value)
    assert "\n" not in message and str(offline) in message and "HF_HUB_OFFLINE" in message
    for word in words:
        assert word in message


def test_a_malformed_hub_spec_is_refused():
    with pytest.raises(aediff.ConfigError, match="hf://owner/name"):
        aediff.load("hf://no-owner", device="cpu")


@pytest.mark.slow
def test_the_cli_samples_from_a_cached_hub_run_and_names_a_missing_one_in_one_line(cache, tmp_path):
    code, out = cli("sample", f"hf://{REPO}", "--samples", "4", "--out", "s.png", env=offline_env(cache), cwd=tmp_path)
    assert code == 0, out
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"
    code, out = cli("sample", "hf://nobody/missing", env=offline_env(cache), cwd=tmp_path)
    assert code == 1, out
    assert "Traceback" not in out
    lines = error_lines(out)
    assert len(lines) == 1 and "nobody/missing" in out and "hf download" in out.replace("\n", " "), out


# --- pushing ----------------------------------------------------------------------------------------------------
def test_push_dry_run_lists_the_run_files_and_the_card_and_uploads_nothing(run_dir, tmp_path):
    code, out = cli("push", str(run_dir), REPO, "--dry-run", cwd=tmp_path)
    assert code == 0, out
    listed = [line.split()[0] for line in out.splitlines() if line.strip().endswith("bytes") and "dry run" not in line]
    assert listed == [*PUSHED, "README.md"]
    assert "nothing was uploaded" in out
    for name in PUSHED:
        assert f"{name}  {(run_dir / name).stat().st_size:,} bytes" in out
    # what is pushed is what a run needs and what loading fetches; the optimizer's moments stay behind
    assert set(PUSHED) <= set(RUN_FILES) and not any("optimizer" in name for name in PUSHED)


def test_the_card_names_the_family_data_budget_and_how_to_load(run_dir, tmp_path):
    run = aediff.load(run_dir, device="cpu")
    card = model_card(run, REPO)
    front = card.split("---")[1]
    assert "library_name: aediff" in front and "- vae" in front and "- digits" in front
    for text in ("family: `vae`", "data: `digits`", "10 steps", "batch size 32", f'aediff.load("hf://{REPO}")'):
        assert text in card
    assert "## Measured" not in card
    with_metrics = model_card(run, REPO, {"family": "vae", "reconstruction": {"mse": 0.25, "seed": 0}})
    assert "## Measured" in with_metrics and "| reconstruction | mse | 0.25 |" in with_metrics


def test_push_creates_the_repository_and_commits_exactly_the_plan(run_dir, tmp_path, monkeypatch):
    copy = tmp_path / "vae"
    shutil.copytree(run_dir, copy)
    (copy / "metrics.json").write_text(json.dumps({"family": "vae", "reconstruction": {"psnr": 20.5}}))
    (copy / "log.jsonl").write_text(json.dumps({"step": 10, "train_seconds": 1.0}) + "\n")
    calls = []

    def create_repo(self, repo_id, **kwargs):
        calls.append(("create_repo", repo_id, kwargs))

    def create_commit(self, repo_id, operations, **kwargs):
        files = {op.path_in_repo: Path(op.path_or_fileobj).read_bytes() for op in operations}
        calls.append(("create_commit", repo_id, files))

    monkeypatch.setattr(hub.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(hub.HfApi, "create_commit", create_commit)
    monkeypatch.setattr(hub.constants, "HF_HUB_OFFLINE", True)  # anything else reaching out fails
    plan = push(copy, REPO, private=True)
    assert [name for name, _ in plan] == [*PUSHED, "log.jsonl", "metrics.json", "README.md"]
    assert calls[0] == ("create_repo", REPO, {"exist_ok": True, "private": True})
    kind, repo, files = calls[1]
    assert kind == "create_commit" and repo == REPO and len(calls) == 2
    assert list(files) == [name for name, _ in plan]
    assert all(files[name] == (copy / name).read_bytes() for name, _ in plan[:-1])
    card = files["README.md"].decode()
    assert "| reconstruction | psnr | 20.5 |" in card and dict(plan)["README.md"] == len(files["README.md"])


def test_push_refuses_a_bad_repo_id_in_one_line(run_dir, tmp_path):
    code, out = cli("push", str(run_dir), "not-a-repo-id", "--dry-run", cwd=tmp_path)
    assert code == 2, out
    assert "Traceback" not in out and "owner/name" in out
    with pytest.raises(aediff.ConfigError, match="owner/name"):
        push(run_dir, "a/b/c", dry_run=True)


def test_the_page_serves_a_hub_run_under_its_repository_name(offline):
    """`aediff serve hf://owner/name`: the page's catalog resolves the spec offline and lists the run by name."""
    from aediff.app.handlers import Catalog

    catalog = Catalog.open([Path(f"hf://{REPO}")])
    assert list(catalog.runs) == ["tiny-vae"]
    assert catalog.runs["tiny-vae"].family == "vae"
