"""Data read from disk per batch (folder:, wds:, hf:), the step-seeded batch stream, augmentation, exact resume."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from aediff.data import DataConfig, ImageDataset, load_dataset
from aediff.data.loader import Augmentation, BatchPlan, StepBatches, step_batches
from aediff.data.streamed import StreamedImageDataset, expand_braces
from aediff.errors import ConfigError, DataError
from aediff.training.train import train

TINY = {"channels": (8, 16), "bottleneck_dim": 8}


def quick(**overrides):
    base = {"batch_size": 16, "lr": 3e-3, "warmup_steps": 2, "log_every": 1, "tensorboard": False}
    return {**base, **overrides}


def digit_images(n: int = 60) -> tuple[np.ndarray, np.ndarray]:
    """n of sklearn's 8x8 digits as uint8 [n, 8, 8] and their labels."""
    ds = load_dataset("digits", "all")
    images = ds.images[:n, 0].numpy()
    return images, ds.labels[:n].numpy()


@pytest.fixture(scope="module")
def digit_folder(tmp_path_factory):
    """60 PNGs in class sub-folders."""
    root = tmp_path_factory.mktemp("folder")
    images, labels = digit_images()
    for i, (img, label) in enumerate(zip(images, labels, strict=True)):
        (root / f"class{label}").mkdir(exist_ok=True)
        Image.fromarray(img).save(root / f"class{label}" / f"{i:03d}.png")
    return root


def write_shards(folder, images, labels, captions=None, per_shard=25):
    """WebDataset shards 000.tar, 001.tar, ... of PNG + .cls (+ .txt) samples."""
    folder.mkdir(parents=True, exist_ok=True)
    for shard, start in enumerate(range(0, len(images), per_shard)):
        with tarfile.open(folder / f"{shard:03d}.tar", "w") as tar:
            for i in range(start, min(start + per_shard, len(images))):
                members = {"png": _png(images[i]), "cls": str(int(labels[i])).encode()}
                if captions is not None:
                    members["txt"] = captions[i].encode()
                for ext, data in members.items():
                    info = tarfile.TarInfo(f"sample{i:05d}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return folder


def _png(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).save(out, format="PNG")
    return out.getvalue()


def weights(path):
    return load_file(str(path))


# --- the streamed dataset is the in-memory one, read lazily -------------------------------------------------------


def test_a_streamed_folder_gives_the_in_memory_folders_split_and_batches(digit_folder):
    for split in ("train", "test"):
        memory = load_dataset(f"folder:{digit_folder}", split, stream=False)
        streamed = load_dataset(f"folder:{digit_folder}", split, stream=True)
        assert isinstance(streamed, StreamedImageDataset) and type(memory) is ImageDataset
        assert len(streamed) == len(memory) and streamed.describe()["size"] == len(memory)
        assert (streamed.channels, streamed.resolution, streamed.num_classes) == (
            memory.channels,
            memory.resolution,
            10,
        )
        idx = torch.randperm(len(memory))[:9]
        a, b = memory.batch(idx), streamed.batch(idx)
        assert torch.equal(a["images"], b["images"]) and torch.equal(a["labels"], b["labels"])


def test_training_on_a_streamed_folder_equals_training_on_it_in_memory(digit_folder, tmp_path):
    for name, stream, workers in (("memory", False, None), ("streamed", True, 2)):
        data = DataConfig(spec=f"folder:{digit_folder}", stream=stream, workers=workers)
        train("ae", tmp_path / name, data, model=TINY, training=quick(max_steps=6), progress=False)
    a, b = weights(tmp_path / "memory" / "model.safetensors"), weights(tmp_path / "streamed" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((tmp_path / "streamed" / "config.json").read_text())["data"]["stream"] is True


def test_an_interrupted_streamed_run_resumes_to_the_uninterrupted_one(digit_folder, tmp_path):
    data = DataConfig(spec=f"folder:{digit_folder}", stream=True, workers=2, flip=True, crop=0.75)
    config = quick(max_steps=9, checkpoint_every=4)  # 3 steps per epoch: the resume lands mid-epoch
    train("ae", tmp_path / "full", data, model=TINY, training=config, progress=False)

    def ctrl_c_at_step_5(trainer, step, logs):
        if step == 5:
            os.kill(os.getpid(), signal.SIGINT)

    part = train(
        "ae", tmp_path / "part", data, model=TINY, training=config, progress=False, callbacks=[ctrl_c_at_step_5]
    )
    assert part.interrupted and part.step == 5
    assert train(None, tmp_path / "part", resume=True, progress=False).step == 9
    for name in ("model.safetensors", "ema.safetensors"):
        a, b = weights(tmp_path / "full" / name), weights(tmp_path / "part" / name)
        assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a), name


def test_a_large_folder_is_streamed_without_being_asked(digit_folder, monkeypatch):
    assert type(load_dataset(f"folder:{digit_folder}")) is ImageDataset
    monkeypatch.setenv("AEDIFF_STREAM_ABOVE_GB", "1e-6")  # ~1 KB: the folder is larger
    assert isinstance(load_dataset(f"folder:{digit_folder}"), StreamedImageDataset)
    assert type(load_dataset(f"folder:{digit_folder}", stream=False)) is ImageDataset


# --- the batch stream -------------------------------------------------------------------------------------------


def test_worker_processes_build_the_same_batches_as_the_training_process(digit_folder):
    ds = load_dataset(f"folder:{digit_folder}", stream=True).with_label_captions()
    source = StepBatches(ds, BatchPlan(len(ds), 8, seed=3), Augmentation(flip=True, crop=0.5))
    inline, ahead = step_batches(source, 4, workers=0), step_batches(source, 4, workers=2)
    for _ in range(7):
        a, b = next(inline), next(ahead)
        assert torch.equal(a["images"], b["images"]) and a["captions"] == b["captions"]
    ahead.close()


def test_batches_depend_on_the_step_and_seed_only():
    plan = BatchPlan(50, 10, seed=1)
    assert torch.equal(plan.indices(7), BatchPlan(50, 10, seed=1).indices(7))
    assert not torch.equal(plan.indices(7), BatchPlan(50, 10, seed=2).indices(7))
    epoch = torch.cat([plan.indices(s) for s in range(5)])
    assert sorted(epoch.tolist()) == list(range(50))  # one epoch covers every example once
    halves = [BatchPlan(50, 10, seed=1, world_size=2, rank=r).indices(7) for r in (0, 1)]
    assert torch.equal(torch.cat(halves), plan.indices(7))  # processes split the global batch


def test_augmentation_flips_and_crops_by_its_draws_and_is_off_by_default():
    images = torch.linspace(-1, 1, 2 * 1 * 6 * 6).reshape(2, 1, 6, 6)
    assert not Augmentation().active
    flipped = Augmentation(flip=True)(images, torch.Generator().manual_seed(0))
    for a, b in zip(images, flipped, strict=True):
        assert torch.equal(b, a) or torch.equal(b, a.flip(-1))
    draws = [Augmentation(flip=True)(images, torch.Generator().manual_seed(s)) for s in range(8)]
    assert any(not torch.equal(d, images) for d in draws) and any(torch.equal(d[0], images[0]) for d in draws)
    cropped = Augmentation(crop=0.5)(images, torch.Generator().manual_seed(0))
    assert cropped.shape == images.shape and not torch.equal(cropped, images)
    assert torch.equal(cropped, Augmentation(crop=0.5)(images, torch.Generator().manual_seed(0)))


# --- WebDataset shards ------------------------------------------------------------------------------------------


def test_webdataset_shards_load_with_labels_and_captions_and_train(tmp_path):
    images, labels = digit_images(60)
    captions = [f"a handwritten {int(d)}" for d in labels]
    shards = write_shards(tmp_path / "shards", images, labels, captions)
    ds = load_dataset(f"wds:{shards}/{{000..002}}.tar", "all")
    assert isinstance(ds, StreamedImageDataset) and len(ds) == 60
    batch = ds.batch([0, 59])
    assert batch["labels"].tolist() == [labels[0], labels[59]] and batch["captions"][1] == captions[59]
    assert torch.equal(batch["images"][0, 0], torch.from_numpy(images[0]).float() / 127.5 - 1)
    assert len(load_dataset(f"wds:{shards}", "all")) == 60  # a folder of shards
    result = train("ae", tmp_path / "run", f"wds:{shards}/{{000..002}}.tar", model=TINY, training=quick(max_steps=3),
                   progress=False)  # fmt: skip
    assert result.step == 3


def test_brace_patterns_expand_as_webdataset_writes_them():
    assert expand_braces("d/{000..002}.tar") == ["d/000.tar", "d/001.tar", "d/002.tar"]
    assert expand_braces("{a,b}/{8..10}.tar") == ["a/8.tar", "a/9.tar", "a/10.tar", "b/8.tar", "b/9.tar", "b/10.tar"]
    assert expand_braces("plain.tar") == ["plain.tar"]
    with pytest.raises(DataError, match="backwards"):
        expand_braces("{5..1}.tar")


@pytest.mark.parametrize(
    "damage, message",
    [
        ("missing shard", "do not exist"),
        ("no image", "has no image"),
        ("bad class", "not a class index"),
        ("some labels", "give every sample one or none"),
        ("not a tar", "not a readable tar shard"),
        # once read as 3 samples of 5 and trained on without a word
        ("cut at a sample boundary", r"001.tar is truncated: no end-of-archive marker after its last whole member"),
        # once blamed on the data: "4 of the 5 samples ... have a class"
        ("cut inside a sample", r"001.tar is truncated: its member 'sample00008.png' at byte \d+ is cut short"),
    ],
)
def test_damaged_shards_are_refused_naming_the_problem(tmp_path, damage, message):
    images, labels = digit_images(10)
    shards = write_shards(tmp_path / "s", images, labels, per_shard=5)
    pattern = f"wds:{shards}/{{000..001}}.tar"
    if damage == "missing shard":
        pattern = f"wds:{shards}/{{000..002}}.tar"
    elif damage in ("no image", "bad class", "some labels"):
        # "bad class": a later member of an existing sample's key replaces the earlier one
        name, ext, data = {"no image": ("extra", "cls", b"3"), "bad class": ("sample00005", "cls", b"three"),
                           "some labels": ("extra", "png", _png(images[0]))}[damage]  # fmt: skip
        with tarfile.open(shards / "001.tar", "a") as tar:
            info = tarfile.TarInfo(f"{name}.{ext}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    elif damage.startswith("cut"):
        with tarfile.open(shards / "001.tar") as tar:
            member = tar.getmember("sample00008.png")
        cut = member.offset if damage == "cut at a sample boundary" else member.offset_data + 10
        (shards / "001.tar").write_bytes((shards / "001.tar").read_bytes()[:cut])
    else:
        (shards / "001.tar").write_bytes(b"garbage" * 100)
    with pytest.raises(DataError, match=message):
        load_dataset(pattern, "all")


# --- errors at read time, and the spec's rules ------------------------------------------------------------------


def test_an_image_of_another_size_is_named_when_a_batch_reaches_it(tmp_path):
    images, _ = digit_images(12)
    for i, img in enumerate(images):
        Image.fromarray(img).save(tmp_path / f"{i:02d}.png")
    Image.fromarray(np.zeros((9, 9), np.uint8)).save(tmp_path / "11.png")  # the last one differs
    ds = load_dataset(f"folder:{tmp_path}", "all", stream=True)
    ds.batch([0, 1])
    with pytest.raises(DataError, match=r"11\.png.*--resolution"):
        ds.batch([11])
    assert load_dataset(f"folder:{tmp_path}", "all", stream=True, resolution=8).batch([11])["images"].shape == (
        1,
        1,
        8,
        8,
    )


def test_an_unreadable_image_is_skipped_with_skip_bad_and_named_without(tmp_path):
    images, _ = digit_images(6)
    for i, img in enumerate(images):
        Image.fromarray(img).save(tmp_path / f"{i}.png")
    (tmp_path / "2.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"2\.png.*--skip-bad"):
        load_dataset(f"folder:{tmp_path}", "all", stream=True).batch([2])
    skipping = load_dataset(f"folder:{tmp_path}", "all", stream=True, skip_bad=True)
    assert torch.equal(skipping.batch([2])["images"], skipping.batch([3])["images"])  # the next readable one


def test_stream_is_refused_where_it_cannot_apply(tmp_path):
    with pytest.raises(DataError, match="--stream applies to folder:, wds: and hf:"):
        load_dataset("digits", stream=True)
    images, labels = digit_images(10)
    shards = write_shards(tmp_path / "s", images, labels)
    with pytest.raises(DataError, match="always streamed"):
        load_dataset(f"wds:{shards}", stream=False)


@pytest.mark.slow
def test_the_cli_trains_on_a_streamed_folder_and_refuses_stream_for_data_in_memory(digit_folder, tmp_path):
    run = [sys.executable, "-m", "aediff.cli", "train", "ae", "--max-steps", "2", "--batch-size", "16"]
    ok = subprocess.run([*run, "--data", f"folder:{digit_folder}", "--stream", "--flip", "--out", str(tmp_path / "r")],
                        capture_output=True, text=True)  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    data = json.loads((tmp_path / "r" / "config.json").read_text())["data"]
    assert (data["stream"], data["flip"], data["crop"]) == (True, True, 1.0)
    bad = subprocess.run(
        [*run, "--data", "digits", "--stream", "--out", str(tmp_path / "b")], capture_output=True, text=True
    )
    assert bad.returncode == 1 and "--stream applies to" in bad.stderr and "Traceback" not in bad.stderr


# --- Hugging Face datasets ---------------------------------------------------------------------------------------


def test_a_hugging_face_dataset_saved_to_disk_streams_with_its_labels_and_split(tmp_path):
    datasets = pytest.importorskip("datasets")
    images, labels = digit_images(40)
    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=[f"d{i}" for i in range(10)])}
    )
    rows = {"image": [Image.fromarray(a) for a in images], "label": labels.tolist()}

    def part(rows_slice):
        return datasets.Dataset.from_dict({k: v[rows_slice] for k, v in rows.items()}, features=features)

    parts = datasets.DatasetDict({"train": part(slice(0, 30)), "test": part(slice(30, 40))})
    parts.save_to_disk(str(tmp_path / "hf"))
    train_split, test_split = (
        load_dataset(f"hf:{tmp_path / 'hf'}", "train"),
        load_dataset(f"hf:{tmp_path / 'hf'}", "test"),
    )
    assert (len(train_split), len(test_split)) == (30, 10)  # the official split
    assert train_split.class_names[3] == "d3" and test_split.batch([0])["labels"].item() == labels[30]
    assert torch.equal(test_split.batch([0])["images"][0, 0], torch.from_numpy(images[30]).float() / 127.5 - 1)


# --- the data a run records, and a resume on changed data ---------------------------------------------------------
def test_a_resume_on_changed_data_is_refused_naming_the_change(tmp_path):
    images, labels = digit_images(40)
    data = tmp_path / "d.npz"
    np.savez(data, images=images, labels=labels)
    run = tmp_path / "run"
    train("ae", run, f"npz:{data}", model=TINY, training=quick(max_steps=2), progress=False)
    recorded = json.loads((run / "config.json").read_text())["data_record"]
    assert recorded == load_dataset(f"npz:{data}", "train").fingerprint() and recorded["images"] > 0
    np.savez(data, images=images[:30], labels=labels[:30])  # ten images fewer
    with pytest.raises(ConfigError, match=r"now has \d+ training images where the run was trained on \d+"):
        train(None, run, resume=True, training={"max_steps": 3}, progress=False)
    changed = images.copy()
    changed[:, 0, 0] ^= 1  # the same count, one pixel of every image changed
    np.savez(data, images=changed, labels=labels)
    with pytest.raises(ConfigError, match=r"has the same \d+ images, but other ones.*--allow-changed-data"):
        train(None, run, resume=True, training={"max_steps": 3}, progress=False)
    assert json.loads((run / "config.json").read_text())["data_record"] == recorded  # refused: nothing written
    result = train(None, run, resume=True, training={"max_steps": 3}, progress=False, allow_changed_data=True)
    assert result.step == 3
    assert json.loads((run / "config.json").read_text())["data_record"] != recorded  # the new data, recorded
    assert train(None, run, resume=True, training={"max_steps": 4}, progress=False).step == 4  # no refusal now


def test_a_shard_read_short_on_resume_is_named_with_its_counts(tmp_path):
    images, labels = digit_images(10)
    shards = write_shards(tmp_path / "s", images, labels, per_shard=5)
    run = tmp_path / "run"
    spec = f"wds:{shards}/{{000..001}}.tar"
    train("ae", run, spec, model=TINY, training=quick(max_steps=2, batch_size=4), progress=False)
    assert json.loads((run / "config.json").read_text())["data_record"]["parts"] == {
        str(shards / "000.tar"): 5,
        str(shards / "001.tar"): 5,
    }
    write_shards(tmp_path / "s", images[:8], labels[:8], per_shard=5)  # 001.tar rewritten whole, with 3 samples
    with pytest.raises(ConfigError, match="001.tar now has 3 samples where the run read 5"):
        train(None, run, resume=True, training={"max_steps": 3}, progress=False)
