"""Sort-of-CLEVR: the generator (objects, pixels, answers recomputed from the pixels, seeds, the
disk cache), the dataset, the model's coordinate maps, and training / evaluation (also on a freshly
generated test set) through the command line."""

from __future__ import annotations

import json
import math
import os
import runpy
import sys
from pathlib import Path
from unittest.mock import patch

import numpy as np
import pytest
import torch

from mmfast.cli import main
from mmfast.data import collate, dataset_info, load_dataset
from mmfast.data import sort_of_clevr as soc
from mmfast.encoders import ImageEncoder, TextEncoder
from mmfast.models import VQA_FUSIONS, build_vqa_model
from mmfast.models.vqa import (
    DATASET_MODEL_DEFAULTS,
    AnchorRelations,
    FiLMFusion,
    FiLMPixelCNN,
    VQAModel,
    coordinate_conv,
    coordinate_maps,
    vqa_model_settings,
)
from mmfast.ops.film import stored_channels_last
from mmfast.train.build import build_model
from mmfast.train.checkpoint import checkpoint_config
from mmfast.train.config import DATASET_EPOCHS, DATASET_LR, DEFAULT_LR, TASK_EPOCHS, TrainConfig

TINY = {"num_train": 6, "num_val": 2, "num_test": 3}
TINY_FLAGS = [
    "--num-train", "6", "--num-val", "2", "--num-test", "3", "--image-size", "32", "--hidden", "16",
    "--epochs", "1", "--no-progress",
]  # fmt: skip
WHITE = (255, 255, 255)


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    """Every test caches its scenes in a folder of its own, and starts with no scenes in memory."""
    monkeypatch.setenv(soc.CACHE_ENV, str(tmp_path_factory.mktemp("cache")))
    soc.scenes.cache_clear()
    yield
    soc.scenes.cache_clear()


@pytest.fixture(scope="module")
def drawn() -> soc.Scenes:
    return soc.generate(200, seed=7)


def _objects_from_pixels(image: np.ndarray) -> list[tuple[float, float, str]]:
    """(x, y, shape) of each colour's object, read from the pixels alone: the centre is the mean
    pixel position, a square fills its 11 x 11 box and a circle does not."""
    objects = []
    for rgb in soc.RGB:
        ys, xs = np.nonzero((image == np.array(rgb, dtype=np.uint8)).all(axis=-1))
        box = (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
        objects.append((float(xs.mean()), float(ys.mean()), "square" if len(xs) == box else "circle"))
    return objects


def _expected_answer(objects: list[tuple[float, float, str]], colour: int, subtype: str) -> str:
    """The answer from the objects read off the image, written independently of the generator."""
    x, y, shape = objects[colour]
    if subtype == "shape":
        return shape
    if subtype == "horizontal":
        return "yes" if x < 37.5 else "no"
    if subtype == "vertical":
        return "yes" if y < 37.5 else "no"
    if subtype == "count":
        return str(sum(other[2] == shape for other in objects))
    others = [(math.dist((x, y), o[:2]), o[2]) for k, o in enumerate(objects) if k != colour]
    return (min if subtype == "closest" else max)(others)[1]


def test_objects_colours_and_no_overlap(drawn) -> None:
    masks = {"square": 121, "circle": 97}  # pixels within the box / within radius 5.5
    assert drawn.images.shape == (200, 75, 75, 3) and drawn.images.dtype == np.uint8
    for image, centres, shapes in zip(drawn.images, drawn.centres, drawn.shapes):
        colours = {tuple(p) for p in image.reshape(-1, 3).tolist()}
        # Six distinct colours and the white background, nothing else (no blending, no overlap).
        assert colours == set(soc.RGB) | {WHITE}
        painted = 0
        for k, rgb in enumerate(soc.RGB):
            ys, xs = np.nonzero((image == np.array(rgb, dtype=np.uint8)).all(axis=-1))
            shape = soc.SHAPES[shapes[k]]
            assert len(xs) == masks[shape], (k, shape, len(xs))  # whole: neither cut nor covered
            assert (xs.min(), xs.max(), ys.min(), ys.max()) == (
                centres[k][0] - 5,
                centres[k][0] + 5,
                centres[k][1] - 5,
                centres[k][1] + 5,
            )
            painted += len(xs)
        assert (image != 255).any(axis=-1).sum() == painted
        assert centres.min() >= 5 and centres.max() <= 69 and (centres != 37).all()
        gaps = np.abs(centres[:, None] - centres[None]).max(axis=-1) + np.eye(6, dtype=int) * 99
        assert gaps.min() >= 12  # the 11 x 11 boxes leave at least a pixel between them


def test_answers_recomputed_from_the_pixels(drawn) -> None:
    seen = {name: set() for name in soc.QUESTION_SUBTYPES}
    for image, colours, subtypes, answers in zip(drawn.images, drawn.colours, drawn.subtypes, drawn.answers):
        objects = _objects_from_pixels(image)
        assert [soc.question_type(s) for s in subtypes] == ["non_relational"] * 10 + ["relational"] * 10
        for colour, subtype, answer in zip(colours, subtypes, answers):
            name = soc.QUESTION_SUBTYPES[subtype]
            assert soc.ANSWERS[answer] == _expected_answer(objects, colour, name), (name, objects)
            seen[name].add(soc.ANSWERS[answer])
    assert seen["shape"] == seen["closest"] == seen["furthest"] == {"square", "circle"}
    assert seen["horizontal"] == seen["vertical"] == {"yes", "no"}
    assert seen["count"] == {"1", "2", "3", "4", "5", "6"}
    assert len(soc.ANSWERS) == 10


def test_question_texts_and_codes() -> None:
    vocabulary = soc.tokenizer()
    for colour in range(6):
        for subtype in range(6):
            text = soc.question_text(colour, subtype)
            assert soc.COLOURS[colour] in text.split()
            assert vocabulary.decode(vocabulary.encode(text)) == text.replace("?", " ?")
            code = soc.question_code(colour, subtype)
            assert code.shape == (11,) and code.sum() == 3 and set(np.unique(code)) == {0.0, 1.0}
            assert code[:6].argmax() == colour and code[6:8].argmax() == subtype // 3
            assert code[8:].argmax() == subtype % 3
    texts = {soc.question_text(c, s) for c in range(6) for s in range(6)}
    assert len(texts) == 36 and vocabulary.unk_id not in torch.cat([vocabulary.encode(t) for t in texts])


def test_generation_is_seeded(drawn) -> None:
    again = soc.generate(200, seed=7)
    for name in ("images", "centres", "shapes", "colours", "subtypes", "answers"):
        assert np.array_equal(getattr(again, name), getattr(drawn, name))
    prefix = soc.generate(5, seed=7)
    assert np.array_equal(prefix.images, drawn.images[:5])
    assert np.array_equal(prefix.answers, drawn.answers[:5])
    other = soc.generate(5, seed=8)
    test_part = soc.generate(5, seed=7, part="test")
    for different in (other, test_part):
        assert not np.array_equal(different.images, prefix.images)
        assert not np.array_equal(different.centres, prefix.centres)
    with pytest.raises(ValueError, match="part"):
        soc.generate(2, part="val")


def test_cache_round_trip(monkeypatch) -> None:
    path = soc.cache_path(4, 3, "train")
    assert not path.exists() and path.parent.parent == soc.cache_dir().parent
    first = soc.scenes(4, 3, "train")
    assert path.is_file() and [p.name for p in path.parent.iterdir()] == [path.name]
    stored = soc.read_cache(path)
    for name in ("images", "centres", "shapes", "colours", "subtypes", "answers"):
        assert np.array_equal(getattr(stored, name), getattr(first, name))
        assert getattr(stored, name).dtype == getattr(first, name).dtype
    soc.scenes.cache_clear()

    def no_generation(*args, **kwargs):
        raise AssertionError("the cached scenes should have been read")

    monkeypatch.setattr(soc, "generate", no_generation)
    assert np.array_equal(soc.scenes(4, 3, "train").images, first.images)
    # Another seed or size is another file.
    assert soc.cache_path(4, 4, "train") != path and soc.cache_path(5, 3, "train") != path
    assert soc.cache_path(4, 3, "test") != path


def test_unreadable_cache_is_regenerated() -> None:
    path = soc.cache_path(2, 0, "test")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"not an npz file")
    assert soc.read_cache(path) is None
    assert np.array_equal(soc.scenes(2, 0, "test").images, soc.generate(2, 0, "test").images)
    assert soc.read_cache(path) is not None


def test_cache_write_is_atomic(monkeypatch, tmp_path) -> None:
    data = soc.generate(2, seed=1)
    target = tmp_path / "scenes.npz"
    replaced = []
    real_replace = os.replace

    def spy(source, destination):
        # When the final name appears the file is complete: a temporary file beside it.
        assert not os.path.exists(destination) and os.path.dirname(source) == str(tmp_path)
        assert soc.read_cache(type(target)(source)) is not None
        replaced.append((source, destination))
        real_replace(source, destination)

    monkeypatch.setattr(soc.os, "replace", spy)
    soc.write_cache(target, data)
    assert len(replaced) == 1 and replaced[0][1] == target and list(tmp_path.iterdir()) == [target]

    def interrupted(file, **arrays):
        file.write(b"half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(soc.np, "savez_compressed", interrupted)
    other = tmp_path / "other.npz"
    with pytest.raises(KeyboardInterrupt):
        soc.write_cache(other, data)
    # Neither the final file nor the temporary one is left behind; the earlier file is intact.
    assert list(tmp_path.iterdir()) == [target] and soc.read_cache(target) is not None


def test_dataset_splits_and_collation() -> None:
    info = dataset_info("sort-of-clevr")
    assert info.num_classes == 10 and info.class_names == soc.ANSWERS
    assert info.image_shape == (3, 75, 75) and info.modalities == ("image", "text")
    splits = {split: load_dataset("sort-of-clevr", split, **TINY) for split in ("train", "val", "test")}
    assert [len(splits[s]) for s in ("train", "val", "test")] == [120, 40, 60]
    images = {s: set(d.source_ids["image"].tolist()) for s, d in splits.items()}
    assert not images["train"] & images["val"] and not images["test"] & (images["train"] | images["val"])
    train = splits["train"]
    scenes = soc.scenes(8, 0, "train")
    sample = train[21]  # the second question of the second training image (image 3 of the part)
    assert sample["image"].shape == (3, 75, 75) and sample["image"].dtype == torch.float32
    expected = torch.from_numpy(scenes.images[3]).permute(2, 0, 1).float() / 255
    torch.testing.assert_close(sample["image"], expected)
    assert int(sample["label"]) == scenes.answers[3, 1]
    assert train.extras["questions"][21] == soc.question_text(scenes.colours[3, 1], scenes.subtypes[3, 1])
    assert train.extras["question_subtypes"][21] == soc.QUESTION_SUBTYPES[scenes.subtypes[3, 1]]
    assert train.extras["question_codes"].shape == (120, 11)
    kinds = train.extras["question_types"]
    assert kinds.count("relational") == kinds.count("non_relational") == 60
    assert [soc.QUESTION_TYPES[i] for i in train.extras["question_type_ids"].tolist()] == kinds
    batch = collate([train[i] for i in range(7)])
    assert batch["image"].shape == (7, 3, 75, 75) and batch["label"].shape == (7,)
    assert batch["text"].shape == (7, int(batch["text_lengths"].max()))
    small = load_dataset("sort-of-clevr", "test", num_test=2, image_size=32)
    assert small[0]["image"].shape == (3, 32, 32) and 0 <= float(small[0]["image"].min())
    # Another seed, another test set; the training part does not change the test one.
    fresh = load_dataset("sort-of-clevr", "test", seed=5, num_test=3)
    assert not torch.equal(fresh[0]["image"], splits["test"][0]["image"])
    bigger = load_dataset("sort-of-clevr", "test", num_train=20, num_val=2, num_test=3)
    assert torch.equal(bigger[0]["image"], splits["test"][0]["image"])


def test_training_images_flipped_with_their_answers() -> None:
    """Every read of a training sample is one of its image's four flips, drawn at random, and its
    label is the answer read off the flipped pixels; validation and test images never flip."""
    train = load_dataset("sort-of-clevr", "train", **TINY, flips=True)
    assert dataset_info("sort-of-clevr").options["flips"] is False
    scenes = soc.scenes(8, 0, "train")
    torch.manual_seed(0)
    flips_seen, labels_seen = set(), {}
    for index in range(len(train)):
        image, question = 2 + index // 20, index % 20  # the first 2 images are the validation split
        original = torch.from_numpy(scenes.images[image]).permute(2, 0, 1).float() / 255
        colour = scenes.colours[image, question]
        name = soc.QUESTION_SUBTYPES[scenes.subtypes[image, question]]
        for _ in range(4):
            sample = train[index]
            candidates = ((), (-1,), (-2,), (-1, -2))
            flips = [dims for dims in candidates if torch.equal(sample["image"], original.flip(dims))]
            assert len(flips) == 1
            pixels = (sample["image"].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
            expected = _expected_answer(_objects_from_pixels(pixels), colour, name)
            assert soc.ANSWERS[int(sample["label"])] == expected
            flips_seen.add(flips[0])
            labels_seen.setdefault((name, index), set()).add(int(sample["label"]))
    # Each flip happened, and flips changed the answers of left / top questions, no other answer.
    assert flips_seen == {(), (-1,), (-2,), (-1, -2)}
    changed = {name for (name, _), labels in labels_seen.items() if len(labels) > 1}
    assert changed == {"horizontal", "vertical"}
    # The same seed, the same flips; validation and test images as drawn.
    torch.manual_seed(1)
    first = [train[i]["image"] for i in range(10)]
    torch.manual_seed(1)
    assert all(torch.equal(a, train[i]["image"]) for i, a in enumerate(first))
    def as_drawn(dataset, drawn: soc.Scenes, first_image: int) -> bool:
        images = torch.from_numpy(drawn.images[first_image:]).permute(0, 3, 1, 2) / 255
        return all(
            torch.equal(dataset[i]["image"], images[i // 20])
            and int(dataset[i]["label"]) == drawn.answers[first_image + i // 20, i % 20]
            for i in range(len(dataset))
        )

    assert as_drawn(load_dataset("sort-of-clevr", "val", **TINY, flips=True), scenes, 0)
    assert as_drawn(load_dataset("sort-of-clevr", "test", **TINY, flips=True), soc.scenes(3, 0, "test"), 0)
    assert as_drawn(load_dataset("sort-of-clevr", "train", **TINY), scenes, 2)  # the default: no flips


@pytest.mark.parametrize(
    ("options", "message"),
    [({"num_train": 0}, "num_train"), ({"colours": 3}, "unknown"), ({"flips": 1}, "flips: expected True")],
)
def test_bad_options(options, message) -> None:
    with pytest.raises(ValueError, match=message):
        dataset_info("sort-of-clevr", **options)


def test_coordinate_maps_and_model_defaults() -> None:
    maps = coordinate_maps(torch.zeros(2, 5, 3, 4))
    assert maps.shape == (2, 2, 3, 4)
    assert maps[0, 0, 0].tolist() == pytest.approx([-1, -1 / 3, 1 / 3, 1])  # x along a row
    assert maps[1, 1, :, 0].tolist() == pytest.approx([-1, 0, 1])  # y down a column
    settings = vqa_model_settings("sort-of-clevr")
    assert settings["film_coords"] and settings["stem_stride"] == 2
    assert not vqa_model_settings("easy-vqa")["film_coords"]
    assert vqa_model_settings("sort-of-clevr", film_blocks=1)["film_blocks"] == 1
    encoder = ImageEncoder(3, 8, channels=(4, 8), stem_stride=2)
    assert encoder.features(torch.zeros(1, 3, 75, 75)).shape == (1, 8, 19, 19)
    assert TrainConfig(task="vqa", dataset="sort-of-clevr").epochs == DATASET_EPOCHS["sort-of-clevr"]
    assert TrainConfig(task="vqa", dataset="easy-vqa").epochs == TASK_EPOCHS["vqa"]
    assert TrainConfig(task="vqa", dataset="sort-of-clevr").lr == DATASET_LR["sort-of-clevr"] != DEFAULT_LR
    assert TrainConfig(task="vqa", dataset="easy-vqa").lr == DEFAULT_LR
    assert TrainConfig(task="vqa", dataset="sort-of-clevr", lr=0.5).lr == 0.5


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize(("kernel", "stride", "padding"), [(3, 2, 1), (1, 1, 0), (3, 1, 2)])
def test_coordinate_conv_is_the_convolution_of_the_concatenation(
    kernel: int, stride: int, padding: int, channels_last: bool
) -> None:
    """coordinate_conv(conv, x) == conv(cat(x, coordinate_maps(x))): output and every gradient
    (x, weight, bias), odd sizes, both layouts; the output keeps x's layout."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(5 + 2, 4, kernel, stride=stride, padding=padding).double()
    x = torch.randn(3, 5, 9, 7, dtype=torch.float64)
    if channels_last:
        conv.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    expected = conv(torch.cat([x, coordinate_maps(x)], dim=1))
    got = coordinate_conv(conv, x)
    torch.testing.assert_close(got, expected)
    assert stored_channels_last(got) == channels_last
    grad = torch.randn_like(expected)
    params = [x, conv.weight, conv.bias]
    for g_got, g_expected in zip(
        torch.autograd.grad(got, params, grad), torch.autograd.grad(expected, params, grad)
    ):
        torch.testing.assert_close(g_got, g_expected)


def test_coordinate_conv_refuses_a_convolution_it_does_not_equal() -> None:
    x = torch.randn(2, 5, 6, 6)
    expected = "coordinate_conv: expected a zero-padded, ungrouped Conv2d over 5 \\+ 2"
    with pytest.raises(ValueError, match=expected):
        coordinate_conv(torch.nn.Conv2d(5, 4, 3), x)
    with pytest.raises(ValueError, match="zero-padded"):
        coordinate_conv(torch.nn.Conv2d(7, 4, 3, padding=1, padding_mode="reflect"), x)
    with pytest.raises(ValueError, match="ungrouped"):
        coordinate_conv(torch.nn.Conv2d(7, 7, 3, groups=7), x)


@pytest.mark.parametrize("how", ["setting", "module.to"])
def test_film_from_the_pixels_runs_channels_last(how: str) -> None:
    """With ``channels_last=True`` (Sort-of-CLEVR's setting), or after
    ``.to(memory_format=torch.channels_last)``, every map FiLMPixelCNN's layers see after the first
    convolution is channels last (oneDNN's faster layout), its coordinate channels too, and the
    result is the one of the same network on contiguous maps."""
    torch.manual_seed(0)
    cnn = FiLMPixelCNN(
        (3, 21, 17), channels=4, cond_dim=5, out_dim=6, relation_channels=8, channels_last=how == "setting"
    )
    for film in cnn.films:
        torch.nn.init.normal_(film.weight)
    if how == "module.to":
        cnn.to(memory_format=torch.channels_last)
    assert all(conv.weight.is_contiguous(memory_format=torch.channels_last) for conv in cnn.convs)
    seen = []
    for module in [*cnn.norms, *cnn.films]:
        module.register_forward_pre_hook(lambda _, inputs: seen.append(stored_channels_last(inputs[0])))
    # A FiLM's output, through a ReLU, is the next convolution's input.
    for film in cnn.films:
        film.register_forward_hook(lambda _, inputs, output: seen.append(stored_channels_last(output)))
    images, questions = torch.rand(3, 3, 21, 17), torch.randn(3, 5)
    out = cnn(images, questions)
    assert len(seen) == 12 and all(seen)
    maps = coordinate_maps(torch.zeros(2, 5, 3, 4).contiguous(memory_format=torch.channels_last))
    assert maps.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(maps, coordinate_maps(torch.zeros(2, 5, 3, 4)))

    def contiguous_forward(x: torch.Tensor) -> torch.Tensor:
        for conv, norm, film in zip(cnn.convs, cnn.norms, cnn.films):
            x = torch.cat([x, coordinate_maps(x)], dim=1)
            x = torch.relu(film(norm(conv.to(memory_format=torch.contiguous_format)(x)), questions))
        cells = torch.cat([x, coordinate_maps(x)], dim=1).flatten(2)
        return cnn.pool([x.flatten(1), questions, cnn.relations(cells, questions)])

    torch.testing.assert_close(out, contiguous_forward(images), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("fusion", VQA_FUSIONS)
def test_every_fusion_on_sort_of_clevr(fusion: str) -> None:
    dataset = load_dataset("sort-of-clevr", "train", **TINY, image_size=32)
    batch = collate([dataset[i] for i in range(0, 120, 15)])
    model = build_vqa_model(dataset.info, fusion=fusion, hidden=16)
    if fusion == "film":  # the dataset's film reads the pixels: no image encoder
        assert isinstance(model.fusion, FiLMPixelCNN) and list(model.encoders) == ["text"]
        assert model.modalities == ("image", "text")
    logits = model(batch)
    assert logits.shape == (8, 10) and torch.isfinite(logits).all()
    torch.nn.functional.cross_entropy(logits, batch["label"]).backward()
    unused = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not unused, unused


def test_film_from_the_pixels() -> None:
    torch.manual_seed(0)
    cnn = FiLMPixelCNN((3, 75, 61), channels=4, cond_dim=5, out_dim=6).eval()
    # 75 -> 38 -> 19 -> 10 -> 5; 61 -> 31 -> 16 -> 8 -> 4
    assert tuple(cnn.pool.in_features) == (4 * 5 * 4, 5)
    images, questions = torch.rand(2, 3, 75, 61), torch.randn(2, 5)

    def unconditioned(x: torch.Tensor) -> torch.Tensor:
        for conv, norm in zip(cnn.convs, cnn.norms):
            x = torch.relu(norm(conv(torch.cat([x, coordinate_maps(x)], dim=1))))
        return x.flatten(1)

    # The generators start at zero: the plain CNN; the question still reaches the output layer.
    torch.testing.assert_close(cnn(images, questions), cnn.pool([unconditioned(images), questions]))
    for film in cnn.films:
        torch.nn.init.normal_(film.weight)
    questions.requires_grad_(True)
    out = cnn(images, questions)
    assert not torch.allclose(out, cnn.pool([unconditioned(images), questions]))
    out.sum().backward()
    assert all(film.weight.grad.abs().sum() > 0 for film in cnn.films)
    with pytest.raises(ValueError, match="image_shape"):
        FiLMPixelCNN((75, 75), 4, 5, 6)
    with pytest.raises(ValueError, match="channels and layers"):
        FiLMPixelCNN((3, 75, 75), 4, 5, 6, layers=0)


def test_anchor_relations() -> None:
    torch.manual_seed(0)
    stage = AnchorRelations(cell_dim=3, cond_dim=2, channels=4)
    cells, question = torch.randn(2, 3, 7), torch.randn(2, 2)
    out = stage(cells, question)
    assert out.shape == (2, stage.out_dim) == (2, 4 + 3)
    # The anchor is the softmax-weighted mean of the positions, the relations a sum over positions.
    scores = torch.einsum("bcn,bc->bn", stage.key(cells), stage.query(question)) / 2.0
    anchor = (cells * torch.softmax(scores, dim=-1)[:, None]).sum(-1)
    torch.testing.assert_close(out[:, 4:], anchor)
    pairs = [torch.cat([cells[:, :, n], anchor, question], dim=1) for n in range(7)]
    g = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.ReLU(), torch.nn.Linear(4, 4), torch.nn.ReLU())
    for conv, linear in zip(stage.relate[::2], g[::2]):
        linear.load_state_dict({"weight": conv.weight[..., 0], "bias": conv.bias})
    torch.testing.assert_close(out[:, :4], sum(g(pair) for pair in pairs))
    # A key that singles out one position makes the anchor that position (the asked object).
    with torch.no_grad():
        stage.key.weight.zero_(), stage.key.bias.zero_(), stage.query.weight.zero_()
        stage.query.bias.fill_(1.0)
        stage.key.weight[:, 0, 0] = 100.0
    cells[:, 0] = torch.tensor([0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0])
    torch.testing.assert_close(stage(cells, question)[:, 4:], cells[:, :, 3])
    cnn = FiLMPixelCNN((3, 75, 61), channels=4, cond_dim=5, out_dim=6, relation_channels=8)
    assert tuple(cnn.pool.in_features) == (4 * 5 * 4, 5, 8 + 4 + 2)
    cnn(torch.rand(2, 3, 75, 61), torch.randn(2, 5)).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in cnn.relations.parameters())
    with pytest.raises(ValueError, match="relation_channels: expected >= 0"):
        FiLMPixelCNN((3, 75, 75), 4, 5, 6, relation_channels=-1)


@pytest.mark.parametrize("relation_layer", [2, 3])
def test_anchor_relations_on_an_earlier_map(relation_layer: int) -> None:
    """With ``relation_layer`` the relations read the map after that many convolutions (finer:
    19 x 16 or 10 x 8 positions here instead of 5 x 4), the answer layer still the last map."""
    torch.manual_seed(0)
    options = {"channels": 4, "cond_dim": 5, "out_dim": 6, "relation_channels": 8}
    cnn = FiLMPixelCNN((3, 75, 61), **options, relation_layer=relation_layer)
    for film in cnn.films:
        torch.nn.init.normal_(film.weight)
    images, questions = torch.rand(2, 3, 75, 61), torch.randn(2, 5)
    positions = []
    cnn.relations.register_forward_pre_hook(lambda _, inputs: positions.append(inputs[0].shape[-1]))
    out = cnn(images, questions)
    assert positions == [{2: 19 * 16, 3: 10 * 8}[relation_layer]]

    def by_hand(x: torch.Tensor) -> torch.Tensor:
        for layer, (conv, norm, film) in enumerate(zip(cnn.convs, cnn.norms, cnn.films), start=1):
            x = torch.relu(film(norm(conv(torch.cat([x, coordinate_maps(x)], dim=1))), questions))
            if layer == relation_layer:
                relations = cnn.relations(torch.cat([x, coordinate_maps(x)], dim=1).flatten(2), questions)
        return cnn.pool([x.flatten(1), questions, relations])

    torch.testing.assert_close(out, by_hand(images))
    # Same parameters whatever the layer (a checkpoint does not say which map it read).
    last = FiLMPixelCNN((3, 75, 61), **options)
    assert last.relation_layer == 4 and last.state_dict().keys() == cnn.state_dict().keys()
    for wrong in (-1, 5):
        with pytest.raises(ValueError, match="relation_layer: expected 1 to layers=4, or 0"):
            FiLMPixelCNN((3, 75, 75), **options, relation_layer=wrong)


def test_film_settings_and_checks() -> None:
    info = dataset_info("sort-of-clevr", **TINY, image_size=32)
    assert vqa_model_settings("sort-of-clevr")["film_pixel_channels"] > 0
    assert vqa_model_settings("easy-vqa")["film_pixel_channels"] == 0
    # The question's pooled vector sees the mean word embedding where a fusion reads that vector.
    assert vqa_model_settings("sort-of-clevr")["text_bag_of_words"]
    assert not vqa_model_settings("easy-vqa")["text_bag_of_words"]
    assert build_vqa_model(info, fusion="film", hidden=16).encoders["text"].bag_of_words is not None
    assert build_vqa_model(info, fusion="transformer", hidden=16).encoders["text"].bag_of_words is None
    assert build_vqa_model(info, fusion="film", hidden=16).fusion.channels_last
    assert not build_vqa_model(info, fusion="film", hidden=16, film_channels_last=False).fusion.channels_last
    blocks = build_vqa_model(info, fusion="film", hidden=16, film_pixel_channels=0)
    assert isinstance(blocks.fusion, FiLMFusion) and set(blocks.encoders) == {"image", "text"}
    assert all(block.conv1.in_channels == block.conv2.in_channels + 2 for block in blocks.fusion.blocks)
    question = TextEncoder(info.vocab_size, 8)
    with pytest.raises(ValueError, match="image_encoder: .* expected None"):
        VQAModel(
            ImageEncoder(3, 8), question, "film", 10, hidden=8, film_pixel_channels=4, image_shape=(3, 32, 32)
        )
    with pytest.raises(ValueError, match="image_shape"):
        VQAModel(None, question, "film", 10, hidden=8, film_pixel_channels=4)
    with pytest.raises(ValueError, match="film_pixel_channels: expected >= 0"):
        VQAModel(None, question, "film", 10, hidden=8, film_pixel_channels=-1)
    with pytest.raises(ValueError, match="needs the image and the question"):
        build_vqa_model(info, fusion="film", modalities=["text"], hidden=16)


def test_the_config_records_the_model_settings() -> None:
    """A VQA run's config holds its model's settings, resolved: its checkpoints rebuild that model
    after the defaults change, also where the weights would not show it (the map the relations
    read)."""
    config = TrainConfig(task="vqa", dataset="sort-of-clevr", fusion="film")
    assert config.model_settings == vqa_model_settings("sort-of-clevr")
    assert TrainConfig.from_dict(config.to_dict()) == config
    chosen = TrainConfig(
        task="vqa", dataset="sort-of-clevr", fusion="film", model_settings={"film_relation_layer": 3}
    )
    assert chosen.model_settings == {**config.model_settings, "film_relation_layer": 3}
    assert build_model(chosen).fusion.relation_layer == 3
    with pytest.raises(ValueError, match="unknown VQA model setting"):
        TrainConfig(task="vqa", dataset="easy-vqa", model_settings={"colours": 3})
    with pytest.raises(ValueError, match="model_settings: only task='vqa'"):
        TrainConfig(model_settings={"film_blocks": 2})
    saved = {"config": config.to_dict()}
    with patch.dict(DATASET_MODEL_DEFAULTS["sort-of-clevr"], {"film_relation_layer": 2}):
        assert TrainConfig(task="vqa", dataset="sort-of-clevr").model_settings["film_relation_layer"] == 2
        assert build_model(checkpoint_config(saved, "run/best.pt")).fusion.relation_layer == 4


@pytest.mark.parametrize("fusion", ["film", "concat"])
def test_train_and_evaluate_on_a_fresh_test_set(fusion: str, tmp_path, capsys) -> None:
    out = tmp_path / fusion
    args = ["train", "--task", "vqa", "--dataset", "sort-of-clevr", "--fusion", fusion, "--out", str(out)]
    flips = ["--flips"] if fusion == "film" else []  # the dataset option from the command line
    assert main([*args, *TINY_FLAGS, *flips]) == 0
    assert "accuracy relational" in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["dataset_options"].get("flips", False) is (fusion == "film")
    test = metrics["test"]
    assert set(test["accuracy_by_type"]) == {"relational", "non_relational"}
    assert set(test["accuracy_by_subtype"]) == set(soc.QUESTION_SUBTYPES)
    assert test["count"] == 60 and 0.0 <= test["accuracy"] <= 1.0
    assert main(["evaluate", str(out / "best.pt"), "--json"]) == 0
    same = json.loads(capsys.readouterr().out)
    assert same["accuracy"] == pytest.approx(test["accuracy"]) and "data_seed" not in same
    assert main(["evaluate", str(out / "best.pt"), "--data-seed", "11", "--json"]) == 0
    fresh = json.loads(capsys.readouterr().out)
    assert fresh["data_seed"] == 11 and fresh["count"] == 60
    assert set(fresh["accuracy_by_type"]) == {"relational", "non_relational"}
    assert fresh["loss"] != pytest.approx(test["loss"])  # other images, other predictions
    assert main(["evaluate", str(out / "best.pt"), "--data-seed", "11"]) == 0
    printed = capsys.readouterr().out
    assert "generated with seed 11" in printed and "accuracy non_relational" in printed
    assert main(["evaluate", str(out / "best.pt"), "--data-seed", "11", "--split", "val"]) == 2
    assert "test split only" in capsys.readouterr().err
    if fusion == "film":  # the README's diagnosis: accuracy and the colour spread per subtype
        probe = Path(__file__).resolve().parents[1] / "tools" / "sort_of_clevr_probe.py"
        with patch.object(sys, "argv", [str(probe), str(out / "best.pt"), "--data-seed", "11"]):
            runpy.run_path(str(probe), run_name="__main__")
        lines = capsys.readouterr().out.splitlines()
        rows = {line.split()[0]: [float(v) for v in line.split()[1:]] for line in lines[2:]}
        assert "seed 11 (60 questions)" in lines[0] and set(rows) == set(soc.QUESTION_SUBTYPES)
        assert rows["shape"][1] == 1.0 and all(0.0 <= row[0] <= 1.0 for row in rows.values())
        assert fresh["accuracy_by_subtype"]["count"] == pytest.approx(rows["count"][0])


def test_data_seed_is_refused_for_easy_vqa(tmp_path, capsys) -> None:
    out = tmp_path / "easy"
    args = ["train", "--task", "vqa", "--dataset", "easy-vqa", "--modalities", "text", "--out", str(out)]
    flags = ["--num-train", "8", "--num-val", "4", "--num-test", "4", "--hidden", "8", "--epochs", "1"]
    assert main([*args, *flags, "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(out / "best.pt"), "--data-seed", "3"]) == 2
    error = capsys.readouterr().err
    assert "easy-vqa has a fixed test set" in error and "sort-of-clevr" in error
    assert main(["evaluate", str(out / "best.pt"), "--json"]) == 0
