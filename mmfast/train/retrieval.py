"""Cross-modal retrieval: ranks of the true matches over a whole gallery, computed in chunks of
queries (never the ``N x N`` similarity matrix at once), recall@K and median rank both ways, and
the evaluation of a dual encoder on a dataset split."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from mmfast.data import collate
from mmfast.train.distributed import DistributedContext, evaluation_shard

RECALL_KS = (1, 5, 10)
DIRECTIONS = ("i2t", "t2i")
# The metrics of a retrieval evaluation (besides "loss" and "count"), in the order they are logged;
# "mean_recall@1", the mean of both directions' recall@1, selects the best epoch.
RETRIEVAL_METRIC_NAMES: tuple[str, ...] = (
    *(f"{d}_recall@{k}" for d in DIRECTIONS for k in RECALL_KS),
    *(f"{d}_median_rank" for d in DIRECTIONS),
    "mean_recall@1",
)
SELECTION_METRIC = "mean_recall@1"
QUERY_CHUNK = 256
EVAL_BATCH_SIZE = 256


@torch.no_grad()
def match_ranks(
    queries: torch.Tensor,
    gallery: torch.Tensor,
    targets: torch.Tensor | None = None,
    chunk_size: int = QUERY_CHUNK,
) -> torch.Tensor:
    """The rank (1 = first) of each query's true match when the gallery is sorted by similarity.

    Similarities are dot products (cosines, for unit-norm embeddings), computed for ``chunk_size``
    queries at a time against the whole gallery; of each chunk only the ranks are kept, so memory is
    ``chunk_size x M``, never ``N x M``. Ties are broken by gallery index, as a stable sort by
    decreasing similarity orders them: the rank of the match ``t`` of a query is ``1 + #{j: s_j >
    s_t} + #{j < t: s_j = s_t}``, where every ``s`` comes from the same row of scores.

    Args:
        queries: ``[N, D]`` float embeddings.
        gallery: ``[M, D]`` float embeddings, same dtype and device.
        targets: int64 ``[N]``, the gallery index of each query's match (default: ``arange(N)``,
            query ``i`` matches gallery item ``i``; then ``M`` must equal ``N``).
        chunk_size: queries per matrix product.

    Returns:
        int64 ``[N]`` ranks in ``[1, M]``, on the queries' device.
    """
    if queries.dim() != 2 or gallery.dim() != 2 or queries.shape[1] != gallery.shape[1]:
        raise ValueError(
            "queries, gallery: expected [N, D] and [M, D], "
            f"got {list(queries.shape)} and {list(gallery.shape)}"
        )
    if not (queries.is_floating_point() and gallery.dtype == queries.dtype):
        raise ValueError(
            f"queries, gallery: expected floating tensors of one dtype, got {queries.dtype}, {gallery.dtype}"
        )
    if chunk_size < 1:
        raise ValueError(f"chunk_size: expected a positive int, got {chunk_size}")
    count, size = queries.shape[0], gallery.shape[0]
    if targets is None:
        if size != count:
            raise ValueError(
                f"targets: needed when the gallery ({size}) and the queries ({count}) differ in size"
            )
        targets = torch.arange(count, device=queries.device)
    targets = targets.to(queries.device, torch.int64)
    if targets.shape != (count,) or (count and (int(targets.min()) < 0 or int(targets.max()) >= size)):
        raise ValueError(f"targets: expected {count} gallery indices in [0, {size})")
    if not (bool(torch.isfinite(queries).all()) and bool(torch.isfinite(gallery).all())):
        raise ValueError("queries, gallery: expected finite embeddings")
    columns = torch.arange(size, device=queries.device)
    ranks = torch.empty(count, dtype=torch.int64, device=queries.device)
    for start in range(0, count, chunk_size):
        stop = min(start + chunk_size, count)
        scores = queries[start:stop] @ gallery.T  # [chunk, M]
        target = targets[start:stop]
        true = scores.gather(1, target[:, None])
        ahead = (scores > true) | ((scores == true) & (columns[None, :] < target[:, None]))
        ranks[start:stop] = 1 + ahead.sum(dim=1)
    return ranks


def recall_metrics(ranks: torch.Tensor | np.ndarray, ks: Sequence[int] = RECALL_KS) -> dict[str, float]:
    """``recall@k`` (the fraction of ranks ``<= k``) for each ``k`` and ``median_rank`` (the median
    of the 1-based ranks, the mean of the two middle ones for an even count)."""
    values = np.asarray(ranks.cpu() if isinstance(ranks, torch.Tensor) else ranks, dtype=np.int64)
    if values.ndim != 1 or len(values) == 0 or values.min() < 1:
        raise ValueError(f"ranks: expected a non-empty [N] array of 1-based ranks, got shape {values.shape}")
    metrics = {f"recall@{k}": float(np.mean(values <= k)) for k in ks}
    metrics["median_rank"] = float(np.median(values))
    return metrics


def retrieval_metrics(
    image_embeddings: torch.Tensor,
    text_embeddings: torch.Tensor,
    chunk_size: int = QUERY_CHUNK,
) -> dict[str, Any]:
    """Image-to-text and text-to-image retrieval over the whole gallery of ``N`` pairs (row ``i``
    of each is a pair): ``i2t_recall@{1,5,10}``, ``t2i_recall@{1,5,10}``, ``i2t_median_rank``,
    ``t2i_median_rank``, ``mean_recall@1`` (of both directions) and ``count`` (``N``); ranks from
    :func:`match_ranks`, in float32."""
    images, texts = image_embeddings.float(), text_embeddings.float()
    metrics: dict[str, Any] = {}
    for direction, (queries, gallery) in zip(DIRECTIONS, ((images, texts), (texts, images))):
        ranks = match_ranks(queries, gallery, chunk_size=chunk_size)
        metrics.update({f"{direction}_{name}": value for name, value in recall_metrics(ranks).items()})
    metrics["mean_recall@1"] = (metrics["i2t_recall@1"] + metrics["t2i_recall@1"]) / 2
    metrics["count"] = int(images.shape[0])
    return metrics


@torch.no_grad()
def evaluate_retrieval(
    model: nn.Module,
    dataset: Dataset,
    device: torch.device,
    autocast: Callable[[], AbstractContextManager[Any]] = nullcontext,
    batch_size: int = EVAL_BATCH_SIZE,
    dist: DistributedContext | None = None,
    loss_batch_size: int = EVAL_BATCH_SIZE,
    chunk_size: int = QUERY_CHUNK,
) -> dict[str, Any]:
    """:func:`retrieval_metrics` of a dual encoder (``model.embed(batch)`` -> image and text
    embeddings, ``model.loss``) on every pair of ``dataset``, in eval mode, and ``"loss"``: the mean
    of ``model.loss`` over consecutive batches of ``loss_batch_size`` pairs in dataset order
    (weighted by their sizes; contrastive losses depend on the batch size, so pass the training
    batch size to compare it with the training loss).

    With a distributed context of several processes (every process calls this), each process
    embeds every ``world_size``-th pair with the first process's buffers; the embeddings are
    gathered in dataset order and every process returns the metrics (and the loss, with the loss
    layer's own gathering switched off) of the whole gallery."""
    if len(dataset) == 0:
        raise ValueError("dataset: expected at least one pair to evaluate")
    model.eval()
    sharded = dist is not None and dist.enabled
    shard = evaluation_shard(model, dataset, dist)
    indices = shard.indices
    images, texts = [], []
    for batch in DataLoader(shard, batch_size=batch_size, shuffle=False, collate_fn=collate):
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        with autocast():
            image, text = model.embed(batch)
        images.append(image.float().cpu())
        texts.append(text.float().cpu())
    per_sample = (torch.tensor(indices), torch.cat(images), torch.cat(texts)) if indices else None
    if sharded:
        shards = [s for s in dist.all_gather_objects(per_sample) if s is not None]
        order_source, image_all, text_all = (torch.cat(parts) for parts in zip(*shards))
        order = torch.argsort(order_source)
        image_all, text_all = image_all[order], text_all[order]
    else:
        _, image_all, text_all = per_sample
    metrics = retrieval_metrics(image_all, text_all, chunk_size)
    total = 0.0
    with _gathering_off(model.loss):
        for start in range(0, len(image_all), loss_batch_size):
            stop = min(start + loss_batch_size, len(image_all))
            pair = (image_all[start:stop].to(device), text_all[start:stop].to(device))
            total += float(model.loss(*pair)) * (stop - start)
    metrics["loss"] = total / len(image_all)
    return metrics


@contextmanager
def _gathering_off(loss: nn.Module) -> Iterator[None]:
    """The embeddings are gathered already: a loss layer that would gather every process's features
    (``distributed``, as :class:`mmfast.nn.ContrastiveLoss` has) computes the local loss meanwhile."""
    if not hasattr(loss, "distributed"):
        yield
        return
    saved = loss.distributed
    loss.distributed = False
    try:
        yield
    finally:
        loss.distributed = saved
