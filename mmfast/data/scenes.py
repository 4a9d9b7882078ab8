"""Scenes: generated RGB images of 3 to 5 coloured shapes on a 3 x 3 grid, each with a caption that
names every object, for image-text matching and cross-modal retrieval.

Every scene places 3 to 5 objects in distinct cells of a 3 x 3 grid; each object has one of
:data:`COLOURS` and one of :data:`SHAPES`. The image ``[3, S, S]`` (values in [0, 1]) is drawn with
numpy: a dark background with a little noise, each object filled with its colour (slightly
jittered) at a random size and offset inside its cell, edges anti-aliased by 2 x 2 supersampling.
The caption names the objects in reading order (top row left to right, then the middle and bottom
rows) with their colour, shape and place, e.g. ``"a red circle at the top left, a white triangle in
the center and a blue square at the bottom right"``; it is the ``"text"`` of the sample, encoded
with :func:`tokenizer` (a fixed vocabulary: the generator's lexicon). A caption determines its
scene and a scene its caption.

No two scenes of the whole data set are the same (nor, hence, two captions): the splits are
disjoint and every test caption has exactly one matching image. The test split is drawn first,
then validation, then training (each rejecting scenes drawn before), each from its own stream of
``seed``: the test gallery does not depend on ``num_train`` or ``num_val``, so a smaller training
set is ranked on the same gallery. The label is the number of objects minus 3 (classes
``"3 objects"``, ``"4 objects"``, ``"5 objects"``), so the set also serves a counting
classification. ``dataset.extras`` holds ``"captions"`` (the strings) and ``"objects"`` (per
sample, a tuple of :class:`SceneObject` in caption order).

Options:
    num_train, num_val, num_test: scenes per split (defaults 5000, 1000, 1000).
    image_size: side ``S`` of the images, at least 12 (default 32).
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import numpy as np
import torch

from mmfast.data.dataset import MultimodalDataset
from mmfast.data.info import DatasetInfo
from mmfast.data.splits import SPLITS, check_split
from mmfast.data.text import Tokenizer

NAME = "scenes"
GRID = 3
MIN_OBJECTS, MAX_OBJECTS = 3, 5
# Name -> RGB in [0, 1]; each object's colour is jittered around it.
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.90, 0.12, 0.12),
    "green": (0.12, 0.72, 0.18),
    "blue": (0.18, 0.32, 0.95),
    "yellow": (0.95, 0.88, 0.12),
    "purple": (0.62, 0.20, 0.85),
    "white": (0.96, 0.96, 0.96),
}
SHAPES = ("circle", "square", "triangle")
# (row, column) -> the place's name, and the phrase that puts an object there.
PLACES: dict[tuple[int, int], str] = {
    (0, 0): "top left",
    (0, 1): "top",
    (0, 2): "top right",
    (1, 0): "left",
    (1, 1): "center",
    (1, 2): "right",
    (2, 0): "bottom left",
    (2, 1): "bottom",
    (2, 2): "bottom right",
}
PREPOSITIONS = {"left": "on the", "right": "on the", "center": "in the"}  # others: "at the"
BACKGROUND = 0.12
BACKGROUND_JITTER = 0.04
PIXEL_NOISE = 0.03
COLOUR_JITTER = 0.04
# Half-extent of an object as a fraction of the cell side, and how far its centre may move.
MIN_SIZE, MAX_SIZE = 0.27, 0.36
MAX_OFFSET = 0.10
SUPERSAMPLING = 2
MIN_IMAGE_SIZE = 12
_DEFAULTS: dict[str, Any] = {"num_train": 5000, "num_val": 1000, "num_test": 1000, "image_size": 32}
# The order in which the splits are drawn (each avoiding the scenes of those before it).
_DRAW_ORDER = ("test", "val", "train")


class SceneObject(NamedTuple):
    """One object of a scene: its grid cell, colour and shape names."""

    row: int
    column: int
    colour: str
    shape: str

    @property
    def place(self) -> str:
        """The name of the object's cell, e.g. ``"top left"``."""
        return PLACES[(self.row, self.column)]

    def phrase(self) -> str:
        """``"a <colour> <shape> <preposition> <place>"``, e.g. ``"a red circle at the top left"``."""
        return f"a {self.colour} {self.shape} {PREPOSITIONS.get(self.place, 'at the')} {self.place}"


def caption(objects: tuple[SceneObject, ...]) -> str:
    """The caption of a scene: its objects' phrases in reading order, ``", "``-separated, the last
    one joined with ``" and "``."""
    phrases = [o.phrase() for o in sorted(objects, key=lambda o: (o.row, o.column))]
    if len(phrases) == 1:
        return phrases[0]
    return ", ".join(phrases[:-1]) + " and " + phrases[-1]


def parse_caption(text: str) -> tuple[SceneObject, ...]:
    """The objects a caption names, in its order (the inverse of :func:`caption`)."""
    by_place = {name: cell for cell, name in PLACES.items()}
    head, _, last = text.rpartition(" and ")
    parts = [*(head.split(", ") if head else []), last]
    objects = []
    for part in parts:
        words = part.split()
        if len(words) < 5 or words[0] != "a" or words[1] not in COLOURS or words[2] not in SHAPES:
            raise ValueError(f"text: {part!r} is not 'a <colour> <shape> <preposition> <place>'")
        place = " ".join(words[5:])
        if place not in by_place or " ".join(words[3:5]) != PREPOSITIONS.get(place, "at the"):
            raise ValueError(f"text: {part!r} names no place of the grid")
        objects.append(SceneObject(*by_place[place], words[1], words[2]))
    return tuple(objects)


def check_options(options: dict[str, Any]) -> dict[str, Any]:
    """The options with defaults filled in; unknown or invalid ones raise ``ValueError``."""
    unknown = set(options) - set(_DEFAULTS)
    if unknown:
        raise ValueError(f"{NAME}: unknown option(s) {sorted(unknown)}; expected some of {sorted(_DEFAULTS)}")
    resolved = {**_DEFAULTS, **options}
    for key in ("num_train", "num_val", "num_test"):
        if not isinstance(resolved[key], int) or isinstance(resolved[key], bool) or resolved[key] < 1:
            raise ValueError(f"{key}: expected a positive int, got {resolved[key]!r}")
    side = resolved["image_size"]
    if not isinstance(side, int) or side < MIN_IMAGE_SIZE:
        raise ValueError(f"image_size: expected an int >= {MIN_IMAGE_SIZE}, got {side!r}")
    return resolved


@functools.lru_cache(maxsize=1)
def tokenizer() -> Tokenizer:
    """The tokenizer of the captions: its vocabulary is the generator's lexicon (plus ``","``)."""
    lexicon = ["a", "and", ",", *COLOURS, *SHAPES, *" ".join({*PREPOSITIONS.values(), "at the"}).split()]
    lexicon += [word for place in PLACES.values() for word in place.split()]
    return Tokenizer(sorted(set(lexicon)))


def max_caption_tokens() -> int:
    """Tokens of the longest possible caption (:data:`MAX_OBJECTS` objects with the longest phrases)."""
    longest = max((SceneObject(r, c, "red", "circle") for r, c in PLACES), key=lambda o: len(o.phrase()))
    words = len(tokenizer().tokenize(longest.phrase()))
    return MAX_OBJECTS * words + (MAX_OBJECTS - 2) + 1  # the commas and the "and"


def info(**options: Any) -> DatasetInfo:
    """The :class:`DatasetInfo` of the scenes with these options (generates nothing)."""
    resolved = check_options(options)
    side = resolved["image_size"]
    return DatasetInfo(
        name=NAME,
        modalities=("image", "text"),
        num_classes=MAX_OBJECTS - MIN_OBJECTS + 1,
        class_names=tuple(f"{n} objects" for n in range(MIN_OBJECTS, MAX_OBJECTS + 1)),
        image_shape=(3, side, side),
        vocab_size=tokenizer().vocab_size,
        pad_id=Tokenizer.pad_id,
        max_text_length=max_caption_tokens(),
        options=resolved,
    )


def load(split: str, seed: int = 0, **options: Any) -> MultimodalDataset:
    """The ``split`` (``train``, ``val`` or ``test``) of the scenes; see the module docstring."""
    check_split(split)
    resolved = check_options(options)
    images, texts, objects = _render_split(int(seed), split, tuple(sorted(resolved.items())))
    captions = [caption(o) for o in objects]
    labels = torch.tensor([len(o) - MIN_OBJECTS for o in objects], dtype=torch.int64)
    # Which scene of the whole set each sample is: the splits' scenes are numbered in draw order.
    offset = sum(resolved[f"num_{s}"] for s in _DRAW_ORDER[: _DRAW_ORDER.index(split)])
    ids = torch.arange(offset, offset + len(objects))
    return MultimodalDataset(
        {"image": images, "text": texts},
        labels,
        info(**resolved),
        source_ids={"image": ids, "text": ids},
        extras={"captions": captions, "objects": list(objects)},
    )


def draw_scene(rng: np.random.Generator) -> tuple[SceneObject, ...]:
    """A random scene: 3 to 5 objects in distinct cells, uniform colours and shapes, in reading order."""
    count = int(rng.integers(MIN_OBJECTS, MAX_OBJECTS + 1))
    cells = np.sort(rng.choice(GRID * GRID, size=count, replace=False))
    colours, shapes = list(COLOURS), SHAPES
    return tuple(
        SceneObject(
            int(cell) // GRID, int(cell) % GRID, colours[rng.integers(len(colours))], shapes[rng.integers(3)]
        )
        for cell in cells
    )


@functools.lru_cache(maxsize=4)
def _scenes(seed: int, counts: tuple[int, int, int]) -> dict[str, tuple[tuple[SceneObject, ...], ...]]:
    """The scenes of every split (``counts`` in :data:`_DRAW_ORDER`), all distinct."""
    seen: set[tuple[SceneObject, ...]] = set()
    scenes = {}
    for index, (split, count) in enumerate(zip(_DRAW_ORDER, counts)):
        rng = np.random.default_rng([seed, 31, index])
        drawn: list[tuple[SceneObject, ...]] = []
        while len(drawn) < count:
            scene = draw_scene(rng)
            if scene not in seen:
                seen.add(scene)
                drawn.append(scene)
        scenes[split] = tuple(drawn)
    return scenes


@functools.lru_cache(maxsize=6)
def _render_split(seed: int, split: str, options_key: tuple) -> tuple:
    options = dict(options_key)
    counts = tuple(options[f"num_{s}"] for s in _DRAW_ORDER)
    objects = _scenes(seed, counts)[split]
    rng = np.random.default_rng([seed, 37, SPLITS.index(split)])
    vocabulary = tokenizer()
    images = np.stack([render_scene(scene, options["image_size"], rng) for scene in objects])
    texts = [vocabulary.encode(caption(scene)) for scene in objects]
    return torch.from_numpy(images), texts, objects


def shape_mask(shape: str, dx: np.ndarray, dy: np.ndarray, half: float) -> np.ndarray:
    """Where ``shape`` of half-extent ``half`` covers the offsets ``(dx, dy)`` from its centre.

    A disc of radius ``half``; a square of half-side ``0.9 * half``; an upright isosceles triangle
    ``2 * half`` high whose base is ``2.2 * half`` wide.
    """
    if shape == "circle":
        return dx**2 + dy**2 <= half**2
    if shape == "square":
        return (np.abs(dx) <= 0.9 * half) & (np.abs(dy) <= 0.9 * half)
    if shape == "triangle":
        return (dy >= -half) & (dy <= half) & (np.abs(dx) <= 0.55 * (dy + half))
    raise ValueError(f"shape: expected one of {', '.join(SHAPES)}, got {shape!r}")


def render_scene(objects: tuple[SceneObject, ...], side: int, rng: np.random.Generator) -> np.ndarray:
    """The float32 image ``[3, side, side]`` of a scene, values in [0, 1] (see the module docstring)."""
    fine = side * SUPERSAMPLING
    cell = fine / GRID
    coordinates = np.arange(fine) + 0.5
    background = BACKGROUND + rng.uniform(-BACKGROUND_JITTER, BACKGROUND_JITTER)
    canvas = np.full((3, fine, fine), background, dtype=np.float32)
    for o in objects:
        half = rng.uniform(MIN_SIZE, MAX_SIZE) * cell
        cx = (o.column + 0.5 + rng.uniform(-MAX_OFFSET, MAX_OFFSET)) * cell
        cy = (o.row + 0.5 + rng.uniform(-MAX_OFFSET, MAX_OFFSET)) * cell
        colour = np.clip(np.array(COLOURS[o.colour]) + rng.normal(0, COLOUR_JITTER, 3), 0, 1)
        # Only the object's own cell is drawn on: objects never overlap.
        top, left = int(o.row * cell), int(o.column * cell)
        bottom, right = int((o.row + 1) * cell), int((o.column + 1) * cell)
        dy = coordinates[top:bottom, None] - cy
        dx = coordinates[None, left:right] - cx
        mask = shape_mask(o.shape, dx, dy, half)
        canvas[:, top:bottom, left:right][:, mask] = colour[:, None].astype(np.float32)
    image = canvas.reshape(3, side, SUPERSAMPLING, side, SUPERSAMPLING).mean(axis=(2, 4))
    image += rng.normal(0, PIXEL_NOISE, image.shape).astype(np.float32)
    return np.clip(image, 0, 1).astype(np.float32)
