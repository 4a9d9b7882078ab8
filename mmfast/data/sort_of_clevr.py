"""Sort-of-CLEVR: relational and non-relational questions about generated images of six coloured
squares and circles, 10 answers; the recipe of the Relation Networks paper (A. Santoro et al., "A
simple neural network module for relational reasoning", NeurIPS 2017, arXiv:1706.01427).

Each image is 75 x 75 RGB on a white background with :data:`NUM_OBJECTS` objects, one of each of
the colours :data:`COLOURS`, each a square (11 x 11 pixels) or a circle (radius 5) with equal
probability, centred uniformly at random so that no two objects' 11 x 11 boxes touch (and none is
cut by the border). Each image has 10 non-relational and 10 relational questions, each about the
object of a colour drawn uniformly, of a subtype drawn uniformly (:data:`QUESTION_SUBTYPES`):

- non-relational: ``shape`` (what shape is the X object?), ``horizontal`` (is it on the left?),
  ``vertical`` (is it at the top?);
- relational: ``closest`` / ``furthest`` (the shape of the object closest to / furthest from X, by
  the distance between centres), ``count`` (how many objects have X's shape, X included: 1 to 6).

The 10 answers (:data:`ANSWERS`) are the paper's: ``yes``, ``no`` (left / right and top / bottom
as yes / no), ``square``, ``circle`` and the counts ``1`` to ``6``. So that every answer is
defined, no object is centred on the middle row or column, and a layout in which some object has
two others at the same (smallest or largest) distance is drawn again.

A question comes both as text from a template (:func:`question_text`, tokenized by the project's
:class:`~mmfast.data.Tokenizer` over every template, like easy-VQA's) and as the paper's 11-bit
encoding (:func:`question_code`: a one-hot colour (6), a one-hot kind, non-relational /
relational (2), a one-hot subtype within the kind (3)).

A sample is one question: ``"image"`` ``[3, S, S]`` float in [0, 1], ``"text"`` the question's
token ids, ``"label"`` the answer's index. ``dataset.extras`` holds per sample ``"questions"``,
``"answers"``, ``"question_types"`` (``relational`` / ``non_relational``),
``"question_type_ids"`` (indices into :data:`QUESTION_TYPES`), ``"question_subtypes"`` (names
from :data:`QUESTION_SUBTYPES`), ``"question_codes"`` (float32 ``[N, 11]``) and ``"image_ids"``.

Generation is seeded: image ``i`` of part ``train`` or ``test`` is drawn by
``numpy.random.default_rng([seed, part, i])``, so a smaller set is a prefix of a larger one, and a
test set generated with another seed is a fresh one (``mmfast evaluate --data-seed``). The
``train`` part holds ``num_val + num_train`` images (9,800 by default, as in the paper): the first
``num_val`` are the validation split, the rest the training split; the ``test`` part holds
``num_test`` (200). The generated images, objects and questions are cached on disk as ``.npz``
(:func:`cache_dir`), one file per seed, part and number of images, written atomically.

Options:
    num_train: training images (default 9600).
    num_val: validation images (default 200; with the training images, the paper's 9,800).
    num_test: test images (default 200, as in the paper).
    image_size: resize the images to this side (bilinear, antialiased); default 75, as drawn.
    flips: the training split flips each image left-right and top-bottom, each with probability
        1/2, every time it is read (default False; the validation and test splits never). The
        answers follow: a left-right flip swaps yes and no for the "on the left" questions, a
        top-bottom flip for the "at the top" ones; every other answer is unchanged (shapes are
        symmetric, distances and counts do not change). Four times the layouts from the same
        images: a lower validation loss at the end of the default 10 epochs, but slower learning
        and no better relational accuracy over three training seeds (README, Sort-of-CLEVR).
        The flips are drawn from torch's global random generator (seeded by the trainer and
        saved in its checkpoints); ``dataset.extras`` describe the unflipped samples.
"""

from __future__ import annotations

import functools
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmfast.data.dataset import MultimodalDataset
from mmfast.data.image import resize_image
from mmfast.data.info import DatasetInfo
from mmfast.data.splits import check_split
from mmfast.data.text import Tokenizer

NAME = "sort-of-clevr"
IMAGE_SIZE = 75
# Half the side of a square and the radius of a circle (the paper's reimplementations use 5).
OBJECT_SIZE = 5
NUM_OBJECTS = 6
COLOURS = ("red", "green", "blue", "orange", "grey", "yellow")
RGB = ((255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 156, 0), (128, 128, 128), (255, 255, 0))
SHAPES = ("square", "circle")
ANSWERS = ("yes", "no", "square", "circle", "1", "2", "3", "4", "5", "6")
QUESTION_TYPES = ("non_relational", "relational")
QUESTION_SUBTYPES = ("shape", "horizontal", "vertical", "closest", "furthest", "count")
QUESTIONS_PER_TYPE = 10
CODE_SIZE = len(COLOURS) + len(QUESTION_TYPES) + 3
TEMPLATES = (
    "what shape is the {} object?",
    "is the {} object on the left?",
    "is the {} object at the top?",
    "what shape is the object closest to the {} object?",
    "what shape is the object furthest from the {} object?",
    "how many objects have the shape of the {} object?",
)
# Parts of the generated data; each draws its images from its own stream of the seed.
PARTS = {"train": 0, "test": 1}
# Bumped whenever the generator changes what it draws, so that stale caches are not read.
GENERATOR_VERSION = 1
CACHE_ENV = "MMFAST_CACHE_DIR"
# The evaluation test set can be generated afresh with another seed (mmfast evaluate --data-seed).
SEEDED_TEST_SET = True
_DEFAULTS: dict[str, Any] = {
    "num_train": 9600,
    "num_val": 200,
    "num_test": 200,
    "image_size": IMAGE_SIZE,
    "flips": False,
}
_MIDDLE = IMAGE_SIZE // 2
_YES, _NO = ANSWERS.index("yes"), ANSWERS.index("no")
_HORIZONTAL, _VERTICAL = QUESTION_SUBTYPES.index("horizontal"), QUESTION_SUBTYPES.index("vertical")


@dataclass(frozen=True)
class Scenes:
    """Generated images with their objects and questions (``N`` images, ``Q = 20`` questions each).

    Attributes:
        images: uint8 ``[N, 75, 75, 3]`` RGB.
        centres: int64 ``[N, 6, 2]``: ``(x, y)`` pixel of each object's centre, object ``k`` of
            colour ``COLOURS[k]`` (``x`` the column, ``y`` the row, from the top left).
        shapes: int64 ``[N, 6]``: index into :data:`SHAPES` of each object.
        colours: int64 ``[N, Q]``: the colour each question asks about.
        subtypes: int64 ``[N, Q]``: index into :data:`QUESTION_SUBTYPES` (the first 10 of each
            image non-relational, the last 10 relational).
        answers: int64 ``[N, Q]``: index into :data:`ANSWERS`.
    """

    images: np.ndarray
    centres: np.ndarray
    shapes: np.ndarray
    colours: np.ndarray
    subtypes: np.ndarray
    answers: np.ndarray

    def __len__(self) -> int:
        return len(self.images)


def question_text(colour: int, subtype: int) -> str:
    """The question of ``subtype`` (index into :data:`QUESTION_SUBTYPES`) about colour ``colour``."""
    return TEMPLATES[subtype].format(COLOURS[colour])


def question_type(subtype: int) -> str:
    """``"non_relational"`` for subtypes 0-2, ``"relational"`` for 3-5."""
    return QUESTION_TYPES[subtype // 3]


def question_code(colour: int, subtype: int) -> np.ndarray:
    """The paper's 11-bit encoding, float32 ``[11]``: one-hot colour, one-hot kind
    (non-relational, relational), one-hot subtype within the kind."""
    code = np.zeros(CODE_SIZE, dtype=np.float32)
    code[colour] = 1.0
    code[len(COLOURS) + subtype // 3] = 1.0
    code[len(COLOURS) + len(QUESTION_TYPES) + subtype % 3] = 1.0
    return code


def answer(centres: np.ndarray, shapes: np.ndarray, colour: int, subtype: int) -> int:
    """The answer (index into :data:`ANSWERS`) of question ``subtype`` about object ``colour`` of
    the scene ``centres`` ``[6, 2]`` (x, y), ``shapes`` ``[6]``."""
    x, y = (int(v) for v in centres[colour])
    if subtype == 0:
        return ANSWERS.index(SHAPES[int(shapes[colour])])
    if subtype == 1:
        return _YES if x < _MIDDLE else _NO
    if subtype == 2:
        return _YES if y < _MIDDLE else _NO
    if subtype == 5:
        return ANSWERS.index(str(int((shapes == shapes[colour]).sum())))
    distances = ((centres - centres[colour]) ** 2).sum(axis=1).astype(np.float64)
    if subtype == 3:
        distances[colour] = np.inf
        return ANSWERS.index(SHAPES[int(shapes[int(distances.argmin())])])
    return ANSWERS.index(SHAPES[int(shapes[int(distances.argmax())])])


@functools.lru_cache(maxsize=1)
def _masks() -> np.ndarray:
    """bool ``[2, 11, 11]``: the pixels of a square and of a circle around their centre."""
    offsets = np.arange(-OBJECT_SIZE, OBJECT_SIZE + 1)
    square = np.ones((offsets.size, offsets.size), dtype=bool)
    # Within radius + 1/2 of the centre: a round disk 11 pixels across, without single-pixel tips.
    circle = offsets[:, None] ** 2 + offsets[None, :] ** 2 < (OBJECT_SIZE + 0.5) ** 2
    return np.stack([square, circle])


def _unambiguous(centres: np.ndarray) -> bool:
    """No object has two others at its smallest or at its largest distance (squared, exact)."""
    squared = ((centres[:, None, :] - centres[None, :, :]) ** 2).sum(axis=-1)
    for k in range(len(centres)):
        others = np.delete(squared[k], k)
        if (others == others.min()).sum() > 1 or (others == others.max()).sum() > 1:
            return False
    return True


def _layout(rng: np.random.Generator) -> np.ndarray:
    """Centres ``[6, 2]``: boxes apart by at least one pixel, off the middle row and column,
    distances unambiguous (rejection sampling; a layout is almost always accepted at once)."""
    low, high = OBJECT_SIZE, IMAGE_SIZE - OBJECT_SIZE  # the box stays inside the image
    gap = 2 * OBJECT_SIZE + 2  # centres this far apart (in x or y) leave a pixel between boxes
    while True:
        centres: list[np.ndarray] = []
        while len(centres) < NUM_OBJECTS:
            centre = rng.integers(low, high, size=2)
            if _MIDDLE in centre:
                continue
            if all(np.abs(centre - other).max() >= gap for other in centres):
                centres.append(centre)
        layout = np.stack(centres).astype(np.int64)
        if _unambiguous(layout):
            return layout


def generate_scene(rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """One image and its questions: ``image`` uint8 ``[75, 75, 3]``, ``centres`` ``[6, 2]``,
    ``shapes`` ``[6]``, ``colours``, ``subtypes`` and ``answers`` ``[20]``."""
    centres = _layout(rng)
    shapes = rng.integers(0, len(SHAPES), size=NUM_OBJECTS)
    image = np.full((IMAGE_SIZE, IMAGE_SIZE, 3), 255, dtype=np.uint8)
    masks = _masks()
    for k, ((x, y), shape) in enumerate(zip(centres, shapes)):
        patch = image[y - OBJECT_SIZE : y + OBJECT_SIZE + 1, x - OBJECT_SIZE : x + OBJECT_SIZE + 1]
        patch[masks[shape]] = RGB[k]
    colours = rng.integers(0, NUM_OBJECTS, size=2 * QUESTIONS_PER_TYPE)
    subtypes = np.concatenate(
        [rng.integers(0, 3, size=QUESTIONS_PER_TYPE), rng.integers(3, 6, size=QUESTIONS_PER_TYPE)]
    )
    answers = np.array([answer(centres, shapes, c, s) for c, s in zip(colours, subtypes)])
    return image, centres, shapes.astype(np.int64), colours, subtypes, answers.astype(np.int64)


def generate(count: int, seed: int = 0, part: str = "train") -> Scenes:
    """``count`` scenes of ``part`` (``"train"`` or ``"test"``), image ``i`` drawn by
    ``numpy.random.default_rng([seed, PARTS[part], i])`` (no cache; see :func:`scenes`)."""
    if part not in PARTS:
        raise ValueError(f"part: expected one of {', '.join(PARTS)}, got {part!r}")
    if count < 1:
        raise ValueError(f"count: expected a positive number of images, got {count}")
    drawn = [generate_scene(np.random.default_rng([int(seed), PARTS[part], i])) for i in range(count)]
    return Scenes(*(np.stack(field) for field in zip(*drawn)))


def cache_dir() -> Path:
    """Where generated scenes are cached: ``$MMFAST_CACHE_DIR/sort-of-clevr``, by default
    ``~/.cache/mmfast/sort-of-clevr``."""
    root = os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "mmfast"
    return Path(root) / NAME


def cache_path(count: int, seed: int, part: str) -> Path:
    """The cache file of :func:`generate`'s ``(count, seed, part)``."""
    return cache_dir() / f"v{GENERATOR_VERSION}-seed{int(seed)}-{part}-{int(count)}.npz"


_FIELDS = ("images", "centres", "shapes", "colours", "subtypes", "answers")


def write_cache(path: Path, data: Scenes) -> None:
    """Write ``data`` to ``path`` atomically: a temporary file in the same folder, then
    ``os.replace``, so that a reader never sees a half-written file (and an interrupted write
    leaves none)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=path.stem + ".", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            np.savez_compressed(file, **{name: getattr(data, name) for name in _FIELDS})
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def read_cache(path: Path) -> Scenes | None:
    """The scenes cached at ``path``, or None when it is missing or unreadable."""
    try:
        with np.load(path) as stored:
            return Scenes(*(stored[name] for name in _FIELDS))
    except (OSError, KeyError, ValueError, EOFError):
        return None


@functools.lru_cache(maxsize=4)
def scenes(count: int, seed: int = 0, part: str = "train") -> Scenes:
    """:func:`generate`'s scenes, read from the disk cache when there, else generated and cached."""
    path = cache_path(count, seed, part)
    cached = read_cache(path) if path.is_file() else None
    if cached is not None and len(cached) == count:
        return cached
    data = generate(count, seed, part)
    try:
        write_cache(path, data)
    except OSError:
        pass  # a read-only home: the data is the same, only regenerated next time
    return data


@functools.lru_cache(maxsize=1)
def tokenizer() -> Tokenizer:
    """The question tokenizer: every word of every template with every colour."""
    return Tokenizer.from_corpus(question_text(c, s) for c in range(len(COLOURS)) for s in range(6))


def max_question_tokens() -> int:
    vocabulary = tokenizer()
    return max(len(vocabulary.tokenize(question_text(c, s))) for c in range(len(COLOURS)) for s in range(6))


def check_options(options: dict[str, Any]) -> dict[str, Any]:
    """The options with defaults filled in; unknown or invalid ones raise ``ValueError``."""
    unknown = set(options) - set(_DEFAULTS)
    if unknown:
        raise ValueError(f"{NAME}: unknown option(s) {sorted(unknown)}; expected some of {sorted(_DEFAULTS)}")
    resolved = {**_DEFAULTS, **options}
    for key in _DEFAULTS:
        value = resolved[key]
        if key == "flips":
            if not isinstance(value, bool):
                raise ValueError(f"flips: expected True or False, got {value!r}")
        elif not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{key}: expected a positive int, got {value!r}")
    return resolved


def info(**options: Any) -> DatasetInfo:
    """The :class:`DatasetInfo` of Sort-of-CLEVR with these options (generates nothing)."""
    resolved = check_options(options)
    side = resolved["image_size"]
    return DatasetInfo(
        name=NAME,
        modalities=("image", "text"),
        num_classes=len(ANSWERS),
        class_names=ANSWERS,
        image_shape=(3, side, side),
        vocab_size=tokenizer().vocab_size,
        pad_id=Tokenizer.pad_id,
        max_text_length=max_question_tokens(),
        options=resolved,
    )


class _ImagesByQuestion:
    """The image of each question as float in [0, 1], from uint8 images shared by the image's
    questions (a float copy per question would take 20 times the memory)."""

    def __init__(self, images: torch.Tensor, image_index: torch.Tensor) -> None:
        self.images = images
        self.image_index = image_index

    def __len__(self) -> int:
        return len(self.image_index)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.images[self.image_index[index]].float().div_(255.0)


class _RandomlyFlipped(MultimodalDataset):
    """A training split whose samples are flipped at random each time they are read (the
    ``flips`` option): the image left-right and top-bottom, each with probability 1/2, and the
    answer of the questions whose answer a flip changes."""

    def __init__(self, *args: Any, subtypes: torch.Tensor, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.subtypes = subtypes

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        sample = super().__getitem__(index)
        subtype = int(self.subtypes[index])
        # Image dims (-1: columns, left-right; -2: rows, top-bottom) and the subtype each one answers.
        for dim, asks_where in ((-1, _HORIZONTAL), (-2, _VERTICAL)):
            if torch.randint(0, 2, ()).item():
                sample["image"] = sample["image"].flip(dim)
                if subtype == asks_where:
                    sample["label"] = torch.tensor(_NO if int(sample["label"]) == _YES else _YES)
        return sample


def _image_tensor(images: np.ndarray, side: int) -> torch.Tensor:
    """uint8 ``[N, 3, side, side]`` of uint8 ``[N, 75, 75, 3]`` images."""
    pixels = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
    if side == IMAGE_SIZE:
        return pixels
    resized = resize_image(pixels.float() / 255.0, side).clamp_(0.0, 1.0)
    return (resized * 255.0).round_().to(torch.uint8)


def load(split: str, seed: int = 0, **options: Any) -> MultimodalDataset:
    """The ``split`` (``train``, ``val`` or ``test``) of Sort-of-CLEVR generated with ``seed``;
    see the module docstring."""
    check_split(split)
    resolved = check_options(options)
    num_val = resolved["num_val"]
    if split == "test":
        data = scenes(resolved["num_test"], seed, "test")
        chosen = range(resolved["num_test"])
    else:
        data = scenes(num_val + resolved["num_train"], seed, "train")
        chosen = range(num_val) if split == "val" else range(num_val, num_val + resolved["num_train"])
    ids = np.arange(chosen.start, chosen.stop)
    images = _image_tensor(data.images[ids], resolved["image_size"])
    per_image = data.subtypes.shape[1]
    colours = data.colours[ids].reshape(-1)
    subtypes = data.subtypes[ids].reshape(-1)
    labels = torch.from_numpy(data.answers[ids].reshape(-1).copy())
    image_index = torch.arange(len(ids)).repeat_interleave(per_image)
    vocabulary = tokenizer()
    encoded = {(c, s): vocabulary.encode(question_text(c, s)) for c in range(NUM_OBJECTS) for s in range(6)}
    pairs = list(zip(colours.tolist(), subtypes.tolist()))
    kinds = [question_type(s) for s in subtypes.tolist()]
    image_ids = torch.from_numpy(ids).repeat_interleave(per_image)
    # Test images are numbered after every training image of the seed's stream.
    offset = 1_000_000 if split == "test" else 0
    flipped = split == "train" and resolved["flips"]
    extra = {"subtypes": torch.from_numpy(subtypes.copy())} if flipped else {}
    return (_RandomlyFlipped if flipped else MultimodalDataset)(
        {"image": _ImagesByQuestion(images, image_index), "text": [encoded[p] for p in pairs]},
        labels,
        info(**resolved),
        source_ids={
            "image": image_ids + offset,
            "text": (image_ids + offset) * per_image + torch.arange(per_image).repeat(len(ids)),
        },
        extras={
            "questions": [question_text(c, s) for c, s in pairs],
            "answers": [ANSWERS[a] for a in labels.tolist()],
            "question_types": kinds,
            "question_type_ids": torch.tensor([QUESTION_TYPES.index(k) for k in kinds], dtype=torch.int64),
            "question_subtypes": [QUESTION_SUBTYPES[s] for s in subtypes.tolist()],
            "question_codes": torch.from_numpy(np.stack([question_code(c, s) for c, s in pairs])),
            "image_ids": image_ids,
        },
        **extra,
    )
