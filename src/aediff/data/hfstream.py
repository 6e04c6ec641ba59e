"""Hugging Face datasets in streaming mode (``hf:NAME``): read in order, never downloaded whole, resumed exactly.

A dataset on the Hub (LAION, ImageNet) or a local folder of data files (parquet, images) that
``datasets.load_dataset(NAME, streaming=True)`` reads is an iterable split: no random access, and no length
unless the dataset's card states it. ``ImageStream`` is one such split, with what training must know up front
(channels, resolution, classes, captions, the size when known). A folder written by ``save_to_disk`` is not
streamed this way: it is read by position (``streamed.HFReader``), and so is any ``hf:`` data with ``--no-stream``.

The order of training (``StreamPlan``, ``StreamBatches``), a function of (run seed, step, process) as in memory:

- epoch e is the split shuffled by ``IterableDataset.shuffle``: its shards in a seeded order, then a buffer of
  ``SHUFFLE_BUFFER`` examples drawn from at random, both seeded by step_seed(run seed, e, ORDER_SALT) reduced to 32
  bits; epochs follow each other without a gap (an epoch ends where its stream does, not on a batch boundary);
- global step s trains on examples [s*B, (s+1)*B) of epoch 0, epoch 1, ... one after the other; process r of W keeps
  the r-th of W equal parts of them (every process reads the whole stream and decodes its part only), so the
  global batch is the same for any number of processes;
- the step's random draws (label-caption templates, augmentation) come from ``loader.step_generator``, as in
  memory: a streamed batch is augmented exactly as the same examples held in memory would be;
- with --skip-bad an unreadable image is replaced by the next readable one of its global batch (cyclically),
  the same on every process.

Resume: a run resumed at step s reads the s*B examples before it again, without decoding them (the image
column is cast to ``Image(decode=False)``: an example is its undecoded bytes until a batch needs its pixels),
so it sees exactly the batches an uninterrupted run would. The price is that pass over the data already
trained on: reading, not decoding, but from the Hub it is a download again.

Loading ahead: one background thread at most (``stream_batches``), whatever ``--workers`` says: the stream is one
sequence, read in order, and a second reader could only split it by changing the order.
"""

from __future__ import annotations

import copy
import functools
import inspect
import itertools
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aediff.errors import DataError

from .captions import caption_templates
from .dataset import ImageDataset
from .loader import ORDER_SALT, Augmentation, step_generator, step_seed
from .streamed import ItemReader, StreamedImageDataset, decode_pil, saved_to_disk, shape_channels, shape_resolution
from .transforms import Resolution

SHUFFLE_BUFFER = 1_000  # examples (undecoded) the shuffle draws from; part of the order: a resume must keep it
HEAD_IMAGES = 10_000  # what evaluation reads of a split in streaming mode: its first images
AHEAD = 4  # batches the loading thread keeps ready
THREAD = "aediff-stream"  # the loading thread's name
CHUNK = 256  # examples decoded at a time when reading a split's first images

Row = tuple[int | None, int, dict[str, Any]]  # (epoch, or None for the stored order; index in it; the example)


@functools.cache
def _one_shard_at_a_time() -> dict[str, int]:
    """The shuffle option that fills its buffer from one shard at a time, where datasets has it (5.x): its
    default reads up to 10 shards at once on threads, and waits 5 s for them to close at every epoch's end."""
    try:
        import datasets
    except ImportError:
        return {}
    option = "max_buffer_input_shards"
    return {option: 1} if option in inspect.signature(datasets.IterableDataset.shuffle).parameters else {}


def streaming_name(spec: str, stream: bool | None) -> str | None:
    """NAME when ``spec`` is ``hf:NAME`` to open in streaming mode, else None. Streaming is the default for a
    Hub id or a folder of data files; ``stream`` False reads them by position instead (prepared in the local
    cache first), and a ``save_to_disk`` folder is always read by position."""
    kind, sep, rest = spec.strip().partition(":")
    if not sep or kind.lower() != "hf" or not rest or stream is False or saved_to_disk(rest):
        return None
    return rest


@dataclass(frozen=True)
class Columns:
    """The columns an image stream reads: the image (type ``Image``), the label and the caption (or None)."""

    image: str
    label: str | None
    caption: str | None


class ImageStream:
    """One split of a Hugging Face dataset in streaming mode (module docstring); open it with
    ``open_image_stream``, or ``load_dataset("hf:NAME", split)``.

    Attributes:
        name: the spec (``hf:NAME``); split: the dataset's split it reads; splits: all the dataset's splits.
        num_examples: the split's size when the dataset's card states it, else None.
        class_names: from a ``ClassLabel`` column; None for a plain ``label`` column or none.
        channels, resolution: of every image, 1 or 3 and (H, W); from the first example unless asked for.
    """

    def __init__(self, data: Any, name: str, split: str, splits: tuple[str, ...], columns: Columns, *,
                 class_names: list[str] | None, num_examples: int | None, channels: int | None,
                 resolution: Resolution | None, skip_bad: bool = False):  # fmt: skip
        import datasets

        self.data, self.name, self.split, self.splits, self.columns = data, name, split, splits, columns
        self.class_names, self.num_examples = class_names, num_examples
        self.wanted_channels, self.wanted_resolution, self.skip_bad = channels, resolution, skip_bad
        self.label_captions, self.caption_seed = False, None
        self.image_feature = datasets.Image()  # decodes the undecoded column, as the dataset itself would
        first = self._decoded(list(itertools.islice(self._stored(), 8)))  # the first readable image sets the shape
        self._shape = (*first.resolution, first.channels)

    channels = property(lambda self: shape_channels(self._shape))
    resolution = property(lambda self: shape_resolution(self._shape))

    @property
    def num_classes(self) -> int | None:
        """len(class_names); None without them (a plain label column's count is unknown without a full pass)."""
        return len(self.class_names) if self.class_names is not None else None

    @property
    def has_captions(self) -> bool:
        return self.columns.caption is not None or self.label_captions

    @property
    def held_out_split(self) -> str | None:
        """The split evaluation holds out: "test", else "validation", else None."""
        return next((s for s in ("test", "validation") if s in self.splits), None)

    def fingerprint(self) -> dict[str, Any]:
        """As ``ImageDataset.fingerprint``: a stream read in order cannot be hashed without reading it all, so
        only its name and size (None when unknown) are recorded."""
        return {"stream": self.name, "images": self.num_examples}

    def describe(self) -> dict[str, Any]:
        """JSON-able summary, as ImageDataset's (``size``: None when unknown)."""
        return {"name": self.name, "split": self.split, "size": self.num_examples, "channels": self.channels,
                "resolution": list(self.resolution), "num_classes": self.num_classes, "streaming": True}  # fmt: skip

    def __repr__(self) -> str:
        return f"ImageStream({self.describe()})"

    def with_label_captions(self, seed: int | None = None) -> ImageStream:
        """This stream with batches that also carry captions made from the labels, as
        ``ImageDataset.with_label_captions`` (real captions win); DataError without labels or class names."""
        if self.columns.caption is None:
            if self.columns.label is None:
                raise DataError(
                    f"{self.name} has neither captions nor labels, so it cannot make label captions; use a "
                    "dataset with a ClassLabel column or a text / caption column"
                )
            caption_templates(self.class_names)  # raises a clear DataError without class names
        stream = copy.copy(self)
        stream.label_captions, stream.caption_seed = True, seed
        return stream

    # -- reading -----------------------------------------------------------------------------------------------
    def _stored(self) -> Iterator[Row]:
        """The split's examples in stored order, undecoded."""
        for index, example in enumerate(self.data):
            yield None, index, example

    def shuffled(self, seed: int, epoch: int) -> Iterator[Row]:
        """The split's examples in the order ``seed`` (< 2**32) gives (module docstring), undecoded."""
        order = self.data.shuffle(seed=seed, buffer_size=SHUFFLE_BUFFER, **_one_shard_at_a_time())
        for index, example in enumerate(order):
            yield epoch, index, example

    def _decoded(self, rows: list[Row], shape: tuple[int, int, int] | None = None) -> StreamedImageDataset:
        """``rows`` as a dataset that decodes them (and checks, or replaces with --skip-bad, each image) by
        position in ``rows``; without ``shape`` the first readable one sets it."""
        if not rows:
            raise DataError(f"the {self.split!r} split of {self.name} holds no examples")
        return StreamedImageDataset(_Rows(self, rows), np.arange(len(rows)), channels=self.wanted_channels,
                                    resolution=self.wanted_resolution, skip_bad=self.skip_bad,
                                    label_captions=self.label_captions, caption_seed=self.caption_seed,
                                    shape=shape)  # fmt: skip

    def decoded(self, rows: list[Row]) -> StreamedImageDataset:
        """``rows`` (examples of this stream) as a dataset whose ``batch(positions)`` decodes them."""
        return self._decoded(rows, self._shape)

    def first_batches(self, n: int, batch_size: int = CHUNK) -> Iterator[dict[str, Any]]:
        """The split's first ``n`` examples (fewer when it is shorter), in stored order, as batch dicts of
        ``batch_size`` (ImageDataset.batch's: images float32 [B, C, H, W] in [-1, 1], labels, captions)."""
        for chunk in _chunks(itertools.islice(self._stored(), n), batch_size):
            yield self.decoded(chunk).batch(torch.arange(len(chunk)))

    def head(self, n: int) -> ImageDataset:
        """The split's first ``n`` examples (fewer when it is shorter), in stored order, decoded and held in
        memory: an ordinary ImageDataset, read by position (evaluation's held-out images)."""
        parts = [self.decoded(chunk) for chunk in _chunks(itertools.islice(self._stored(), n), CHUNK)]
        if not parts:
            raise DataError(f"the {self.split!r} split of {self.name} holds no examples")
        images = torch.cat([part.pixels(torch.arange(len(part))) for part in parts])
        labels = torch.cat([part.labels for part in parts]) if self.columns.label is not None else None
        captions = [c for part in parts for c in part.captions] if self.columns.caption is not None else None
        return ImageDataset(images, labels, captions, self.class_names, f"{self.name} (first {len(images)})",
                            label_captions=self.label_captions, caption_seed=self.caption_seed)  # fmt: skip


def _chunks(rows: Iterator[Row], size: int) -> Iterator[list[Row]]:
    while chunk := list(itertools.islice(rows, size)):
        yield chunk


class _Rows(ItemReader):
    """Undecoded examples of a stream as an ItemReader, so that ``StreamedImageDataset`` decodes, checks and
    replaces them (--skip-bad: the next readable one among them) as it does a stored image set."""

    def __init__(self, stream: ImageStream, rows: list[Row]):
        self.stream, self.rows, self.name, self.class_names = stream, rows, stream.name, stream.class_names
        label, caption = stream.columns.label, stream.columns.caption
        if label is not None:
            self.labels = np.array([example[label] for _, _, example in rows], dtype=np.int64)
        if caption is not None:
            self.captions = [str(example[caption]) for _, _, example in rows]

    def __len__(self) -> int:
        return len(self.rows)

    def decode(self, i, channels, resolution):
        try:
            img = self.stream.image_feature.decode_example(self.rows[i][2][self.stream.columns.image])
            return decode_pil(img, channels, resolution)
        except Exception as e:  # noqa: BLE001 -- any decoder failure means "unusable image" (files._decode_image)
            raise ValueError(str(e) or type(e).__name__) from e

    def where(self, i):
        epoch, index, _ = self.rows[i]
        order = "in stored order" if epoch is None else f"of epoch {epoch}'s order"
        return f"{self.name} ({self.stream.split} split, example {index} {order})"


def open_image_stream(name: str, split: str, *, channels: int | None, resolution: Resolution | None,
                      skip_bad: bool = False) -> ImageStream:  # fmt: skip
    """The ``split`` of the Hugging Face dataset ``name`` (a Hub id or a local folder of data files) in
    streaming mode: "train", or "test" (the dataset's test split, else its validation split).

    Raises:
        DataError: it cannot be opened, has no such split, or no column of type Image.
    """
    try:
        import datasets
    except ImportError:
        raise DataError("hf: datasets need the `datasets` package: pip install 'aediff[hub]'") from None
    if split == "all":
        raise DataError(f"hf:{name} is read in streaming mode, split by split: ask for 'train' or 'test', not 'all'")
    local = Path(name).expanduser()
    try:
        splits = datasets.load_dataset(str(local) if local.exists() else name, streaming=True)
    except (FileNotFoundError, ValueError, ConnectionError, OSError) as e:
        raise DataError(
            f"could not open hf:{name} in streaming mode ({e}); give a dataset id on the Hugging Face Hub (it needs "
            "the network), a local folder of data files or a folder written by save_to_disk; --no-stream reads "
            "a dataset in the local cache instead"
        ) from None
    names = tuple(splits)
    chosen = _split(f"hf:{name}", names, split)
    data = splits[chosen]
    features = data.features
    if features is None:
        raise DataError(f"hf:{name} does not declare its columns' types in streaming mode; read it with --no-stream")
    columns, class_names = _columns(datasets, f"hf:{name}", features)
    wanted = [c for c in (columns.image, columns.label, columns.caption) if c is not None]
    data = data.select_columns(wanted).cast_column(columns.image, datasets.Image(decode=False))
    known = (data.info.splits or {}).get(chosen)
    return ImageStream(data, f"hf:{name}", chosen, names, columns, class_names=class_names,
                       num_examples=known.num_examples if known is not None and known.num_examples else None,
                       channels=channels, resolution=resolution, skip_bad=skip_bad)  # fmt: skip


def _split(name: str, names: tuple[str, ...], split: str) -> str:
    """The dataset split that the split ``split`` ("train" or "test") reads."""
    if split == "train":
        if "train" in names or len(names) == 1:
            return "train" if "train" in names else names[0]
        raise DataError(f"{name} has no 'train' split (its splits: {', '.join(names)})")
    held_out = next((s for s in ("test", "validation") if s in names), None)
    if held_out is None:
        raise DataError(
            f"{name} has no 'test' or 'validation' split (its splits: {', '.join(names)}), so nothing is held out to "
            "evaluate on; use a dataset with one (training: drop --eval-every)"
        )
    return held_out


def _columns(datasets: Any, name: str, features: dict[str, Any]) -> tuple[Columns, list[str] | None]:
    """The image, label and caption columns (as ``streamed.HFReader`` chooses them) and the class names."""
    images = [c for c, f in features.items() if isinstance(f, datasets.Image)]
    if not images:
        raise DataError(
            f"{name} has no column of type Image (columns: {', '.join(features)}); cast one with "
            "ds.cast_column(name, datasets.Image())"
        )
    label = next((c for c, f in features.items() if isinstance(f, datasets.ClassLabel)), None)
    names = list(features[label].names) if label is not None and features[label].names else None
    label = label or next((c for c in ("label", "labels") if c in features), None)
    caption = next((c for c in ("text", "caption") if c in features), None)
    return Columns(images[0], label, caption), names


# -- training batches ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StreamPlan:
    """Which examples each optimizer step trains on, for a stream (module docstring). ``size``: examples per
    epoch when known, else None; ``batch_size``: the global batch, split evenly over ``world_size`` processes
    (this one is ``rank``)."""

    size: int | None
    batch_size: int
    seed: int
    world_size: int = 1
    rank: int = 0

    @property
    def steps_per_epoch(self) -> int | None:
        return None if self.size is None else self.size // self.batch_size

    def order_seed(self, epoch: int) -> int:
        """The seed of epoch ``epoch``'s shuffle (datasets' shuffle takes 32-bit seeds)."""
        return step_seed(self.seed, epoch, ORDER_SALT) % 2**32

    def local(self) -> torch.Tensor:
        """int64 [batch_size / world_size]: this process's positions in a global batch."""
        part = self.batch_size // self.world_size
        return torch.arange(self.rank * part, (self.rank + 1) * part)

    def generator(self, step: int) -> torch.Generator:
        """The generator of ``step``'s random draws in the data, as ``BatchPlan.generator``."""
        return step_generator(self.seed, step, self.rank)


class StreamBatches:
    """``batches(start)``: the training batches of steps start, start + 1, ... of ``stream`` (ImageDataset.batch's
    dicts, augmented as ``loader.StepBatches`` does)."""

    def __init__(self, stream: ImageStream, plan: StreamPlan, augmentation: Augmentation = Augmentation()):
        self.stream, self.plan, self.augmentation = stream, plan, augmentation

    def examples(self, skip: int) -> Iterator[Row]:
        """Epoch 0's examples, then epoch 1's, ... from position ``skip`` on; the ``skip`` before it are read but
        not decoded."""
        for epoch in itertools.count():
            seen = 0
            for row in self.stream.shuffled(self.plan.order_seed(epoch), epoch):
                seen += 1
                if skip:
                    skip -= 1
                    continue
                yield row
            if not seen:
                raise DataError(f"the {self.stream.split!r} split of {self.stream.name} holds no examples")

    def batches(self, start: int) -> Iterator[dict[str, Any]]:
        rows = self.examples(start * self.plan.batch_size)
        for step in itertools.count(start):
            global_batch = list(itertools.islice(rows, self.plan.batch_size))
            generator = self.plan.generator(step)
            out = self.stream.decoded(global_batch).batch(self.plan.local(), generator=generator)
            if self.augmentation.active:
                out["images"] = self.augmentation(out["images"], generator)
            yield out


def stream_batches(source: StreamBatches, start: int, workers: int) -> Iterator[dict[str, Any]]:
    """The batches of steps start, start + 1, ... without end, as ``loader.step_batches``. ``workers`` > 0: one
    background thread reads and decodes up to AHEAD batches ahead (one, however many are asked for: module
    docstring); 0: each is built when asked for. Close the iterator to stop the thread."""
    if workers == 0:
        yield from source.batches(start)
        return
    ready: queue.Queue[tuple[dict[str, Any] | None, BaseException | None]] = queue.Queue(maxsize=AHEAD)
    stop = threading.Event()
    thread = threading.Thread(target=_load_ahead, args=(source.batches(start), ready, stop), name=THREAD, daemon=True)
    thread.start()
    try:
        while True:
            batch, error = ready.get()
            if error is not None:
                raise error
            yield batch  # type: ignore[misc]
    finally:
        stop.set()
        thread.join(timeout=30)  # it notices within one batch; a daemon, so a stuck read never holds the exit


def _load_ahead(batches: Iterator[dict[str, Any]], ready: queue.Queue, stop: threading.Event) -> None:
    """The loading thread: ``batches`` into ``ready`` until ``stop``; an error goes to the training thread."""
    try:
        for batch in batches:
            if not _offer(ready, (batch, None), stop):
                return
    except BaseException as e:  # noqa: BLE001 -- raised again in the training thread
        _offer(ready, (None, e), stop)
    finally:
        batches.close()  # type: ignore[attr-defined]


def _offer(ready: queue.Queue, item: tuple, stop: threading.Event) -> bool:
    """Put ``item`` when there is room, checking ``stop`` while waiting; False when stopped first."""
    while not stop.is_set():
        try:
            ready.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False
