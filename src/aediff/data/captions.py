"""Captions made from class labels, so labelled sets (digits, MNIST, CIFAR-10, class folders) can train
text-conditioned models.

Each class name is put into one of several templates, drawn at random per image, so a text-conditioned
model learns the class from varied wording rather than from one fixed string. Digit sets (class names
"0".."9") mix number words and digits ("a handwritten digit seven", "the number 7, written by hand");
classes named by index (:func:`index_class_names`, for labels that came without names: "class 0", "class 1",
...) get templates that read well with such names ("an example of class 3"); other sets use generic photo
templates ("a photo of a cat").

:func:`caption_templates` exposes the training templates and, with ``held_out=True``, paraphrases that
are never drawn in training, so a benchmark can test whether a model generalises to unseen wording.

Template fields: ``{name}`` the class name (underscores as spaces), ``{a_name}`` the same with "a"/"an",
``{digit}`` and ``{word}`` the digit and its English word (digit sets only).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from aediff.errors import DataError

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
DIGIT_WORDS_BY_DIGIT = {str(d): w for d, w in enumerate(DIGIT_WORDS)}

# Training templates for digit classes: half use the word, half the digit, so both forms map to one class.
DIGIT_TEMPLATES = (
    "a handwritten digit {word}",
    "the number {digit}, written by hand",
    "a drawing of the digit {digit}",
    "handwritten {digit}",
    "the digit {word}",
    "a handwritten {word}",
    "an image of the number {digit}",
    "the number {word}",
)
# Paraphrases never drawn in training (for held-out-wording benchmarks).
DIGIT_HELD_OUT_TEMPLATES = (
    "a scan of a hand-drawn {word}",
    "someone wrote the digit {digit}",
    "a picture showing the numeral {word}",
)
# Templates for classes named by index ("class 3"): the name says nothing about what the images show.
INDEX_TEMPLATES = (
    "an image of {name}",
    "{name}",
    "an example of {name}",
    "a picture from {name}",
    "a sample of {name}",
    "an image labelled {name}",
)
INDEX_HELD_OUT_TEMPLATES = (
    "a member of {name}",
    "one image from {name}",
    "something in {name}",
)
GENERIC_TEMPLATES = (
    "a photo of {a_name}",
    "{a_name}",
    "an image of {a_name}",
    "a picture of {a_name}",
    "a small photo of {a_name}",
    "a photo of the {name}",
)
GENERIC_HELD_OUT_TEMPLATES = (
    "a snapshot showing {a_name}",
    "a low-resolution picture of the {name}",
    "there is {a_name} in this image",
)


def _check_class_names(class_names: Sequence[str] | None) -> list[str]:
    if class_names is None:
        raise DataError(
            "Label captions need class names, but this dataset has none; use a dataset with named classes "
            "(digits, mnist5k, mnist, fashion-mnist, cifar10, folder:PATH with one sub-folder per class) or "
            "an npz with a 'class_names' array."
        )
    names = [str(n) for n in class_names]
    blank = [i for i, n in enumerate(names) if not n.strip()]
    if not names or blank:
        raise DataError(f"Label captions need a non-empty name for every class; got {names!r} (blank at {blank}).")
    return names


def index_class_names(num_classes: int) -> list[str]:
    """Names for classes that have only an index: ``["class 0", ..., f"class {num_classes - 1}"]``. A dataset
    with labels but no class names gets these (``ImageDataset.classes_named_by_index`` then says so)."""
    return [f"class {k}" for k in range(int(num_classes))]


def is_index_classes(class_names: Sequence[str]) -> bool:
    """True when the class names are exactly :func:`index_class_names` of their count (index templates)."""
    return [str(n) for n in class_names] == index_class_names(len(class_names))


def is_digit_classes(class_names: Sequence[str]) -> bool:
    """True when every class name is a single digit "0".."9" (MNIST-like sets: number-word templates)."""
    return all(str(n).strip() in DIGIT_WORDS_BY_DIGIT for n in class_names)


def caption_templates(class_names: Sequence[str] | None, *, held_out: bool = False) -> list[str]:
    """The caption templates used for ``class_names``: digit templates when the classes are "0".."9", index
    templates when they are "class 0", "class 1", ..., else generic ones. ``held_out=True`` gives paraphrases
    that :func:`label_caption` never draws."""
    names = _check_class_names(class_names)
    if is_digit_classes(names):
        return list(DIGIT_HELD_OUT_TEMPLATES if held_out else DIGIT_TEMPLATES)
    if is_index_classes(names):
        return list(INDEX_HELD_OUT_TEMPLATES if held_out else INDEX_TEMPLATES)
    return list(GENERIC_HELD_OUT_TEMPLATES if held_out else GENERIC_TEMPLATES)


def fill_template(template: str, name: str) -> str:
    """One caption: ``template`` with the fields filled in for class ``name`` (see the module docstring)."""
    name = " ".join(str(name).replace("_", " ").split())  # folder names like "golden_retriever"
    article = "an" if name and name[0].lower() in "aeiou" else "a"
    fields = {"name": name, "a_name": f"{article} {name}"}
    if name in DIGIT_WORDS_BY_DIGIT:
        fields |= {"digit": name, "word": DIGIT_WORDS_BY_DIGIT[name]}
    try:
        return template.format(**fields)
    except KeyError as e:
        raise DataError(f"Caption template {template!r} uses field {e} that class {name!r} does not have.") from e


def label_captions(
    labels: Tensor | Sequence[int], class_names: Sequence[str] | None, generator: torch.Generator | None = None
) -> list[str]:
    """One caption per label, each from a template drawn uniformly at random.

    Args:
        labels: int ``[B]`` class indices in ``0..len(class_names) - 1``.
        class_names: names of the classes; digit names "0".."9" get the digit templates, index names
            ("class 0", ...) the index templates.
        generator: torch generator for the template draws; None uses torch's global RNG (which the trainer
            reseeds every step, so the draws are reproducible).

    Returns:
        B strings.
    """
    names = _check_class_names(class_names)
    labels = torch.as_tensor(labels).reshape(-1).tolist()
    bad = [int(lab) for lab in labels if not 0 <= int(lab) < len(names)]
    if bad:
        raise DataError(f"Label(s) {bad[:5]} have no class name ({len(names)} class names: {names[:10]}).")
    templates = caption_templates(names)
    picks = torch.randint(len(templates), (len(labels),), generator=generator).tolist()
    return [fill_template(templates[t], names[int(lab)]) for t, lab in zip(picks, labels, strict=True)]


def label_caption(label: int, class_names: Sequence[str] | None, generator: torch.Generator | None = None) -> str:
    """A caption for one ``label`` from a randomly drawn template (see :func:`label_captions`)."""
    return label_captions([int(label)], class_names, generator)[0]
