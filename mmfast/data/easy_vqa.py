"""easy-VQA: questions about 64x64 images of one coloured shape, 13 answers, read from the
``easy-vqa`` package (V. Zhou, MIT licence, https://github.com/vzhou842/easy-VQA).

The package ships 4,000 training and 1,000 test PNG images (RGB, 64x64, one circle, rectangle or
triangle in one of 8 colours on a light background) with 38,575 and 9,673 questions, each with one
of 13 answers (:func:`answers`: the package's ``answers.txt`` order, 3 shapes, 8 colours, yes, no).
Nothing is downloaded: the files are read from the installed package (``pip install easy-vqa``),
found through ``importlib.metadata``; the package itself is never imported.

A sample is one question: ``"image"`` ``[3, S, S]`` float in [0, 1] (the question's image),
``"text"`` the question's token ids (the project's :class:`~mmfast.data.Tokenizer`, its vocabulary
built from every training question: 27 words and ``?``), ``"label"`` the answer's index. Each
question has a type (:data:`QUESTION_TYPES`), derived the way easy-VQA's generator
(``gen_data/questions.py``) writes its templates: ``"what ... color ..."`` questions ask for the
colour (answer: a colour), the other ``"what ..."`` questions for the shape (answer: a shape), and
every other question (``"is there ..."``, ``"does the image ..."``, ``"is no ..."``) is a yes/no
question. ``dataset.extras`` holds per sample ``"questions"``, ``"answers"``,
``"question_types"`` (names), ``"question_type_ids"`` (int64 ``[N]``, indices into
:data:`QUESTION_TYPES`) and ``"image_ids"`` (the image's id in its easy-VQA split).

Splits: ``test`` is easy-VQA's test set (its first ``num_test`` images by id, all their
questions); ``val`` and ``train`` are disjoint sets of easy-VQA's training images, drawn by
``seed`` (``num_val`` images, then ``num_train`` of the rest), each with all its questions, so no
image is shared between splits. ``source_ids["image"]`` numbers the images of both easy-VQA splits
(test ids offset by :data:`TEST_ID_OFFSET`), ``source_ids["text"]`` the questions likewise.

Options:
    num_train: training images (default 3600, every training image not in val).
    num_val: validation images held out of easy-VQA's training set (default 400).
    num_test: test images (default 1000, the whole test set).
    image_size: resize the images to this side (bilinear, antialiased); default 32 (64: as shipped).
"""

from __future__ import annotations

import functools
import importlib.metadata
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmfast.data.dataset import MultimodalDataset
from mmfast.data.image import resize_image
from mmfast.data.info import DatasetInfo
from mmfast.data.splits import check_split
from mmfast.data.text import Tokenizer

NAME = "easy-vqa"
DISTRIBUTION = "easy-vqa"
DATA_FOLDER = "easy_vqa/data"
NUM_TRAIN_IMAGES, NUM_TEST_IMAGES = 4000, 1000
NATIVE_SIZE = 64
QUESTION_TYPES = ("shape", "color", "yes_no")
# Image (and question) source ids of the test set start here, after the training set's.
TEST_ID_OFFSET = 1_000_000
# Images are resized to 32 x 32 by default: a quarter of the CNN's work, and the shapes stay clear.
DEFAULT_IMAGE_SIZE = 32
_DEFAULTS: dict[str, Any] = {
    "num_train": 3600,
    "num_val": 400,
    "num_test": 1000,
    "image_size": DEFAULT_IMAGE_SIZE,
}


def question_type(question: str) -> str:
    """``"color"``, ``"shape"`` or ``"yes_no"``: what easy-VQA's template of ``question`` asks.

    The generator's open questions all start with ``what``: four templates ask for the shape
    (``what shape is in the image?``, ``what is the <colour> shape?``...) and four for the colour,
    each of which names the word ``color`` (``what color is the <shape>?``, ``what is the color of
    the shape?``...). Every other template is a yes/no question."""
    words = question.lower().split()
    if not words or words[0] != "what":
        return "yes_no"
    return "color" if any(w.strip("?") == "color" for w in words) else "shape"


def data_folder() -> Path:
    """The ``easy_vqa/data`` folder of the installed ``easy-vqa`` package."""
    try:
        distribution = importlib.metadata.distribution(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError as error:
        raise ImportError(
            f"{NAME}: the easy-VQA data ships in the {DISTRIBUTION!r} package; install it with "
            f"`pip install {DISTRIBUTION}` (or `pip install mmfast[train]`)"
        ) from error
    folder = Path(str(distribution.locate_file(DATA_FOLDER)))
    if not (folder / "answers.txt").is_file():
        raise ImportError(f"{NAME}: no easy-VQA data at {folder} (a broken {DISTRIBUTION!r} install?)")
    return folder


@functools.lru_cache(maxsize=1)
def answers() -> tuple[str, ...]:
    """The 13 answers, in the package's ``answers.txt`` order (the label of answer ``i`` is ``i``)."""
    lines = (data_folder() / "answers.txt").read_text(encoding="utf-8").splitlines()
    return tuple(line.strip() for line in lines if line.strip())


@functools.lru_cache(maxsize=2)
def _questions(source: str) -> tuple[tuple[str, ...], tuple[str, ...], np.ndarray]:
    """Texts, answers and image ids of easy-VQA's ``source`` split (``"train"`` or ``"test"``)."""
    records = json.loads((data_folder() / source / "questions.json").read_text(encoding="utf-8"))
    texts = tuple(str(r[0]) for r in records)
    replies = tuple(str(r[1]) for r in records)
    return texts, replies, np.array([int(r[2]) for r in records], dtype=np.int64)


@functools.lru_cache(maxsize=1)
def tokenizer() -> Tokenizer:
    """The question tokenizer: every word of easy-VQA's training questions (27 words and ``?``)."""
    return Tokenizer.from_corpus(_questions("train")[0])


@functools.lru_cache(maxsize=1)
def max_question_tokens() -> int:
    vocabulary = tokenizer()
    return max(len(vocabulary.tokenize(q)) for source in ("train", "test") for q in _questions(source)[0])


def check_options(options: dict[str, Any]) -> dict[str, Any]:
    """The options with defaults filled in; unknown or invalid ones raise ``ValueError``."""
    unknown = set(options) - set(_DEFAULTS)
    if unknown:
        raise ValueError(f"{NAME}: unknown option(s) {sorted(unknown)}; expected some of {sorted(_DEFAULTS)}")
    resolved = {**_DEFAULTS, **options}
    for key in ("num_train", "num_val", "num_test", "image_size"):
        value = resolved[key]
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{key}: expected a positive int, got {value!r}")
    if resolved["num_train"] + resolved["num_val"] > NUM_TRAIN_IMAGES:
        raise ValueError(
            f"num_train, num_val: at most {NUM_TRAIN_IMAGES} training images together, got "
            f"{resolved['num_train']} + {resolved['num_val']}"
        )
    if resolved["num_test"] > NUM_TEST_IMAGES:
        raise ValueError(f"num_test: at most {NUM_TEST_IMAGES} test images, got {resolved['num_test']}")
    return resolved


def info(**options: Any) -> DatasetInfo:
    """The :class:`DatasetInfo` of easy-VQA with these options (reads the questions, no image)."""
    resolved = check_options(options)
    side = resolved["image_size"]
    names = answers()
    return DatasetInfo(
        name=NAME,
        modalities=("image", "text"),
        num_classes=len(names),
        class_names=names,
        image_shape=(3, side, side),
        vocab_size=tokenizer().vocab_size,
        pad_id=Tokenizer.pad_id,
        max_text_length=max_question_tokens(),
        options=resolved,
    )


def split_image_ids(split: str, seed: int = 0, **options: Any) -> np.ndarray:
    """The easy-VQA image ids (in their own split) of ``split``, sorted."""
    check_split(split)
    resolved = check_options(options)
    if split == "test":
        return np.arange(resolved["num_test"], dtype=np.int64)
    order = np.random.default_rng([int(seed), 41]).permutation(NUM_TRAIN_IMAGES)
    num_val = resolved["num_val"]
    chosen = order[:num_val] if split == "val" else order[num_val : num_val + resolved["num_train"]]
    return np.sort(chosen)


def _encoder():
    vocabulary = tokenizer()
    return functools.lru_cache(maxsize=None)(vocabulary.encode)


class _ImagesByQuestion:
    """The image of each question, without a copy per question: ``images[image_index[i]]``."""

    def __init__(self, images: torch.Tensor, image_index: torch.Tensor) -> None:
        self.images = images
        self.image_index = image_index

    def __len__(self) -> int:
        return len(self.image_index)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.images[self.image_index[index]]


@functools.lru_cache(maxsize=4)
def _images(source: str, ids: tuple[int, ...], side: int) -> torch.Tensor:
    """Float images ``[len(ids), 3, side, side]`` in [0, 1] of easy-VQA's ``source`` split."""
    from PIL import Image  # Pillow comes with matplotlib (the `train` extra)

    folder = data_folder() / source / "images"
    pixels = np.stack([np.asarray(Image.open(folder / f"{i}.png").convert("RGB")) for i in ids])
    images = torch.from_numpy(pixels.transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255.0))
    if side != images.shape[-1]:
        images = resize_image(images, side).clamp_(0.0, 1.0).contiguous()
    return images


def load(split: str, seed: int = 0, **options: Any) -> MultimodalDataset:
    """The ``split`` (``train``, ``val`` or ``test``) of easy-VQA; see the module docstring."""
    check_split(split)
    resolved = check_options(options)
    source = "test" if split == "test" else "train"
    ids = split_image_ids(split, seed, **resolved)
    texts, replies, image_ids = _questions(source)
    chosen = np.flatnonzero(np.isin(image_ids, ids))
    position = {int(image_id): k for k, image_id in enumerate(ids)}
    image_index = torch.tensor([position[int(image_ids[q])] for q in chosen], dtype=torch.int64)
    images = _images(source, tuple(int(i) for i in ids), resolved["image_size"])
    label_of = {name: i for i, name in enumerate(answers())}
    questions = [texts[q] for q in chosen]
    # The questions come from a few hundred templates: each distinct text is encoded once.
    encoded = _encoder()
    kinds = [question_type(t) for t in questions]
    offset = TEST_ID_OFFSET if source == "test" else 0
    return MultimodalDataset(
        {"image": _ImagesByQuestion(images, image_index), "text": [encoded(t) for t in questions]},
        torch.tensor([label_of[replies[q]] for q in chosen], dtype=torch.int64),
        info(**resolved),
        source_ids={
            "image": torch.from_numpy(image_ids[chosen] + offset),
            "text": torch.from_numpy(chosen.astype(np.int64) + offset),
        },
        extras={
            "questions": questions,
            "answers": [replies[q] for q in chosen],
            "question_types": kinds,
            "question_type_ids": torch.tensor([QUESTION_TYPES.index(k) for k in kinds], dtype=torch.int64),
            "image_ids": torch.from_numpy(image_ids[chosen].copy()),
        },
    )
