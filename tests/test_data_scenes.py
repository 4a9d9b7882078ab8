"""The scenes dataset: objects and vocabulary, captions that describe the rendered images, unique
test captions, disjoint splits, determinism by seed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmfast.data import collate, dataset_info, load_dataset, scenes
from mmfast.data.scenes import COLOURS, PLACES, SHAPES, SceneObject, caption, parse_caption

SMALL = {"num_train": 200, "num_val": 60, "num_test": 120}


def _splits(seed: int = 0, **options) -> dict:
    return {
        split: load_dataset("scenes", split, seed=seed, **{**SMALL, **options}) for split in scenes.SPLITS
    }


def test_vocabulary_has_six_colours_three_shapes_and_a_three_by_three_grid() -> None:
    assert len(COLOURS) >= 6 and len(SHAPES) >= 3
    assert set(PLACES) == {(r, c) for r in range(3) for c in range(3)}
    assert len(set(PLACES.values())) == 9
    words = set(scenes.tokenizer().id_to_word)
    for name in [*COLOURS, *SHAPES, *(w for place in PLACES.values() for w in place.split())]:
        assert name in words


def test_every_scene_has_three_to_five_objects_in_distinct_cells() -> None:
    data = _splits()
    for dataset in data.values():
        for objects, label in zip(dataset.extras["objects"], dataset.labels.tolist()):
            assert 3 <= len(objects) <= 5
            assert label == len(objects) - 3
            assert len({(o.row, o.column) for o in objects}) == len(objects)
            assert all(o.colour in COLOURS and o.shape in SHAPES for o in objects)
    test = data["test"]
    assert set(test.labels.tolist()) == {0, 1, 2}
    seen = [o for objects in test.extras["objects"] for o in objects]
    assert {o.colour for o in seen} == set(COLOURS)
    assert {o.shape for o in seen} == set(SHAPES)
    assert {(o.row, o.column) for o in seen} == set(PLACES)


def test_the_caption_names_every_object_with_its_colour_shape_and_place() -> None:
    objects = (
        SceneObject(0, 0, "red", "circle"),
        SceneObject(1, 1, "blue", "square"),
        SceneObject(2, 2, "green", "triangle"),
    )
    text = caption(objects)
    expected = "a red circle at the top left, a blue square in the center and a green triangle at the "
    assert text == expected + "bottom right"
    assert parse_caption(text) == objects
    assert caption(tuple(reversed(objects))) == text  # always in reading order
    dataset = load_dataset("scenes", "test", **SMALL)
    tokenizer = scenes.tokenizer()
    for text, objects, ids in zip(
        dataset.extras["captions"], dataset.extras["objects"], dataset.inputs["text"]
    ):
        assert parse_caption(text) == objects
        assert tokenizer.decode(ids).split() == tokenizer.tokenize(text)  # no <unk>, nothing lost
        assert len(ids) <= dataset.info.max_text_length


def test_the_default_test_gallery_has_a_thousand_unique_captions() -> None:
    test = load_dataset("scenes", "test")
    assert len(test) >= 1000
    assert len(set(test.extras["captions"])) == len(test)
    assert dataset_info("scenes").options["num_test"] == len(test)


def test_splits_are_disjoint_and_no_caption_repeats_anywhere() -> None:
    data = _splits()
    captions = {split: dataset.extras["captions"] for split, dataset in data.items()}
    everything = [text for texts in captions.values() for text in texts]
    assert len(set(everything)) == len(everything)
    ids = {split: set(dataset.source_ids["image"].tolist()) for split, dataset in data.items()}
    assert not ids["train"] & ids["val"] and not ids["train"] & ids["test"] and not ids["val"] & ids["test"]
    assert {len(d) for d in data.values()} == set(SMALL.values())


def test_same_seed_same_tensors_other_seed_other_scenes() -> None:
    scenes._render_split.cache_clear()
    first = load_dataset("scenes", "test", seed=3, **SMALL)
    scenes._render_split.cache_clear()
    scenes._scenes.cache_clear()
    again = load_dataset("scenes", "test", seed=3, **SMALL)
    assert first.inputs["image"] is not again.inputs["image"]
    assert torch.equal(first.inputs["image"], again.inputs["image"])
    assert first.extras["captions"] == again.extras["captions"]
    assert all(torch.equal(a, b) for a, b in zip(first.inputs["text"], again.inputs["text"]))
    other = load_dataset("scenes", "test", seed=4, **SMALL)
    assert first.extras["captions"] != other.extras["captions"]
    assert not torch.equal(first.inputs["image"], other.inputs["image"])


def test_the_test_gallery_does_not_depend_on_the_training_set_size() -> None:
    small = load_dataset("scenes", "test", **SMALL)
    larger = load_dataset("scenes", "test", **{**SMALL, "num_train": 400, "num_val": 80})
    assert small.extras["captions"] == larger.extras["captions"]
    assert torch.equal(small.inputs["image"], larger.inputs["image"])


def _cell(image: np.ndarray, row: int, column: int) -> np.ndarray:
    side = image.shape[-1]
    top, left = int(row * side / 3), int(column * side / 3)
    return image[:, top : int((row + 1) * side / 3), left : int((column + 1) * side / 3)]


def test_the_image_shows_what_the_caption_says() -> None:
    # Large images, so that a shape's outline is many pixels long: its fill of its bounding box
    # tells it apart (square about 1, disc pi / 4, upright triangle 1 / 2).
    dataset = load_dataset("scenes", "test", num_train=1, num_val=1, num_test=40, image_size=120)
    names = list(COLOURS)
    palette = np.array([COLOURS[n] for n in names])
    for image, text in zip(dataset.inputs["image"].numpy(), dataset.extras["captions"]):
        occupied = {(o.row, o.column): o for o in parse_caption(text)}
        for row, column in PLACES:
            patch = _cell(image, row, column)
            if (row, column) not in occupied:
                assert patch.max() < 0.4, "an empty cell shows only the dark background"
                continue
            o = occupied[(row, column)]
            # Pixels of the named colour; their mean is nearest to it in the palette.
            mask = np.abs(patch - palette[names.index(o.colour)][:, None, None]).max(axis=0) < 0.2
            assert mask.sum() > 0.05 * mask.size
            assert names[int(np.argmin(((palette - patch[:, mask].mean(axis=1)) ** 2).sum(1)))] == o.colour
            ys, xs = np.nonzero(mask)
            fill = mask.sum() / ((ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1))
            shape = "triangle" if fill < 0.65 else "circle" if fill < 0.875 else "square"
            assert shape == o.shape, (text, row, column, fill)


def test_images_are_rgb_in_the_unit_range_and_batch_with_collate() -> None:
    dataset = load_dataset("scenes", "val", **SMALL)
    info = dataset_info("scenes", **SMALL)
    assert info.modalities == ("image", "text") and info.image_shape == (3, 32, 32)
    assert info.vocab_size == scenes.tokenizer().vocab_size and info.num_classes == 3
    batch = collate([dataset[i] for i in range(8)])
    assert batch["image"].shape == (8, 3, 32, 32) and batch["image"].dtype == torch.float32
    assert 0 <= float(batch["image"].min()) and float(batch["image"].max()) <= 1
    assert batch["text"].dtype == torch.int64 and batch["text_lengths"].shape == (8,)


@pytest.mark.parametrize(
    ("options", "expected"),
    [({"num_test": 0}, "num_test"), ({"image_size": 8}, "image_size"), ({"difficulty": 0.3}, "unknown")],
)
def test_bad_options_are_refused(options, expected) -> None:
    with pytest.raises(ValueError, match=expected):
        load_dataset("scenes", "test", **options)


def test_parse_caption_refuses_other_text() -> None:
    with pytest.raises(ValueError, match="colour"):
        parse_caption("a pink circle at the top left")
    with pytest.raises(ValueError, match="place"):
        parse_caption("a red circle at the middle")
