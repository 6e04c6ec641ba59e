"""hf: data in Hugging Face streaming mode: read in order from local parquet shards (offline, as a Hub dataset
would be streamed), batches as a function of the step, exact resume, held-out images, the spec's rules."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import aediff
from aediff.cli import _dataset
from aediff.data import DataConfig, ImageDataset, ImageStream, hfstream, load_dataset
from aediff.data.hfstream import StreamBatches, StreamPlan, stream_batches
from aediff.data.loader import Augmentation, BatchPlan, StepBatches
from aediff.data.streamed import StreamedImageDataset
from aediff.errors import ConfigError, DataError
from aediff.reports.compare import CompareConfig, run_compare
from aediff.training.train import train

datasets = pytest.importorskip("datasets")

TINY = {"channels": (8, 16), "bottleneck_dim": 8}
NAMES = [f"d{i}" for i in range(10)]
OFFLINE = {"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}


def quick(**overrides):
    base = {"batch_size": 16, "lr": 3e-3, "warmup_steps": 2, "log_every": 1, "tensorboard": False}
    return {**base, **overrides}


def digits(n: int, start: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n of sklearn's 8x8 digits from ``start`` as uint8 [n, 8, 8] and their labels."""
    ds = load_dataset("digits", "all")
    return ds.images[start : start + n, 0].numpy(), ds.labels[start : start + n].numpy()


def write_split(folder, split: str, images, labels, shards: int, captions: bool = True, class_label: bool = True):
    """``split`` as ``shards`` parquet files ``{split}-0000i-of-0000n.parquet``, the names datasets reads as a split."""
    features = {
        "image": datasets.Image(),
        "label": datasets.ClassLabel(names=NAMES) if class_label else datasets.Value("int64"),
    }
    rows = {"image": [Image.fromarray(a) for a in images], "label": [int(v) for v in labels]}
    if captions:  # unique, so a caption names its example
        features["text"], rows["text"] = datasets.Value("string"), [f"{split} {i}" for i in range(len(images))]
    table = datasets.Dataset.from_dict(rows, features=datasets.Features(features))
    folder.mkdir(parents=True, exist_ok=True)
    for shard, part in enumerate(np.array_split(np.arange(len(images)), shards)):
        table.select(part.tolist()).to_parquet(str(folder / f"{split}-{shard:05d}-of-{shards:05d}.parquet"))
    return folder


@pytest.fixture(scope="module")
def unsized(tmp_path_factory):
    """60 train examples in 3 shards and 12 test examples, labelled and captioned; no card, so no known size."""
    root = tmp_path_factory.mktemp("unsized")
    write_split(root, "train", *digits(60), shards=3)
    return write_split(root, "test", *digits(12, 100), shards=1)


CARD = """---
dataset_info:
  splits:
  - name: train
    num_bytes: 1
    num_examples: 60
configs:
- config_name: default
  data_files:
  - split: train
    path: "train-*"
---
"""


@pytest.fixture(scope="module")
def sized(tmp_path_factory):
    """60 train examples in 2 shards, labelled, no captions, no test split; a card that states the size."""
    root = write_split(tmp_path_factory.mktemp("sized"), "train", *digits(60), shards=2, captions=False)
    (root / "README.md").write_text(CARD)
    return root


def captions_of(rows) -> list[str]:
    return [example["text"] for _, _, example in rows]


def weights(path):
    return load_file(str(path))


# --- what a stream knows, and how it reads ------------------------------------------------------------------------


def test_a_streaming_split_knows_its_shape_classes_and_captions(unsized, tmp_path):
    stream = load_dataset(f"hf:{unsized}", "train")
    assert isinstance(stream, ImageStream) and stream.split == "train" and stream.num_examples is None
    assert (stream.channels, stream.resolution, stream.num_classes, stream.class_names[3]) == (1, (8, 8), 10, "d3")
    assert stream.has_captions and stream.describe()["size"] is None and stream.describe()["streaming"] is True
    images, labels = digits(60)
    head = stream.head(5)  # stored order, in memory
    assert type(head) is ImageDataset and len(head) == 5 and head.captions == [f"train {i}" for i in range(5)]
    assert torch.equal(head.images[:, 0], torch.from_numpy(images[:5])) and head.labels.tolist() == labels[:5].tolist()
    test = load_dataset(f"hf:{unsized}", "test")
    assert test.split == "test" and test.head(100).captions == [f"test {i}" for i in range(12)]
    resized = load_dataset(f"hf:{unsized}", "train", resolution=(4, 6), channels=3)
    assert (resized.channels, resolution_of(resized.head(2))) == (3, (4, 6))
    plain = write_split(tmp_path / "plain", "train", *digits(6), shards=1, captions=False, class_label=False)
    unnamed = load_dataset(f"hf:{plain}", "train")  # a plain label column: labels without names or a count
    assert unnamed.class_names is None and unnamed.num_classes is None and not unnamed.has_captions
    assert unnamed.head(6).labels.tolist() == digits(6)[1].tolist()


def resolution_of(dataset: ImageDataset) -> tuple[int, int]:
    return tuple(dataset.images.shape[2:])


def test_the_epoch_order_is_a_seeded_shuffle_of_shards_and_buffer(unsized, monkeypatch):
    monkeypatch.setattr(hfstream, "SHUFFLE_BUFFER", 4)  # smaller than a shard: the shards' order shows
    first, again = (load_dataset(f"hf:{unsized}", "train") for _ in range(2))
    order = captions_of(first.shuffled(7, 0))
    assert order == captions_of(again.shuffled(7, 0))  # the same seed: the same order, from a new stream too
    assert sorted(order) == sorted(f"train {i}" for i in range(60))  # an epoch is every example once
    assert order != [f"train {i}" for i in range(60)] and order != captions_of(first.shuffled(8, 0))
    plan = StreamPlan(None, 16, seed=3)
    assert 0 <= plan.order_seed(0) < 2**32 and plan.order_seed(0) != plan.order_seed(1)


def test_steps_take_consecutive_examples_of_one_epoch_after_another(unsized):
    stream = load_dataset(f"hf:{unsized}", "train")
    plan = StreamPlan(None, 16, seed=3)
    batches = StreamBatches(stream, plan).batches(0)
    seen = [c for _ in range(8) for c in next(batches)["captions"]]  # 128 examples: epochs 0, 1 and part of 2
    epochs = [c for e in range(3) for c in captions_of(stream.shuffled(plan.order_seed(e), e))]
    assert seen == epochs[:128] and epochs[:60] != epochs[60:120]


def test_batches_depend_on_the_seed_and_a_late_start_skips_without_decoding(unsized, monkeypatch):
    stream = load_dataset(f"hf:{unsized}", "train")
    a, b = ([next(batches) for _ in range(6)] for batches in (plan_batches(stream, 1), plan_batches(stream, 1)))
    other = next(plan_batches(stream, 2, start=5))
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x["images"], y["images"]) and x["captions"] == y["captions"]
    assert other["captions"] != a[5]["captions"]
    assert stream.data.features["image"].decode is False  # examples travel undecoded until a batch needs them
    decoded = []
    original = hfstream._Rows.decode
    monkeypatch.setattr(hfstream._Rows, "decode", lambda self, i, *args: decoded.append(i) or original(self, i, *args))
    late = next(plan_batches(stream, 1, start=5))  # 40 examples skipped
    assert len(decoded) == 8 and torch.equal(late["images"], a[5]["images"]) and late["captions"] == a[5]["captions"]


def plan_batches(stream: ImageStream, seed: int, start: int = 0):
    return StreamBatches(stream, StreamPlan(None, 8, seed=seed)).batches(start)


@dataclass(frozen=True)
class Consecutive(BatchPlan):
    """Step s takes examples [s*B, (s+1)*B) of an in-memory set: the stream's order, held in memory."""

    def indices(self, step: int) -> torch.Tensor:
        return torch.arange(step * self.batch_size, (step + 1) * self.batch_size)


def test_a_streamed_batch_is_captioned_and_augmented_as_the_same_examples_in_memory(sized):
    stream = load_dataset(f"hf:{sized}", "train").with_label_captions()
    plan = StreamPlan(stream.num_examples, 16, seed=5)
    rows = [row for e in range(2) for row in stream.shuffled(plan.order_seed(e), e)]
    pixels = [np.asarray(Image.open(io.BytesIO(example["image"]["bytes"]))) for _, _, example in rows]
    memory = ImageDataset(torch.from_numpy(np.stack(pixels))[:, None], torch.tensor([ex["label"] for *_, ex in rows]),
                          class_names=NAMES, label_captions=True)  # fmt: skip
    augmentation = Augmentation(flip=True, crop=0.5)
    expected = StepBatches(memory, Consecutive(len(memory), 16, seed=5), augmentation)
    streamed = StreamBatches(stream, plan, augmentation).batches(0)
    for step in range(7):  # step 3 spans the two epochs
        a, b = expected.batch(step), next(streamed)
        assert torch.equal(a["images"], b["images"]) and torch.equal(a["labels"], b["labels"])
        assert a["captions"] == b["captions"]


def test_processes_keep_their_part_of_the_same_global_batch(unsized):
    stream = load_dataset(f"hf:{unsized}", "train")
    whole = StreamBatches(stream, StreamPlan(None, 16, seed=4)).batches(2)
    parts = [StreamBatches(stream, StreamPlan(None, 16, seed=4, world_size=2, rank=r)).batches(2) for r in (0, 1)]
    for _ in range(3):
        full, halves = next(whole), [next(p) for p in parts]
        assert torch.equal(torch.cat([h["images"] for h in halves]), full["images"])
        assert halves[0]["captions"] + halves[1]["captions"] == full["captions"]


def test_loading_ahead_in_a_thread_gives_the_same_batches_and_stops_when_closed(unsized):
    stream = load_dataset(f"hf:{unsized}", "train")
    source = StreamBatches(stream, StreamPlan(None, 16, seed=0), Augmentation(flip=True))
    inline, ahead = stream_batches(source, 3, workers=0), stream_batches(source, 3, workers=4)
    for _ in range(5):
        a, b = next(inline), next(ahead)
        assert torch.equal(a["images"], b["images"]) and a["captions"] == b["captions"]
    assert sum(t.name == hfstream.THREAD for t in threading.enumerate()) == 1  # one thread, whatever workers says
    ahead.close()
    assert not any(t.name == hfstream.THREAD for t in threading.enumerate())
    assert DataConfig(workers=4).loader_workers(stream) == 1 and DataConfig(workers=0).loader_workers(stream) == 0


def test_an_unreadable_image_is_named_or_replaced_by_the_next_readable_one_of_its_global_batch(tmp_path):
    images = [png(np.full((8, 8), 20 * i, np.uint8)) for i in range(8)]
    images[5] = b"not an image"
    rows = {"image": [{"bytes": data, "path": None} for data in images]}
    table = datasets.Dataset.from_dict(rows, features=datasets.Features({"image": datasets.Image()}))
    table.to_parquet(str(tmp_path / "train-00000-of-00001.parquet"))
    with pytest.raises(DataError, match=r"example 5 .*--skip-bad"):
        load_dataset(f"hf:{tmp_path}", "train").head(8)
    stream = load_dataset(f"hf:{tmp_path}", "train", skip_bad=True)
    assert stream.head(8).images[:, 0, 0, 0].tolist() == [0, 20, 40, 60, 80, 120, 120, 140]
    # a seed whose order puts the bad image last in a process's part: its replacement is in the next one's
    seed = next(s for s in range(50) if bad_position(stream, StreamPlan(None, 8, seed=s)) % 2 == 1)
    whole = next(StreamBatches(stream, StreamPlan(None, 8, seed=seed)).batches(0))["images"]
    parts = [StreamBatches(stream, StreamPlan(None, 8, seed=seed, world_size=4, rank=r)).batches(0) for r in range(4)]
    assert torch.equal(torch.cat([next(p)["images"] for p in parts]), whole)  # the same replacement on every process


def bad_position(stream: ImageStream, plan: StreamPlan) -> int:
    rows = list(stream.shuffled(plan.order_seed(0), 0))
    return next(i for i, (_, _, example) in enumerate(rows) if example["image"]["bytes"] == b"not an image")


def png(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).save(out, format="PNG")
    return out.getvalue()


# --- training ---------------------------------------------------------------------------------------------------


def test_an_interrupted_streaming_run_resumes_to_the_uninterrupted_one(unsized, tmp_path):
    data = DataConfig(spec=f"hf:{unsized}", flip=True, crop=0.75)  # loaded ahead by the thread
    config = quick(max_steps=9, checkpoint_every=4)  # 60 examples, 16 a step: the resume lands in epoch 1
    train("ae", tmp_path / "full", data, model=TINY, training=config, progress=False)

    def ctrl_c_at_step_5(trainer, step, logs):
        if step == 5:
            os.kill(os.getpid(), signal.SIGINT)

    part = train("ae", tmp_path / "part", data, model=TINY, training=config, progress=False,
                 callbacks=[ctrl_c_at_step_5])  # fmt: skip
    assert part.interrupted and part.step == 5
    stored = json.loads((tmp_path / "part" / "config.json").read_text())["data"]
    assert stored["stream"] is True  # resolved when the run began: a resume streams whatever the default becomes
    assert train(None, tmp_path / "part", resume=True, progress=False).step == 9
    for name in ("model.safetensors", "ema.safetensors"):
        a, b = weights(tmp_path / "full" / name), weights(tmp_path / "part" / name)
        assert all(torch.equal(a[k], b[k]) for k in a), name


def test_epochs_are_counted_only_when_the_dataset_states_its_size(unsized, sized, tmp_path):
    with pytest.raises(ConfigError, match="--max-steps or --max-time"):
        train("ae", tmp_path / "unsized", f"hf:{unsized}", model=TINY, training=quick(epochs=1), progress=False)
    assert not (tmp_path / "unsized" / "config.json").exists()
    result = train("ae", tmp_path / "sized", f"hf:{sized}", model=TINY, training=quick(epochs=1), progress=False)
    assert result.step == 60 // 16


def test_evaluation_holds_out_the_test_splits_first_images(unsized, sized, tmp_path):
    held_out = []
    train("ae", tmp_path / "run", f"hf:{unsized}", model=TINY, progress=False,
          training=quick(max_steps=2, eval_every=2, eval_images=5),
          callbacks=[lambda trainer, step, logs: held_out.append(trainer.held_out)])  # fmt: skip
    head = load_dataset(f"hf:{unsized}", "test").head(5)
    assert type(held_out[0]) is ImageDataset and held_out[0].captions == head.captions
    assert torch.equal(held_out[0].images, head.images) and (tmp_path / "run" / "best").is_dir()
    evaluated = _dataset(aediff.load(tmp_path / "run"), None, "test")  # what `aediff reconstruct RUN` reads
    assert type(evaluated) is ImageDataset and evaluated.captions == [f"test {i}" for i in range(12)]
    with pytest.raises(ConfigError, match="save_to_disk"):  # it scores every model on whole splits
        run_compare(CompareConfig(data=f"hf:{unsized}", max_steps=1), tmp_path / "compare", progress=False)
    with pytest.raises(ConfigError, match="no 'test' or 'validation' split.*drop --eval-every"):
        train("ae", tmp_path / "none", f"hf:{sized}", model=TINY, training=quick(max_steps=2, eval_every=1),
              progress=False)  # fmt: skip


# --- which hf: data streams ---------------------------------------------------------------------------------------


def test_a_save_to_disk_folder_is_read_by_position_and_no_stream_prepares_other_data(unsized, tmp_path, monkeypatch):
    images, labels = digits(20)
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=NAMES)})
    saved = datasets.Dataset.from_dict({"image": [Image.fromarray(a) for a in images], "label": labels.tolist()},
                                       features=features)  # fmt: skip
    saved.save_to_disk(str(tmp_path / "saved"))
    for stream in (None, True, False):  # random access whatever --stream says
        assert isinstance(load_dataset(f"hf:{tmp_path / 'saved'}", "all", stream=stream), StreamedImageDataset)
    assert isinstance(load_dataset(f"hf:{unsized}", "train", stream=True), ImageStream)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "cache"))  # --no-stream prepares it here
    by_position = load_dataset(f"hf:{unsized}", "test", stream=False)
    assert isinstance(by_position, StreamedImageDataset) and len(by_position) == 12
    streamed = load_dataset(f"hf:{unsized}", "test").head(12)
    assert torch.equal(by_position.batch(torch.arange(12))["images"], streamed.batch(torch.arange(12))["images"])
    with pytest.raises(DataError, match="'train' or 'test', not 'all'"):
        load_dataset(f"hf:{unsized}", "all")
    with pytest.raises(DataError, match="could not open hf:.*in streaming mode"):
        load_dataset(f"hf:{tmp_path / 'no-such-folder'}")


@pytest.mark.slow
def test_the_cli_trains_on_a_streaming_dataset_and_refuses_epochs_without_a_size(unsized, tmp_path):
    run = [sys.executable, "-m", "aediff.cli", "train", "ae", "--data", f"hf:{unsized}", "--batch-size", "16"]
    env = {**os.environ, **OFFLINE, "COLUMNS": "80", "NO_COLOR": "1"}
    ok = subprocess.run([*run, "--max-steps", "2", "--out", str(tmp_path / "r")], capture_output=True, text=True,
                        env=env)  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert json.loads((tmp_path / "r" / "config.json").read_text())["data"]["spec"] == f"hf:{unsized}"
    bad = subprocess.run([*run, "--epochs", "1", "--out", str(tmp_path / "b")], capture_output=True, text=True, env=env)
    errors = [line for line in bad.stderr.splitlines() if line.lower().startswith("error")]
    assert bad.returncode == 1 and len(errors) == 1 and "--max-steps or --max-time" in errors[0], bad.stderr
    assert "Traceback" not in bad.stderr
