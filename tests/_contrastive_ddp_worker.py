"""One process of the 2-process `ContrastiveLoss` test (started by torch.distributed.run, gloo): for
each case, the tiny two-tower model wrapped in DDP takes this rank's half of the global batch, one
backward; then calls with a local batch of another size than the other rank's, and with fewer texts
than images on one rank. Writes the losses, the averaged gradients and the error messages to
``OUT/rank<r>.pt``.

``TwoTowers``, ``CASES`` and ``global_batch`` are shared with the test, which runs the same model on
the whole batch in one process."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from mmfast.nn import ContrastiveLoss

# name -> (kind, init_logit_bias); a CLIP bias gets a zero gradient, but it must still be averaged.
CASES = {"clip": ("clip", None), "clip_bias": ("clip", -2.0), "siglip": ("siglip", None)}
IMAGE_DIM, TEXT_DIM, EMBED_DIM = 10, 7, 6


class TwoTowers(nn.Module):
    """Linear image and text towers, L2 normalisation, the contrastive loss (float64)."""

    def __init__(self, kind: str, init_logit_bias: float | None) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.image_tower = nn.Linear(IMAGE_DIM, EMBED_DIM, dtype=torch.float64)
        self.text_tower = nn.Linear(TEXT_DIM, EMBED_DIM, dtype=torch.float64)
        # Not the defaults, so that nothing sits at a special value (SigLIP's init is log 10, -10).
        self.loss = ContrastiveLoss(
            kind, init_logit_scale=2.3, init_logit_bias=init_logit_bias, dtype=torch.float64
        )

    def forward(self, images: torch.Tensor, texts: torch.Tensor) -> torch.Tensor:
        image = F.normalize(self.image_tower(images), dim=-1)
        text = F.normalize(self.text_tower(texts), dim=-1)
        return self.loss(image, text)


def global_batch(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The global batch of ``size`` image and text inputs, the same in every process."""
    generator = torch.Generator().manual_seed(1234)
    images = torch.randn(size, IMAGE_DIM, generator=generator, dtype=torch.float64)
    texts = torch.randn(size, TEXT_DIM, generator=generator, dtype=torch.float64)
    return images, texts


def main(out: Path, per_process_batch: int) -> None:
    dist.init_process_group("gloo")
    rank, world_size = dist.get_rank(), dist.get_world_size()
    images, texts = global_batch(world_size * per_process_batch)
    rows = slice(rank * per_process_batch, (rank + 1) * per_process_batch)
    record: dict[str, object] = {}
    for name, (kind, bias) in CASES.items():
        model = TwoTowers(kind, bias)
        ddp = nn.parallel.DistributedDataParallel(model)
        loss = ddp(images[rows], texts[rows])
        loss.backward()
        mean = loss.detach().clone()
        dist.all_reduce(mean)
        record[name] = {
            "distributed": model.loss.is_distributed(),
            "local_loss": loss.detach(),
            "mean_loss": mean / world_size,
            "grads": {n: p.grad for n, p in model.named_parameters()},
        }
    # Unequal local batches, then images and texts unpaired on rank 1 alone: every rank must raise
    # the same clear error (none may be left waiting in a collective).
    model = TwoTowers("siglip", None)
    text_rows = {0: per_process_batch, 1: per_process_batch - 1}[rank]
    for name, image_rows in (("unequal", per_process_batch - rank), ("unpaired", per_process_batch)):
        try:
            model(images[:image_rows], texts[: text_rows if name == "unpaired" else image_rows])
            record[f"{name}_error"] = ""
        except ValueError as error:
            record[f"{name}_error"] = str(error)
    torch.save(record, out / f"rank{rank}.pt")
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]))
