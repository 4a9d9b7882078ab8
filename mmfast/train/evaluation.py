"""Evaluation of a classifier on a dataset split, and of a saved checkpoint."""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from mmfast.data import collate, load_dataset
from mmfast.train.build import build_model
from mmfast.train.checkpoint import load_checkpoint
from mmfast.train.config import TrainConfig
from mmfast.train.metrics import classification_metrics
from mmfast.train.runtime import resolve_device

EVAL_BATCH_SIZE = 256


@torch.no_grad()
def evaluate_model(
    model: nn.Module,
    dataset: Dataset,
    device: torch.device,
    autocast: Callable[[], AbstractContextManager[Any]] = nullcontext,
    batch_size: int = EVAL_BATCH_SIZE,
) -> dict[str, Any]:
    """Mean cross-entropy (``"loss"``) and :func:`classification_metrics` of ``model`` on
    ``dataset``, in eval mode, from softmax probabilities of float32 logits."""
    model.eval()
    total_loss, labels, probabilities = 0.0, [], []
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate):
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        target = batch.pop("label")
        with autocast():
            logits = model(batch).float()
        total_loss += F.cross_entropy(logits, target, reduction="sum").item()
        labels.append(target.cpu())
        probabilities.append(torch.softmax(logits, dim=-1).cpu())
    y = torch.cat(labels).numpy()
    metrics = classification_metrics(y, torch.cat(probabilities).numpy())
    metrics["loss"] = total_loss / len(y)
    return metrics


def evaluate_checkpoint(
    path: str | os.PathLike, split: str = "test", device: str | None = None
) -> dict[str, Any]:
    """Metrics of the weights in checkpoint ``path`` on ``split`` of the dataset it was trained on
    (same options and seed, so the same split), with the run's autocast setting."""
    state = load_checkpoint(path)
    if "config" not in state or "model" not in state:
        raise ValueError(f"checkpoint: {path} is not a training checkpoint (no config / model)")
    config = TrainConfig.from_dict(state["config"])
    target = resolve_device(device or config.device)
    model = build_model(config)
    model.load_state_dict(state["model"])
    model.to(target)
    dataset = load_dataset(config.dataset, split, seed=config.seed, **config.dataset_options)

    def autocast() -> AbstractContextManager[Any]:
        if config.autocast == "bf16":
            return torch.autocast(target.type, dtype=torch.bfloat16)
        return nullcontext()

    metrics = evaluate_model(model, dataset, target, autocast)
    metrics["epoch"] = int(state.get("epoch", 0))
    return metrics
