"""One process of the 2-process DDP test (started by torch.distributed.run): trains the tiny audio +
text model and saves this rank's final weights to ``OUT/rank<r>.pt``."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from mmfast.train.trainer import Trainer
from tests._train_configs import ddp_config

if __name__ == "__main__":
    out = Path(sys.argv[1])
    trainer = Trainer(ddp_config(batch_size=int(sys.argv[2])), out / "ddp", progress=False)
    trainer.fit()
    torch.save(trainer.model.state_dict(), out / f"rank{trainer.dist.rank}.pt")
    trainer.dist.shutdown()
