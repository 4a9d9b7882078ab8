"""Small training configurations shared by the training and CLI tests (a few seconds each)."""

from __future__ import annotations

from typing import Any

from mmfast.train.config import TrainConfig

TINY_SYNTHETIC = {"num_samples": 120, "num_classes": 3, "image_size": 8, "n_mels": 8}


def tiny_config(**overrides: Any) -> TrainConfig:
    """Synthetic image + text + audio, 84 training samples, a 16-wide model, no progress bar."""
    values: dict[str, Any] = {
        "dataset": "synthetic",
        "dataset_options": dict(TINY_SYNTHETIC),
        "hidden": 16,
        "epochs": 3,
        "batch_size": 16,
        "lr": 1e-2,
        "patience": 0,
        "device": "cpu",
    }
    values.update(overrides)
    return TrainConfig(**values)


def ddp_config(**overrides: Any) -> TrainConfig:
    """Audio + text only: the image encoder's BatchNorm uses per-process batch statistics on CPU
    (SyncBatchNorm needs GPUs), which a single process on the global batch cannot reproduce. No
    dropout, so the processes draw nothing from their RNGs. A small learning rate: Adam's update
    divides by the gradient's own scale, so the rounding of the gradient all-reduce (a different
    summation order) reaches the weights in proportion to the learning rate."""
    values: dict[str, Any] = {"modalities": ["audio", "text"], "dropout": 0.0, "epochs": 2, "lr": 1e-3}
    values.update(overrides)
    return tiny_config(**values)
