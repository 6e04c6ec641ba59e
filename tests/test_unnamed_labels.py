"""Labels without class names: the classes are named by index ("class 0", "class 1", ...), so captions can be
made from them, text-conditioned latent diffusion trains, and `aediff compare` runs to the end and says how the
classes were named. Data without labels or captions still gets the refusal it had."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import aediff
from aediff.data import (
    ImageDataset,
    caption_templates,
    check_captions_available,
    index_class_names,
    label_captions,
    load_dataset,
)
from aediff.data.captions import INDEX_HELD_OUT_TEMPLATES, INDEX_TEMPLATES
from aediff.errors import DataError
from aediff.evaluation.results import PromptAccuracy
from aediff.models import Condition
from aediff.reports import evaluate
from aediff.reports.compare import CompareConfig, compare_plan, run_compare
from aediff.training.train import train

QUICK = {"max_steps": 2, "batch_size": 16, "tensorboard": False}
TINY_UNET = {"channels": (8, 16), "attention_resolutions": (), "embedding_dim": 16, "steps": 3}
NOTE = "The data has no class names; classes are named by index"
TEXT = {"conditioning.kind": "text", "text_width": 16, "text_layers": 1, "text_max_length": 24}


def write_unnamed(path: Path, n: int = 200, classes: int = 3, side: int = 12) -> Path:
    """An npz of ``n`` random ``side`` x ``side`` grayscale images with integer labels 0..classes-1 and no
    ``class_names`` (and no captions); the top class has one image, so the test split lacks it."""
    rng = np.random.default_rng(0)
    labels = np.arange(n) % (classes - 1)
    labels[-1] = classes - 1
    np.savez(path, images=rng.integers(0, 256, (n, side, side), np.uint8), labels=labels)
    return path


@pytest.fixture(scope="module")
def unnamed(tmp_path_factory) -> str:
    return f"npz:{write_unnamed(tmp_path_factory.mktemp('unnamed') / 'unnamed.npz')}"


def test_labels_without_names_load_named_by_index_with_the_flag(unnamed):
    train_set, test_set = load_dataset(unnamed, "train"), load_dataset(unnamed, "test")
    assert 2 not in test_set.labels.tolist()  # the top class is only in the training split ...
    for ds in (train_set, test_set, train_set.subset([0, 1]), train_set.with_label_captions()):
        assert ds.class_names == ["class 0", "class 1", "class 2"] and ds.classes_named_by_index
        assert ds.num_classes == 3  # ... and both splits still have its name: the names come from the whole set
    assert index_class_names(3) == ["class 0", "class 1", "class 2"]


def test_named_labelled_and_unlabelled_sets_are_not_flagged(tmp_path):
    digits = load_dataset("digits")
    assert digits.class_names[7] == "7" and not digits.classes_named_by_index
    np.savez(tmp_path / "plain.npz", images=np.zeros((10, 4, 4), np.uint8))
    plain = load_dataset(f"npz:{tmp_path / 'plain.npz'}", "all")
    assert plain.class_names is None and not plain.classes_named_by_index
    named = ImageDataset(torch.zeros(2, 1, 2, 2, dtype=torch.uint8), torch.tensor([0, 1]), class_names=["a", "b"])
    assert not named.classes_named_by_index
    built = ImageDataset(torch.zeros(2, 1, 2, 2, dtype=torch.uint8), torch.tensor([0, 3]))  # the Python API too
    assert built.class_names == index_class_names(4) and built.classes_named_by_index


def test_integer_named_class_folders_keep_their_names_and_make_captions(tmp_path):
    """A folder's sub-folder names are the user's names, numbers or not: nothing is refused, nothing flagged."""
    for k in (0, 1, 12):
        (tmp_path / str(k)).mkdir()
        for i in range(3):
            Image.fromarray(np.full((6, 6), 40 * i, np.uint8)).save(tmp_path / str(k) / f"{i}.png")
    ds = load_dataset(f"folder:{tmp_path}", "all")
    assert ds.class_names == ["0", "1", "12"] and not ds.classes_named_by_index
    check_captions_available(ds)
    captions = ds.with_label_captions(seed=0).batch(range(len(ds)))["captions"]
    assert all(c.strip() for c in captions)


def test_streamed_labels_without_names_are_named_by_index(tmp_path):
    from test_streaming import digit_images, write_shards

    images, labels = digit_images(30)
    shards = write_shards(tmp_path / "shards", images, labels)
    ds = load_dataset(f"wds:{shards}", "train")
    assert ds.class_names == index_class_names(int(labels.max()) + 1) and ds.classes_named_by_index
    assert ds.subset([0]).classes_named_by_index


def test_captions_are_made_from_index_names(unnamed):
    ds = load_dataset(unnamed, "train").with_label_captions(seed=0)
    batch = ds.batch(range(40))
    for label, caption in zip(batch["labels"].tolist(), batch["captions"], strict=True):
        assert f"class {label}" in caption, caption
    names = index_class_names(3)
    assert caption_templates(names) == list(INDEX_TEMPLATES)
    assert caption_templates(names, held_out=True) == list(INDEX_HELD_OUT_TEMPLATES)
    assert not set(INDEX_TEMPLATES) & set(INDEX_HELD_OUT_TEMPLATES)
    assert label_captions([1], ["class 0", "class 1"], torch.Generator().manual_seed(0))[0].endswith("class 1")
    assert caption_templates(["cat", "dog"])[0] == "a photo of {a_name}"  # other names keep their templates


def test_text_conditioned_latent_diffusion_trains_on_unnamed_labels(unnamed, tmp_path):
    ae = {"channels": (8, 16), "latent": "spatial", "latent_channels": 2}
    train("ae", tmp_path / "ae", unnamed, model=ae, training=QUICK, progress=False)
    latent = {**TINY_UNET, **TEXT, "autoencoder.path": str(tmp_path / "ae")}
    result = train("latent-diffusion", tmp_path / "ldm", unnamed, model=latent, training=QUICK, progress=False)
    assert result.step == 2
    model = aediff.load(result.run_dir, device="cpu").model
    assert model.sample(2, Condition(prompts="an image of class 2")).shape == (2, 1, 12, 12)


def test_the_compare_plan_conditions_on_text_and_its_caption_check_passes(unnamed):
    train_set = load_dataset(unnamed, "train")
    plan = compare_plan(CompareConfig(data=unnamed), labelled=train_set.labels is not None)
    text = [p for p in plan if p.model.get("conditioning.kind") == "text"]
    assert [p.name for p in text] == ["latent-diffusion"]
    check_captions_available(train_set, "aediff compare's latent-diffusion model (text-conditioned)")


def test_data_without_labels_or_captions_is_still_refused_text(tmp_path):
    images = torch.zeros(2, 1, 2, 2, dtype=torch.uint8)
    with pytest.raises(DataError, match="latent-diffusion needs captions.*neither captions nor labels"):
        check_captions_available(ImageDataset(images, name="npz:x.npz"), "latent-diffusion")
    np.savez(tmp_path / "plain.npz", images=np.zeros((20, 8, 8), np.uint8))
    with pytest.raises(DataError, match="neither captions nor labels"):
        train("diffusion", tmp_path / "run", f"npz:{tmp_path / 'plain.npz'}",
              model={**TINY_UNET, **TEXT, "image_size": 8}, training=QUICK, progress=False)  # fmt: skip
    with pytest.raises(DataError, match="have no class name"):
        label_captions([0, 5], ["a", "b"])


@pytest.mark.parametrize(
    ("labels", "names", "message"),
    [
        (np.array([0, 1, 2, 5]), np.array(["a", "b"]), "'labels' go up to 5 but 'class_names' has only 2"),
        (np.array([0, 1, -1, 0]), None, "negative"),
        (np.array([0.5, 1.0, 0.0, 1.0]), None, "expected integers"),
    ],
)
def test_bad_labels_keep_their_errors(tmp_path, labels, names, message):
    arrays = {"images": np.zeros((4, 4, 4), np.uint8), "labels": labels}
    np.savez(tmp_path / "bad.npz", **arrays, **({"class_names": names} if names is not None else {}))
    with pytest.raises(DataError, match=message):
        load_dataset(f"npz:{tmp_path / 'bad.npz'}", "all")


def test_prompt_grid_asks_for_every_class_of_the_data(unnamed, monkeypatch):
    """Not ten classes whatever the data: one row of prompts per class name, the flag passed on."""
    train_set = load_dataset(unnamed, "train")
    seen = {}

    def fake_samples(model, n, seed, condition):
        seen["prompts"] = condition.prompts
        return torch.zeros(n, 1, 12, 12)

    monkeypatch.setattr(evaluate, "sample_images", fake_samples)
    monkeypatch.setattr(evaluate, "predicted_classes", lambda classifier, images: torch.zeros(len(images)).long())
    accuracy, (names, images) = evaluate.prompt_grid(None, None, CompareConfig(), train_set)
    assert names == index_class_names(3) and len(seen["prompts"]) == len(images) == 3 * 8
    assert seen["prompts"][0] == "an image of class 0" and seen["prompts"][-1] == "an image of class 2"
    assert accuracy.classes_named_by_index and accuracy.accuracy == pytest.approx(1 / 3)
    assert PromptAccuracy("t", 3.0, 0.5, 0.1, 8).classes_named_by_index is False  # old metrics.json files


@pytest.mark.slow
def test_compare_runs_to_the_end_on_unnamed_labels_and_the_cli_reuses_its_runs(tmp_path):
    """Tiny models trained and scored through run_compare (the CLI has no option for model sizes, and default
    ones take many minutes on 2 cores), then `aediff compare` in a subprocess scoring the same runs."""
    from test_compare import tiny_config

    data = f"npz:{write_unnamed(tmp_path / 'unnamed.npz')}"
    small = dict(bottlenecks=(4,), dae_sigmas=(0.5,), samples=20, limit=10, max_steps=3, guidances=(1.0, 3.0),
                 snapshots=(), restore_images=4, restore_steps=2)  # fmt: skip
    record = run_compare(tiny_config(data=data, **small), tmp_path / "api", progress=False)
    assert record.sections.prompts.classes_named_by_index and record.sections.guidance.num_classes == 3
    assert NOTE in (tmp_path / "api" / "report.html").read_text()
    runs = [arg for p in compare_plan(CompareConfig(bottlenecks=(4,), dae_sigmas=(0.5,)))
            for arg in ("--runs", f"{p.name}={tmp_path / 'api' / 'runs' / p.name}")]  # fmt: skip
    argv = [str(Path(sys.executable).with_name("aediff")), "compare", "--data", data, "--budget", "5s",
            "--max-steps", "3", "--samples", "20", "--limit", "10", "--bottlenecks", "4", "--dae-sigmas", "0.5",
            "--snapshots", "none", "--restore-images", "4", "--restore-steps", "2",
            "--out", str(tmp_path / "cli"), "--no-progress", *runs]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600, env=os.environ.copy())
    assert done.returncode == 0, done.stdout + done.stderr
    metrics = json.loads((tmp_path / "cli" / "metrics.json").read_text())
    assert metrics["sections"]["prompts"]["classes_named_by_index"] is True
    assert NOTE in (tmp_path / "cli" / "report.html").read_text()


def test_a_label_too_large_to_name_leaves_the_classes_unnamed():
    import numpy as np

    from aediff.data.dataset import MAX_INDEX_NAMES, named_classes

    assert named_classes(np.array([0, 2]), None) == (["class 0", "class 1", "class 2"], True)
    assert named_classes(np.array([0, MAX_INDEX_NAMES - 1]), None)[1] is True
    assert named_classes(np.array([0, MAX_INDEX_NAMES]), None) == (None, False)  # refused later, by size
