"""Data-parallel training under `torchrun`: the process group (gloo on CPU, nccl on GPU) and which
process this is."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Dataset, Subset


@dataclass(frozen=True)
class DistributedContext:
    """This process's place in the run: a single process has rank 0 of world size 1."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_environment(cls, device_type: str) -> DistributedContext:
        """Joins the process group that `torchrun` describes in the environment (``WORLD_SIZE``,
        ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR``...), or returns the single-process context."""
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size <= 1:
            return cls()
        rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
        if not dist.is_initialized():
            backend = "nccl" if device_type == "cuda" else "gloo"
            if device_type == "cuda":
                torch.cuda.set_device(local_rank)
            dist.init_process_group(backend=backend)
        return cls(rank=rank, world_size=world_size, local_rank=local_rank)

    def global_mean(self, total: float, count: int) -> float:
        """``sum(total) / sum(count)`` over the processes (e.g. a loss summed over each shard)."""
        if self.enabled:
            sums = torch.tensor([total, float(count)], dtype=torch.float64)
            dist.all_reduce(sums)
            total, count = float(sums[0]), int(sums[1])
        return total / max(count, 1)

    def all_gather_objects(self, value: Any) -> list[Any]:
        """``value`` of every process, in rank order (picklable values, e.g. CPU tensors)."""
        if not self.enabled:
            return [value]
        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, value)
        return gathered

    def broadcast_buffers(self, model: nn.Module) -> None:
        """Copies the first process's buffers (e.g. BatchNorm running statistics) into every process's
        ``model``: parameters stay equal under DistributedDataParallel, buffers updated by each
        process's own forward passes may not."""
        if self.enabled:
            for buffer in model.buffers():
                dist.broadcast(buffer, src=0)

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def shutdown(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()


def evaluation_shard(model: nn.Module, dataset: Dataset, dist_context: DistributedContext | None) -> Subset:
    """The part of ``dataset`` this process evaluates: all of it alone, every ``world_size``-th item
    under several processes, after taking the first process's buffers (BatchNorm statistics are
    per process on CPU), so that the gathered results come in dataset order."""
    indices = list(range(len(dataset)))
    if dist_context is not None and dist_context.enabled:
        dist_context.broadcast_buffers(model)
        indices = indices[dist_context.rank :: dist_context.world_size]
    return Subset(dataset, indices)
