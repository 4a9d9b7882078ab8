"""One process of the 2-process DDP test (started by torch.distributed.run): trains the tiny audio +
text model, saves this rank's final weights to ``OUT/rank<r>.pt``, then evaluates the test split
(sharded between the processes) and writes the metrics and the number of samples this process
ran through the model to ``OUT/eval<r>.json``."""

from __future__ import annotations

import json
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
    evaluated = []
    trainer.model.register_forward_hook(lambda module, args, output: evaluated.append(len(output)))
    record = {"metrics": trainer.evaluate("test"), "evaluated": sum(evaluated)}
    (out / f"eval{trainer.dist.rank}.json").write_text(json.dumps(record))
    trainer.dist.shutdown()
