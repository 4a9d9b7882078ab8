"""Visual question answering on easy-VQA: the dataset loader, the encoders' token outputs, every
fusion of the VQA model, the metrics, and training / evaluation through the command line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mmfast.cli import main
from mmfast.data import collate, dataset_info, easy_vqa, load_dataset
from mmfast.encoders import ImageEncoder, TextEncoder, sinusoidal_positions_2d
from mmfast.models import VQA_FUSIONS, VQAModel, build_vqa_model
from mmfast.models.vqa import FiLMBlock
from mmfast.nn import FiLM
from mmfast.train.config import TrainConfig
from mmfast.train.vqa import vqa_metrics

TINY = {"num_train": 24, "num_val": 8, "num_test": 12, "image_size": 16}
TINY_FLAGS = [
    "--num-train", "24", "--num-val", "8", "--num-test", "12", "--image-size", "16", "--hidden", "16",
    "--batch-size", "64", "--epochs", "1", "--no-progress",
]  # fmt: skip
SHAPES = {"circle", "rectangle", "triangle"}
COLOURS = {"red", "green", "blue", "black", "gray", "teal", "brown", "yellow"}


@pytest.fixture(scope="module")
def full_splits():
    """Every question of the three default splits; the images are blank (decoding the 5,000 PNGs
    would cost seconds and the counts, types and splits do not depend on them); see
    test_images_are_read for the pixels."""

    def blank(source: str, ids: tuple[int, ...], side: int) -> torch.Tensor:
        return torch.zeros(len(ids), 3, side, side)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(easy_vqa, "_images", blank)
        return {split: load_dataset("easy-vqa", split) for split in ("train", "val", "test")}


def test_images_are_read() -> None:
    default = load_dataset("easy-vqa", "test", num_test=3)
    native = load_dataset("easy-vqa", "test", num_test=3, image_size=64)
    for dataset, side in ((default, easy_vqa.DEFAULT_IMAGE_SIZE), (native, 64)):
        image = dataset[0]["image"]
        assert image.shape == (3, side, side) and image.dtype == torch.float32
        assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0 and float(image.std()) > 0.05


def test_counts_answers_and_sizes(full_splits) -> None:
    info = dataset_info("easy-vqa")
    assert info.num_classes == 13 and set(info.class_names) == SHAPES | COLOURS | {"yes", "no"}
    assert info.modalities == ("image", "text") and info.image_shape == (3, 32, 32)
    train, val, test = full_splits["train"], full_splits["val"], full_splits["test"]
    # easy-VQA's own numbers: 38,575 training and 9,673 test questions on 4,000 / 1,000 images.
    assert len(train) + len(val) == 38575 and len(test) == 9673
    assert [len(set(s.source_ids["image"].tolist())) for s in (train, val, test)] == [3600, 400, 1000]
    sample = train[0]
    assert sample["image"].shape == (3, 32, 32)
    assert sample["text"].dtype == torch.int64 and sample["label"].dtype == torch.int64
    assert easy_vqa.tokenizer().decode(train[0]["text"]) == train.extras["questions"][0].replace("?", " ?")
    native = dataset_info("easy-vqa", image_size=64)
    assert native.image_shape == (3, 64, 64)


def test_question_types_match_the_answers(full_splits) -> None:
    names = dataset_info("easy-vqa").class_names
    expected = {"shape": SHAPES, "color": COLOURS, "yes_no": {"yes", "no"}}
    for dataset in full_splits.values():
        kinds = dataset.extras["question_types"]
        assert set(kinds) == {"shape", "color", "yes_no"}
        for kind, label in zip(kinds, dataset.labels.tolist()):
            assert names[label] in expected[kind]
        ids = dataset.extras["question_type_ids"]
        assert [easy_vqa.QUESTION_TYPES[i] for i in ids.tolist()] == kinds
    # easy-VQA's README: 28,407 training and 7,136 test questions are yes/no.
    yes_no = sum(k == "yes_no" for s in ("train", "val") for k in full_splits[s].extras["question_types"])
    assert yes_no == 28407
    assert full_splits["test"].extras["question_types"].count("yes_no") == 7136
    assert easy_vqa.question_type("what is the red shape?") == "shape"
    assert easy_vqa.question_type("what is the color of the circle?") == "color"
    assert easy_vqa.question_type("is no teal shape present?") == "yes_no"


def test_splits_are_disjoint_and_seeded(full_splits) -> None:
    images = {s: set(d.source_ids["image"].tolist()) for s, d in full_splits.items()}
    questions = {s: set(d.source_ids["text"].tolist()) for s, d in full_splits.items()}
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        assert not images[a] & images[b] and not questions[a] & questions[b]
    assert images["train"] | images["val"] == set(range(4000))
    same = easy_vqa.split_image_ids("val", seed=0)
    assert np.array_equal(same, easy_vqa.split_image_ids("val", seed=0))
    assert not np.array_equal(same, easy_vqa.split_image_ids("val", seed=1))
    # A smaller training set leaves val and test as they are.
    assert np.array_equal(same, easy_vqa.split_image_ids("val", seed=0, num_train=100))
    tiny = load_dataset("easy-vqa", "train", **TINY)
    assert len(set(tiny.source_ids["image"].tolist())) == 24 and tiny[0]["image"].shape == (3, 16, 16)


@pytest.mark.parametrize(
    ("options", "message"),
    [({"num_train": 3900}, "at most 4000"), ({"num_test": 1001}, "num_test"), ({"colour": 1}, "unknown")],
)
def test_bad_options(options, message) -> None:
    with pytest.raises(ValueError, match=message):
        dataset_info("easy-vqa", **options)


def test_image_tokens_with_positions() -> None:
    torch.manual_seed(0)
    plain = ImageEncoder(3, 12, channels=(4, 8)).eval()
    positioned = ImageEncoder(3, 12, channels=(4, 8), token_positions=True).eval()
    assert plain.state_dict().keys() == positioned.state_dict().keys()
    positioned.load_state_dict(plain.state_dict())
    images = torch.rand(2, 3, 16, 16)
    pooled, tokens, mask = positioned.forward_with_tokens(images)
    assert pooled.shape == (2, 12) and tokens.shape == (2, 8 * 8, 12) and mask is None
    torch.testing.assert_close(pooled, plain(images))
    torch.testing.assert_close(positioned(images), plain(images))
    plain_tokens, _ = plain.forward_tokens(images)
    torch.testing.assert_close(plain_tokens.mean(dim=1), pooled)
    torch.testing.assert_close(tokens - plain_tokens, sinusoidal_positions_2d(8, 8, 12).expand(2, -1, -1))
    torch.testing.assert_close(positioned.forward_tokens(images)[0], tokens)
    table = sinusoidal_positions_2d(3, 5, 7)
    assert table.shape == (15, 7) and len({tuple(row.tolist()) for row in table}) == 15


@pytest.mark.parametrize("kind", ["lstm", "transformer"])
def test_question_tokens_and_pooled(kind: str) -> None:
    torch.manual_seed(0)
    encoder = TextEncoder(20, 16, kind=kind, embed_dim=16, hidden=16).eval()
    ids = torch.tensor([[2, 3, 4, 5], [6, 7, 0, 0]])
    lengths = torch.tensor([4, 2])
    pooled, tokens, mask = encoder.forward_with_tokens(ids, lengths)
    torch.testing.assert_close(pooled, encoder(ids, lengths))
    expected_tokens, expected_mask = encoder.forward_tokens(ids, lengths)
    torch.testing.assert_close(tokens, expected_tokens)
    assert tokens.shape == (2, 4, 16) and mask.tolist() == [[False] * 4, [False, False, True, True]]
    assert torch.equal(mask, expected_mask)


def test_film_blocks_use_the_film_layer() -> None:
    assert type(FiLMBlock(4, 3).film) is FiLM
    layer = FiLM(4, 3)
    assert {k: tuple(v.shape) for k, v in layer.state_dict().items()} == {"weight": (8, 3), "bias": (8,)}
    features, condition = torch.randn(2, 4, 5, 5), torch.randn(2, 3)
    gamma, beta = (condition @ layer.weight.T + layer.bias).split(4, dim=1)
    expected = features * (1 + gamma[:, :, None, None]) + beta[:, :, None, None]
    torch.testing.assert_close(layer(features, condition), expected)


def _tiny_batch():
    dataset = load_dataset("easy-vqa", "train", **TINY)
    return collate([dataset[i] for i in range(6)]), dataset_info("easy-vqa", **TINY)


@pytest.mark.parametrize("fusion", VQA_FUSIONS)
def test_every_fusion_forward_backward(fusion: str) -> None:
    batch, info = _tiny_batch()
    torch.manual_seed(0)
    model = build_vqa_model(info, fusion=fusion, hidden=16, image_channels=(4, 8))
    logits = model(batch)
    assert logits.shape == (6, 13) and torch.isfinite(logits).all()
    torch.nn.functional.cross_entropy(logits, batch["label"]).backward()
    unused = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not unused, unused
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(batch), model(batch))


@pytest.mark.parametrize("modality", ["text", "image"])
def test_single_modality_baselines(modality: str) -> None:
    batch, info = _tiny_batch()
    model = build_vqa_model(info, modalities=[modality], hidden=16, image_channels=(4, 8))
    assert model.modalities == (modality,)
    assert model({k: v for k, v in batch.items() if k.startswith(modality)}).shape == (6, 13)
    with pytest.raises(ValueError, match="needs the image and the question"):
        build_vqa_model(info, fusion="film", modalities=[modality], hidden=16)


def test_model_checks() -> None:
    with pytest.raises(ValueError, match="fusion"):
        VQAModel(None, TextEncoder(10, 8), "bilinear")
    with pytest.raises(ValueError, match="task='vqa'"):
        TrainConfig(task="vqa", dataset="av-digits")


def test_vqa_metrics() -> None:
    labels = np.array([0, 1, 2, 2])
    probabilities = np.eye(3)[[0, 2, 2, 1]] * 0.8 + 0.2 / 3
    metrics = vqa_metrics(labels, probabilities, ["a", "b", "a", "b"])
    assert metrics["accuracy"] == 0.5 and metrics["count"] == 4
    assert metrics["accuracy_by_type"] == {"a": 1.0, "b": 0.0}
    with pytest.raises(ValueError, match="question_types"):
        vqa_metrics(labels, probabilities, ["a"])


def test_train_and_evaluate_from_the_command_line(tmp_path, capsys) -> None:
    out = tmp_path / "film"
    args = ["train", "--task", "vqa", "--dataset", "easy-vqa", "--fusion", "film", "--out", str(out)]
    assert main([*args, *TINY_FLAGS]) == 0
    assert "accuracy yes_no" in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    test = metrics["test"]
    assert set(test["accuracy_by_type"]) == {"shape", "color", "yes_no"}
    assert test["count"] == len(load_dataset("easy-vqa", "test", **TINY))
    assert 0.0 <= test["accuracy"] <= 1.0 and metrics["config"]["task"] == "vqa"
    assert main(["evaluate", str(out / "best.pt"), "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["accuracy"] == pytest.approx(test["accuracy"])
    assert evaluated["accuracy_by_type"] == pytest.approx(test["accuracy_by_type"])
    assert evaluated["count"] == test["count"]
    assert main(["evaluate", str(out / "best.pt")]) == 0
    assert "(questions)" in capsys.readouterr().out


def test_question_only_baseline_from_the_command_line(tmp_path, capsys) -> None:
    out = tmp_path / "text"
    args = ["train", "--task", "vqa", "--dataset", "easy-vqa", "--modalities", "text", "--out", str(out)]
    assert main([*args, *TINY_FLAGS, "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert set(printed["accuracy_by_type"]) == {"shape", "color", "yes_no"}
    assert json.loads((out / "metrics.json").read_text())["config"]["modalities"] == ["text"]
