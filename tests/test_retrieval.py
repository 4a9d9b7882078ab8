"""Image-text retrieval: chunked ranking against brute force, recall / median rank, the dual encoder,
training, evaluation and resume through the Trainer and the command line."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from mmfast.cli import main
from mmfast.cli.parser import build_parser
from mmfast.cli.train import config_from_args
from mmfast.data import collate, dataset_info, load_dataset
from mmfast.encoders import ImageEncoder, TextEncoder
from mmfast.models import DualEncoder, ProjectionHead, SpatialProjection, build_dual_encoder
from mmfast.train.checkpoint import load_checkpoint
from mmfast.train.config import TrainConfig
from mmfast.train.evaluation import evaluate_checkpoint
from mmfast.train.records import read_jsonl
from mmfast.train.retrieval import (
    RETRIEVAL_METRIC_NAMES,
    match_ranks,
    recall_metrics,
    retrieval_metrics,
)
from mmfast.train.trainer import Trainer

TINY_SCENES = {"num_train": 64, "num_val": 24, "num_test": 40, "image_size": 12}
TEST_KEYS = {
    "i2t_recall@1",
    "i2t_recall@5",
    "i2t_recall@10",
    "t2i_recall@1",
    "t2i_recall@5",
    "t2i_recall@10",
    "i2t_median_rank",
    "t2i_median_rank",
    "count",
}
TINY_TRAIN = [
    "train", "--task", "retrieval", "--dataset", "scenes", "--num-train", "64", "--num-val", "24",
    "--num-test", "40", "--image-size", "12", "--hidden", "16", "--embed-dim", "16", "--batch-size", "16",
    "--epochs", "2", "--no-progress",
]  # fmt: skip


def tiny_retrieval_config(**overrides) -> TrainConfig:
    values = {
        "task": "retrieval",
        "dataset": "scenes",
        "dataset_options": dict(TINY_SCENES),
        "hidden": 16,
        "embed_dim": 16,
        "epochs": 2,
        "batch_size": 16,
        "patience": 0,
        "device": "cpu",
    }
    values.update(overrides)
    return TrainConfig(**values)


def brute_force_ranks(queries: torch.Tensor, gallery: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Ranks from the whole score matrix, sorted by decreasing score, ties in gallery order."""
    order = torch.argsort(-(queries @ gallery.T), dim=1, stable=True)
    return (order == targets[:, None]).int().argmax(dim=1) + 1


# -- ranking ----------------------------------------------------------------------------------
@pytest.mark.parametrize("chunk_size", [1, 3, 7, 64, 1000])
@pytest.mark.parametrize("ties", [False, True])
def test_chunked_ranks_equal_brute_force(chunk_size, ties) -> None:
    generator = torch.Generator().manual_seed(chunk_size)
    if ties:
        # Few distinct small integers: many equal scores, all exact in float32.
        queries = torch.randint(-1, 2, (50, 3), generator=generator).float()
        gallery = torch.randint(-1, 2, (50, 3), generator=generator).float()
    else:
        queries = torch.nn.functional.normalize(torch.randn(50, 8, generator=generator), dim=1)
        gallery = torch.nn.functional.normalize(torch.randn(50, 8, generator=generator), dim=1)
    targets = torch.arange(50)
    expected = brute_force_ranks(queries, gallery, targets)
    assert torch.equal(match_ranks(queries, gallery, chunk_size=chunk_size), expected)
    if ties:
        assert len(set((queries @ gallery.T)[0].tolist())) < 50  # the case has ties
    # A gallery of another size, with explicit targets.
    targets = torch.randint(0, 30, (50,), generator=generator)
    expected = brute_force_ranks(queries, gallery[:30], targets)
    assert torch.equal(match_ranks(queries, gallery[:30], targets, chunk_size=chunk_size), expected)


def test_ties_are_broken_by_gallery_index() -> None:
    gallery = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    queries = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    # Items 0-2 tie at 1 and item 3 scores 0: the true match at index t ranks t + 1 among the tied.
    assert match_ranks(queries, gallery).tolist() == [1, 2, 3, 4]


class _MatmulShapes(TorchDispatchMode):
    """Records the output shape of every matrix product run under it."""

    def __init__(self) -> None:
        super().__init__()
        self.shapes: list[tuple[int, ...]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func.overloadpacket in (torch.ops.aten.mm, torch.ops.aten.matmul, torch.ops.aten.addmm):
            self.shapes.append(tuple(out.shape))
        return out


def test_similarities_are_computed_a_chunk_of_queries_at_a_time() -> None:
    queries, gallery = torch.randn(100, 4), torch.randn(100, 4)
    with _MatmulShapes() as recorder:
        match_ranks(queries, gallery, chunk_size=16)
    assert recorder.shapes and max(rows for rows, _ in recorder.shapes) <= 16
    assert all(columns == 100 for _, columns in recorder.shapes)


def test_match_ranks_refuses_bad_input() -> None:
    with pytest.raises(ValueError, match="targets"):
        match_ranks(torch.randn(3, 2), torch.randn(4, 2))
    with pytest.raises(ValueError, match="finite"):
        match_ranks(torch.full((2, 2), math.nan), torch.randn(2, 2))
    with pytest.raises(ValueError, match=r"\[N, D\]"):
        match_ranks(torch.randn(3, 2), torch.randn(3, 5))


# -- metrics ----------------------------------------------------------------------------------
def test_recall_and_median_rank_by_hand() -> None:
    metrics = recall_metrics(torch.tensor([1, 2, 6, 11]))
    assert metrics == {"recall@1": 0.25, "recall@5": 0.5, "recall@10": 0.75, "median_rank": 4.0}
    assert recall_metrics([3, 1, 7])["median_rank"] == 3.0


def test_retrieval_metrics_of_a_hand_checked_gallery() -> None:
    # Three pairs in 2-D: images e0, e1, e0; texts e0, e1, e1.
    # i2t: image 0 scores the texts [1, 0, 0]: its match, text 0, ranks 1. Image 1: [0, 1, 1], text 1
    #      ties with text 2 and comes first: rank 1. Image 2: [1, 0, 0], text 2 is behind text 0 and
    #      behind text 1 (tied, lower index): rank 3. Ranks [1, 1, 3].
    # t2i: text 0 scores the images [1, 0, 1]: rank 1; text 1: [0, 1, 0]: rank 1; text 2: [0, 1, 0],
    #      image 2 behind image 1 and image 0 (tied, lower index): rank 3. Ranks [1, 1, 3].
    images = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    texts = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    metrics = retrieval_metrics(images, texts, chunk_size=2)
    assert metrics["i2t_recall@1"] == pytest.approx(2 / 3) and metrics["t2i_recall@1"] == pytest.approx(2 / 3)
    assert metrics["i2t_recall@5"] == 1.0 and metrics["t2i_recall@10"] == 1.0
    assert metrics["i2t_median_rank"] == 1.0 and metrics["t2i_median_rank"] == 1.0
    assert metrics["mean_recall@1"] == pytest.approx(2 / 3)
    assert metrics["count"] == 3
    assert set(RETRIEVAL_METRIC_NAMES) <= set(metrics)


def test_identical_embeddings_retrieve_perfectly() -> None:
    embeddings = torch.nn.functional.normalize(torch.randn(300, 16), dim=1)
    metrics = retrieval_metrics(embeddings, embeddings.clone())
    assert all(metrics[f"{d}_recall@1"] == 1.0 and metrics[f"{d}_median_rank"] == 1.0 for d in ("i2t", "t2i"))
    shuffled = retrieval_metrics(embeddings, embeddings[torch.randperm(300)])
    assert shuffled["i2t_recall@1"] < 0.05


# -- the model --------------------------------------------------------------------------------
@pytest.mark.parametrize("loss", ["clip", "siglip"])
def test_dual_encoder_embeds_on_the_unit_sphere_and_returns_a_differentiable_loss(loss) -> None:
    info = dataset_info("scenes", **TINY_SCENES)
    model = build_dual_encoder(info, loss=loss, embed_dim=24, hidden=16)
    batch = collate([load_dataset("scenes", "train", **TINY_SCENES)[i] for i in range(6)])
    images = model.encode_image(batch["image"])
    texts = model.encode_text(batch["text"], batch["text_lengths"])
    assert images.shape == texts.shape == (6, 24)
    torch.testing.assert_close(images.norm(dim=1), torch.ones(6))
    torch.testing.assert_close(texts.norm(dim=1), torch.ones(6))
    value = model(batch)
    assert value.dim() == 0 and torch.isfinite(value)
    value.backward()
    assert model.loss.logit_scale.grad is not None
    assert model.image_encoder.stem[0].weight.grad.abs().sum() > 0
    assert model.text_encoder.embedding.weight.grad.abs().sum() > 0


def test_dual_encoder_composes_any_modules() -> None:
    info = dataset_info("scenes", **TINY_SCENES)

    class DotLoss(torch.nn.Module):
        def forward(self, image, text):
            return -(image * text).sum(dim=1).mean()

    model = DualEncoder(
        ImageEncoder(3, 8, channels=(4,)),
        TextEncoder(info.vocab_size, 8, hidden=8),
        SpatialProjection(8, 5, grid=2),
        ProjectionHead(8, 5, hidden=12),
        DotLoss(),
    )
    batch = collate([load_dataset("scenes", "val", **TINY_SCENES)[i] for i in range(3)])
    model.eval()
    with torch.no_grad():
        images, texts = model.embed(batch)
        assert images.shape == texts.shape == (3, 5)
        assert model(batch).item() == pytest.approx(-float((images * texts).sum(dim=1).mean()))
    with pytest.raises(ValueError, match="keys"):
        model({"image": batch["image"]})


def test_build_dual_encoder_needs_images_and_text() -> None:
    with pytest.raises(ValueError, match="images and text"):
        build_dual_encoder(dataset_info("av-digits"))
    with pytest.raises(ValueError, match="loss"):
        build_dual_encoder(dataset_info("scenes"), loss="triplet")


# -- training, evaluation, resume -------------------------------------------------------------
def test_classification_stays_the_default() -> None:
    assert TrainConfig().task == "classification"
    assert config_from_args(build_parser().parse_args(["train"])).task == "classification"
    parsed = config_from_args(build_parser().parse_args(["train", "--task", "retrieval", "--loss", "siglip"]))
    assert (parsed.task, parsed.loss) == ("retrieval", "siglip")
    with pytest.raises(ValueError, match="task"):
        TrainConfig(task="ranking")
    with pytest.raises(ValueError, match="loss"):
        TrainConfig(loss="triplet")


def test_cli_trains_and_evaluates_a_retrieval_run(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    assert main([*TINY_TRAIN, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "i2t_recall@1" in printed and "mean recall@1" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert TEST_KEYS <= set(metrics["test"])
    assert metrics["test"]["count"] == TINY_SCENES["num_test"]
    assert all(0 <= metrics["test"][f"{d}_recall@{k}"] <= 1 for d in ("i2t", "t2i") for k in (1, 5, 10))
    assert 1 <= metrics["test"]["i2t_median_rank"] <= TINY_SCENES["num_test"]
    assert {"last.pt", "best.pt", "log.jsonl", "curves.png"} <= {p.name for p in out.iterdir()}
    assert "best_val_mean_recall@1" in metrics
    records = read_jsonl(out / "log.jsonl")
    assert len(records) == 2 and all("val_mean_recall@1" in r and "val_i2t_recall@5" in r for r in records)

    assert main(["evaluate", str(out / "best.pt"), "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    for key in TEST_KEYS:
        assert evaluated[key] == metrics["test"][key], key
    assert evaluated["loss"] == pytest.approx(metrics["test"]["loss"], rel=1e-5)
    assert main(["evaluate", str(out / "best.pt")]) == 0
    assert "t2i_median_rank" in capsys.readouterr().out


def test_resumed_retrieval_run_ends_with_the_weights_of_an_uninterrupted_run(tmp_path) -> None:
    config = tiny_retrieval_config(loss="siglip", epochs=2, warmup_ratio=0.3)
    whole = Trainer(config, tmp_path / "whole", progress=False)
    whole_result = whole.fit()
    first = Trainer(config, tmp_path / "split", progress=False)
    assert first.fit(max_epochs=1) == {}
    torch.manual_seed(99)
    resumed = Trainer.resume(tmp_path / "split" / "last.pt", progress=False)
    assert resumed.epoch == 1 and resumed.config.task == "retrieval"
    resumed_result = resumed.fit()
    for name, value in whole.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[name], value), name
    assert resumed_result["test"] == whole_result["test"]
    assert [r["train_loss"] for r in read_jsonl(tmp_path / "split" / "log.jsonl")] == [
        r["train_loss"] for r in whole.history
    ]
    assert load_checkpoint(tmp_path / "split" / "best.pt")["config"]["loss"] == "siglip"
    assert evaluate_checkpoint(tmp_path / "split" / "best.pt")["count"] == TINY_SCENES["num_test"]


def test_the_demo_table_shows_the_retrieval_results() -> None:
    from mmfast.train.demo import RetrievalResult, _format_retrieval_table, retrieval_config

    test = {"count": 1000, "i2t_median_rank": 1.0, "t2i_median_rank": 2.5}
    for direction, base in (("i2t", 0.6125), ("t2i", 0.4875)):
        test.update({f"{direction}_recall@{k}": min(1.0, base + k / 100) for k in (1, 5, 10)})
    table = _format_retrieval_table([RetrievalResult("clip", test, epochs=3, train_pairs=2000, seconds=40.0)])
    assert "0.6225" in table and "0.4975" in table and "2.5" in table and "1000" in table
    assert "image -> text" in table and "text -> image" in table
    assert "met" not in table.lower() and "target" not in table.lower()
    config = retrieval_config(quick=False)
    assert config.task == "retrieval" and config.dataset == "scenes" and config.epochs <= 3


def test_bf16_autocast_trains_a_dual_encoder_with_finite_loss() -> None:
    trainer = Trainer(tiny_retrieval_config(autocast="bf16", epochs=1), progress=False)
    batch = collate([trainer.splits["train"][i] for i in range(16)])
    assert math.isfinite(trainer.train_step(batch))
    assert trainer.evaluate("val")["count"] == TINY_SCENES["num_val"]
