"""The in-memory dataset, the deterministic train/test split and image-output helpers."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import xxhash
from PIL import Image
from torch import Tensor

from aediff.errors import DataError
from aediff.outputs import written_whole

from .captions import caption_templates, index_class_names
from .captions import label_captions as make_label_captions


class ImageDataset(torch.utils.data.Dataset):
    """In-memory image set.

    Attributes:
        images: uint8 tensor ``[N, C, H, W]`` (C in {1, 3}), values 0..255. Kept as uint8 to save memory;
            :meth:`batch` converts to float per batch.
        labels: int64 ``[N]`` class indices, or None.
        captions: list of N strings, or None.
        class_names: names for the label indices; None only without labels (labels that came without names
            get :func:`~aediff.data.captions.index_class_names`, "class 0", "class 1", ...).
        classes_named_by_index: True when ``class_names`` were made from the label indices because the data
            has none (a report says so: captions and legends then name classes only by number).
        name: the dataset spec it came from (e.g. ``"mnist5k"``, ``"folder:/data/faces"``).
        skipped: how many unreadable files were skipped while loading (``skip_bad=True``).
        label_captions: True when :meth:`batch` makes captions from the labels (see
            :meth:`with_label_captions`); real ``captions`` always take precedence.
        caption_seed: seed of the dataset's own generator for those captions; None draws from torch's
            global RNG.
        converted: one sentence on how loading changed the images' channels to the ones asked for ("3 of 8
            images are colour, converted to greyscale ..."); "" when it changed none, or is not known (a
            dataset read from disk per batch, or derived from another).

    With a ``torch.utils.data.DataLoader`` the batched fetch :meth:`__getitems__` already returns the
    batch dict, so pass ``collate_fn=ImageDataset.collate``::

        DataLoader(ds, batch_size=64, shuffle=True, collate_fn=ImageDataset.collate)
    """

    converted: str = ""  # what a subclass that skips __init__ (a streamed dataset) says: not known

    def __init__(
        self,
        images: Tensor,
        labels: Tensor | None = None,
        captions: Sequence[str] | None = None,
        class_names: Sequence[str] | None = None,
        name: str = "dataset",
        skipped: int = 0,
        *,
        label_captions: bool = False,
        caption_seed: int | None = None,
        classes_named_by_index: bool = False,
        converted: str = "",
    ):
        images = torch.as_tensor(images)
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ValueError(
                f"images must be a uint8 tensor [N, C, H, W] with C in 1, 3; got {images.dtype} {tuple(images.shape)}"
            )
        n = images.shape[0]
        if labels is not None:
            labels = torch.as_tensor(labels).to(torch.int64)
            if labels.shape != (n,):
                raise ValueError(f"labels must have shape ({n},), got {tuple(labels.shape)}")
        if captions is not None:
            captions = [str(c) for c in captions]
            if len(captions) != n:
                raise ValueError(f"need {n} captions, got {len(captions)}")
        self.images = images.contiguous()
        self.labels = labels
        self.captions = captions
        self.class_names, self.classes_named_by_index = named_classes(labels, class_names, classes_named_by_index)
        self.name = name
        self.skipped = int(skipped)
        self.converted = converted
        self.label_captions = False
        self.caption_seed: int | None = None
        self._caption_generator: torch.Generator | None = None
        if label_captions:
            self._enable_label_captions(caption_seed)

    def _enable_label_captions(self, seed: int | None) -> None:
        if self.captions is None:  # real captions win; only caption-less sets need labels and names
            if self.labels is None:
                raise DataError(
                    f"{self.name} has neither captions nor labels, so it cannot make label captions; use a "
                    "labelled dataset or one with captions (folder metadata.jsonl, npz 'captions', emoji)."
                )
            caption_templates(self.class_names)  # raises a clear DataError without class names
        self.label_captions = True
        self.caption_seed = None if seed is None else int(seed)
        self._caption_generator = None if seed is None else torch.Generator().manual_seed(int(seed))

    def with_label_captions(self, seed: int | None = None) -> ImageDataset:
        """This dataset (sharing its tensors) with :meth:`batch` also returning ``"captions"`` made from the
        labels: per image a template drawn at random and filled with its class name (see
        :func:`aediff.data.label_captions`). A dataset that already has real captions keeps them.

        ``seed``: None draws templates from torch's global RNG (the trainer reseeds it every step, so a run
        is reproducible); an int gives the dataset its own generator, reproducible from creation.

        Raises:
            DataError: the dataset has no labels, or no class names to put into the templates.
        """
        return self._rebuild(None, label_captions=True, caption_seed=seed)

    @property
    def has_captions(self) -> bool:
        """True when :meth:`batch` returns ``"captions"`` (real ones, or made from labels)."""
        return self.captions is not None or self.label_captions

    # -- shape information ---------------------------------------------------------------------------------
    @property
    def channels(self) -> int:
        """1 (grayscale) or 3 (RGB)."""
        return int(self.images.shape[1])

    @property
    def resolution(self) -> tuple[int, int]:
        """(H, W) of every image."""
        return int(self.images.shape[2]), int(self.images.shape[3])

    @property
    def num_classes(self) -> int | None:
        """Number of classes (len(class_names), else max label + 1), or None without labels."""
        if self.labels is None:
            return None
        if self.class_names is not None:
            return len(self.class_names)
        return int(self.labels.max()) + 1 if len(self.labels) else 0

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __repr__(self) -> str:
        return f"ImageDataset({self.describe()})"

    # -- access --------------------------------------------------------------------------------------------
    def _index(self, indices: Any) -> Tensor:
        if isinstance(indices, slice):
            return torch.arange(len(self))[indices]
        idx = torch.as_tensor(np.asarray(indices) if not isinstance(indices, Tensor) else indices)
        if idx.dtype == torch.bool:
            return idx.nonzero().flatten()
        return idx.to(torch.int64).reshape(-1)

    def pixels(self, idx: Tensor) -> Tensor:
        """The images ``idx`` (int64 [B]) as uint8 ``[B, C, H, W]``: what a subclass reading lazily from disk
        (``aediff.data.streamed.StreamedImageDataset``) replaces."""
        return self.images[idx]

    def batch(self, indices: Any, generator: torch.Generator | None = None) -> dict[str, Any]:
        """Examples ``indices`` (list, array, tensor or slice) as a batch dict:

        - ``"images"``: float32 ``[B, C, H, W]`` in [-1, 1] (0 -> -1, 255 -> 1)
        - ``"labels"``: int64 ``[B]`` (only when the dataset has labels)
        - ``"captions"``: list of B strings (only when the dataset has captions, or makes them from its
          labels after :meth:`with_label_captions`: then a fresh random template per image and call, drawn
          from ``generator``, else the dataset's own generator, else torch's global RNG)
        """
        idx = self._index(indices)
        out: dict[str, Any] = {"images": self.pixels(idx).to(torch.float32).div_(127.5).sub_(1.0)}
        if self.labels is not None:
            out["labels"] = self.labels[idx]
        if self.captions is not None:
            out["captions"] = [self.captions[i] for i in idx.tolist()]
        elif self.label_captions:
            out["captions"] = make_label_captions(
                out["labels"], self.class_names, generator if generator is not None else self._caption_generator
            )
        return out

    def __getitem__(self, i: int) -> dict[str, Any]:
        """One example: ``"images"`` float32 ``[C, H, W]`` in [-1, 1], ``"labels"`` int64 scalar tensor,
        ``"captions"`` str (the last two only when present)."""
        i = int(i)
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for dataset of size {len(self)}")
        b = self.batch([i % len(self)])
        return {k: v[0] for k, v in b.items()}

    def __getitems__(self, indices: Sequence[int]) -> dict[str, Any]:
        """Batched fetch used by DataLoader (one tensor op instead of B item lookups)."""
        return self.batch(indices)

    @staticmethod
    def collate(batch: Any) -> dict[str, Any]:
        """DataLoader ``collate_fn``: passes through the dict from :meth:`__getitems__`; stacks a list of
        :meth:`__getitem__` examples (e.g. when the dataset is wrapped in ``torch.utils.data.Subset``)."""
        if isinstance(batch, dict):
            return batch
        out: dict[str, Any] = {"images": torch.stack([b["images"] for b in batch])}
        if batch and "labels" in batch[0]:
            out["labels"] = torch.stack([torch.as_tensor(b["labels"]) for b in batch])
        if batch and "captions" in batch[0]:
            out["captions"] = [b["captions"] for b in batch]
        return out

    def subset(self, indices: Any) -> ImageDataset:
        """A new ImageDataset with the examples ``indices`` (same class names, name, skipped count and
        label-caption setting; a ``caption_seed`` restarts the new dataset's generator from that seed)."""
        return self._rebuild(self._index(indices), label_captions=self.label_captions, caption_seed=self.caption_seed)

    def _rebuild(self, idx: Tensor | None, *, label_captions: bool, caption_seed: int | None) -> ImageDataset:
        """A dataset of the same kind holding the examples ``idx`` (None: all, sharing this one's tensors), with
        that label-caption setting."""
        if idx is None:
            return ImageDataset(self.images, self.labels, self.captions, self.class_names, self.name, self.skipped,
                                label_captions=label_captions, caption_seed=caption_seed,
                                classes_named_by_index=self.classes_named_by_index)  # fmt: skip
        return ImageDataset(
            self.images[idx],
            self.labels[idx] if self.labels is not None else None,
            [self.captions[i] for i in idx.tolist()] if self.captions is not None else None,
            self.class_names,
            self.name,
            self.skipped,
            label_captions=label_captions,
            caption_seed=caption_seed,
            classes_named_by_index=self.classes_named_by_index,
        )

    def fingerprint(self) -> dict[str, Any]:
        """What a run records of the data it trained on, so that a resume on other data is refused
        (``aediff.training.train``): the number of images and an XXH3-64 digest of their pixels, labels and
        captions (about 15 GB/s: milliseconds for CIFAR-10)."""
        digest = xxhash.xxh3_64(self.images.contiguous().numpy().data)
        if self.labels is not None:
            digest.update(self.labels.contiguous().numpy().data)
        if self.captions is not None:
            digest.update("\0".join(self.captions).encode("utf-8", "surrogatepass"))
        return {"images": len(self), "digest": digest.hexdigest()}

    def describe(self) -> dict[str, Any]:
        """JSON-able summary: name, size, channels, resolution [H, W], num_classes, skipped."""
        return {
            "name": self.name,
            "size": len(self),
            "channels": self.channels,
            "resolution": list(self.resolution),
            "num_classes": self.num_classes,
            "skipped": self.skipped,
        }


# More classes than any captioned set has: a label of 10**9 in a user's file must not allocate a billion names
# before the model-size guard refuses the class embedding that label implies.
MAX_INDEX_NAMES = 100_000


def named_classes(
    labels: Tensor | np.ndarray | None, class_names: Sequence[str] | None, named_by_index: bool = False
) -> tuple[list[str] | None, bool]:
    """(class names, whether they were made from the indices) for a set with these ``labels`` (int [N] >= 0, or
    None): the given names, else for labels without names "class 0" .. "class K-1", K = max label + 1.

    Call it on the whole set before splitting, so every split gets the same K (a split may lack the top
    class); ``named_by_index`` passes on a flag set that way."""
    if class_names is not None:
        return list(class_names), named_by_index
    if labels is None:
        return None, False
    count = int(labels.max()) + 1 if len(labels) else 0
    if count > MAX_INDEX_NAMES:  # not named: the model-size guard refuses the class count with its own message
        return None, False
    return index_class_names(count), True


def split_indices(
    n: int, labels: np.ndarray | None, *, seed: int, test_fraction: float
) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic split of ``range(n)`` into sorted (train, test) indices, stratified by ``labels``.

    Each class contributes ``count * test_fraction`` (rounded half up) examples to test, drawn with
    ``numpy.random.default_rng(seed)``; without labels ``n * test_fraction`` random examples.
    The two parts are disjoint and together cover all n.
    """
    rng = np.random.default_rng(seed)
    groups = [np.arange(n)] if labels is None else [np.flatnonzero(labels == c) for c in np.unique(labels)]
    test = []
    for g in groups:
        k = int(np.floor(len(g) * test_fraction + 0.5))  # round half up (Python's round() is half-even)
        test.append(rng.permutation(g)[:k])
    test_idx = np.sort(np.concatenate(test)) if test else np.zeros(0, dtype=np.int64)
    mask = np.ones(n, dtype=bool)
    mask[test_idx] = False
    return np.flatnonzero(mask), test_idx


def to_uint8(images: Tensor) -> Tensor:
    """Float images in [-1, 1] (any shape) -> uint8 0..255, clamped and rounded (inverse of ``batch()``)."""
    return ((images.detach().float().clamp(-1.0, 1.0) + 1.0) * 127.5).round_().to(torch.uint8)


def tile_images(images: Tensor, nrow: int | None = None, padding: int = 2, fill: int = 0) -> Tensor:
    """Float images ``[N, C, H, W]`` in [-1, 1] (or uint8) -> one uint8 grid ``[C, rows * (H + padding) +
    padding, cols * (W + padding) + padding]``: ``nrow`` images per row (default ceil(sqrt(N))), the
    padding between and around them filled with ``fill`` (0..255)."""
    images = torch.as_tensor(images).detach().cpu()
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4 or images.shape[1] not in (1, 3) or images.shape[0] == 0:
        raise ValueError(f"an image grid needs images [N, C, H, W] with N >= 1, C in 1, 3; got {tuple(images.shape)}")
    u8 = images if images.dtype == torch.uint8 else to_uint8(images)
    n, c, h, w = u8.shape
    cols = min(nrow or math.ceil(math.sqrt(n)), n)
    rows = math.ceil(n / cols)
    grid = torch.full((c, rows * (h + padding) + padding, cols * (w + padding) + padding), fill, dtype=torch.uint8)
    for i in range(n):
        r, col = divmod(i, cols)
        y, x = padding + r * (h + padding), padding + col * (w + padding)
        grid[:, y : y + h, x : x + w] = u8[i]
    return grid


def save_image_grid(images: Tensor, path: str | os.PathLike, nrow: int | None = None, padding: int = 2) -> None:
    """Save float images ``[N, C, H, W]`` in [-1, 1] (C in 1, 3; uint8 also accepted) as one PNG grid.

    ``nrow`` images per row (default ceil(sqrt(N))); ``padding`` black pixels between and around images,
    so the PNG is ``rows * (H + padding) + padding`` by ``nrow * (W + padding) + padding``.
    """
    grid = tile_images(images, nrow, padding)
    arr = grid.permute(1, 2, 0).numpy()
    img = Image.fromarray(arr[..., 0] if grid.shape[0] == 1 else arr)  # uint8 [H, W] -> "L", [H, W, 3] -> "RGB"
    with written_whole(path) as f:  # a failure leaves the old file or none, never a short PNG
        img.save(f, format="PNG")


def check_split(split: str) -> str:
    if split not in ("train", "test", "all"):
        raise DataError(f"Unknown split {split!r}; use 'train', 'test' or 'all'.")
    return split


def check_captions_available(dataset: ImageDataset, purpose: str = "a text-conditioned model") -> None:
    """Raise DataError now when ``dataset`` can give ``purpose`` no captions (neither real ones nor ones made
    from labels and class names), so that a plan of several models fails before its first model trains,
    not when it reaches the one that needs text."""
    if dataset.captions is not None:
        return
    try:
        dataset.with_label_captions()
    except DataError as e:
        raise DataError(f"{purpose} needs captions, which {dataset.name} cannot provide: {e}") from e
