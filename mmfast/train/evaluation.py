"""Evaluation of a classifier (or a VQA model) on a dataset split, and of a saved checkpoint (a
classifier's, a VQA model's or a retrieval dual encoder's)."""

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
from mmfast.data.registry import has_seeded_test_set
from mmfast.train.build import build_model
from mmfast.train.checkpoint import MODEL_KEYS, CheckpointError, checkpoint_config, load_checkpoint
from mmfast.train.distributed import DistributedContext, evaluation_shard
from mmfast.train.metrics import classification_metrics
from mmfast.train.retrieval import evaluate_retrieval
from mmfast.train.runtime import resolve_device
from mmfast.train.vqa import question_subtypes_of, question_types_of, vqa_metrics

EVAL_BATCH_SIZE = 256


@torch.no_grad()
def evaluate_model(
    model: nn.Module,
    dataset: Dataset,
    device: torch.device,
    autocast: Callable[[], AbstractContextManager[Any]] = nullcontext,
    batch_size: int = EVAL_BATCH_SIZE,
    dist: DistributedContext | None = None,
) -> dict[str, Any]:
    """Mean cross-entropy (``"loss"``) and :func:`classification_metrics` of ``model`` on
    ``dataset``, in eval mode, from softmax probabilities of float32 logits.

    With a distributed context of several processes (every process calls this), each process
    evaluates every ``world_size``-th sample, after taking the first process's buffers (BatchNorm
    statistics are per process on CPU), and every process returns the metrics of the whole dataset,
    computed from the gathered predictions in dataset order."""
    loss, y, p = predict(model, dataset, device, autocast, batch_size, dist)
    metrics = classification_metrics(y.numpy(), p.numpy())
    metrics["loss"] = float(loss.sum()) / len(y)
    return metrics


@torch.no_grad()
def evaluate_vqa(
    model: nn.Module,
    dataset: Dataset,
    device: torch.device,
    autocast: Callable[[], AbstractContextManager[Any]] = nullcontext,
    batch_size: int = EVAL_BATCH_SIZE,
    dist: DistributedContext | None = None,
) -> dict[str, Any]:
    """:func:`evaluate_model` of a VQA model plus the accuracy per question type
    (``"accuracy_by_type"``, from ``dataset.extras["question_types"]``; ``"accuracy_by_subtype"``
    too when the dataset names finer subtypes) and ``"count"``, the number of questions
    (:func:`~mmfast.train.vqa.vqa_metrics`); sharded as :func:`evaluate_model` is."""
    kinds = question_types_of(dataset)
    loss, y, p = predict(model, dataset, device, autocast, batch_size, dist)
    metrics = vqa_metrics(y.numpy(), p.numpy(), kinds, question_subtypes_of(dataset))
    metrics["loss"] = float(loss.sum()) / len(y)
    return metrics


@torch.no_grad()
def predict(
    model: nn.Module,
    dataset: Dataset,
    device: torch.device,
    autocast: Callable[[], AbstractContextManager[Any]] = nullcontext,
    batch_size: int = EVAL_BATCH_SIZE,
    dist: DistributedContext | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample cross-entropy ``[N]`` (float64), labels ``[N]`` and softmax probabilities
    ``[N, C]`` of ``model`` on every sample of ``dataset``, in dataset order, in eval mode (sharded
    over the processes as :func:`evaluate_model` describes)."""
    if len(dataset) == 0:
        raise ValueError("dataset: expected at least one sample to evaluate")
    model.eval()
    sharded = dist is not None and dist.enabled
    shard = evaluation_shard(model, dataset, dist)
    indices = shard.indices
    losses, labels, probabilities = [], [], []
    for batch in DataLoader(shard, batch_size=batch_size, shuffle=False, collate_fn=collate):
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        target = batch.pop("label")
        with autocast():
            logits = model(batch).float()
        losses.append(F.cross_entropy(logits, target, reduction="none").double().cpu())
        labels.append(target.cpu())
        probabilities.append(torch.softmax(logits, dim=-1).cpu())
    # A process with no sample (a dataset smaller than the world) contributes nothing.
    per_sample = None
    if indices:
        per_sample = (torch.tensor(indices), torch.cat(losses), torch.cat(labels), torch.cat(probabilities))
    if sharded:
        per_sample = _in_dataset_order(dist.all_gather_objects(per_sample))
    _, loss, y, p = per_sample
    return loss, y, p


def _in_dataset_order(shards: list[tuple[torch.Tensor, ...] | None]) -> tuple[torch.Tensor, ...]:
    """The per-sample tensors of every process's shard, concatenated and sorted by dataset index."""
    columns = [torch.cat(parts) for parts in zip(*(shard for shard in shards if shard is not None))]
    order = torch.argsort(columns[0])
    return tuple(column[order] for column in columns)


def evaluate_checkpoint(
    path: str | os.PathLike, split: str = "test", device: str | None = None, data_seed: int | None = None
) -> dict[str, Any]:
    """Metrics of the weights in checkpoint ``path`` on ``split`` of the dataset it was trained on
    (same options and seed, so the same split), with the run's autocast setting: those of
    :func:`evaluate_model` for a classifier, of :func:`~mmfast.train.retrieval.evaluate_retrieval`
    (loss over batches of the run's batch size) for a retrieval run, of :func:`evaluate_vqa` for a
    VQA run; plus ``"epoch"``.

    With ``data_seed`` the test split is generated afresh with that seed instead of the run's
    (``"data_seed"`` is then in the metrics too), so that the figures cannot come from images seen
    in training; only datasets that generate their test set from the seed (Sort-of-CLEVR) allow it.

    Raises:
        ValueError: ``data_seed`` with a split other than ``test``, or for a dataset with a fixed
            test set.
    """
    state = load_checkpoint(path, required=MODEL_KEYS)
    config = checkpoint_config(state, path)
    if data_seed is not None:
        if split != "test":
            raise ValueError(f"data_seed: a fresh set is generated for the test split only, not {split!r}")
        if not has_seeded_test_set(config.dataset):
            raise ValueError(
                f"data_seed: {config.dataset} has a fixed test set (its data are read, not generated "
                "from a seed); --data-seed applies to generated datasets such as sort-of-clevr"
            )
    target = resolve_device(device or config.device)
    model = build_model(config)
    try:
        model.load_state_dict(state["model"])
    except (RuntimeError, TypeError, AttributeError) as error:
        raise CheckpointError.of(path, "its weights do not fit the model of its config", error) from error
    model.to(target)
    seed = config.seed if data_seed is None else int(data_seed)
    dataset = load_dataset(config.dataset, split, seed=seed, **config.dataset_options)

    def autocast() -> AbstractContextManager[Any]:
        if config.autocast == "bf16":
            return torch.autocast(target.type, dtype=torch.bfloat16)
        return nullcontext()

    if config.task == "retrieval":
        metrics = evaluate_retrieval(model, dataset, target, autocast, loss_batch_size=config.batch_size)
    elif config.task == "vqa":
        metrics = evaluate_vqa(model, dataset, target, autocast)
    else:
        metrics = evaluate_model(model, dataset, target, autocast)
    metrics["epoch"] = int(state.get("epoch", 0))
    if data_seed is not None:
        metrics["data_seed"] = int(data_seed)
    return metrics
