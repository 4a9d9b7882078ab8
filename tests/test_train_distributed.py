"""Data-parallel training: 2 CPU processes (gloo) under torch.distributed.run."""

from __future__ import annotations

import json
import math

import torch

from mmfast.train.checkpoint import load_checkpoint
from mmfast.train.trainer import Trainer
from tests._torchrun import run_two_processes
from tests._train_configs import ddp_config

PER_PROCESS_BATCH = 16


def test_two_processes_stay_identical_and_match_one_process_on_the_global_batch(tmp_path) -> None:
    run_two_processes("_ddp_worker.py", str(tmp_path), str(PER_PROCESS_BATCH), timeout=240)

    rank0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    rank1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)

    single = Trainer(ddp_config(batch_size=2 * PER_PROCESS_BATCH), tmp_path / "single", progress=False)
    single.fit()
    for name, value in single.model.state_dict().items():
        torch.testing.assert_close(rank0[name], value, atol=1e-5, rtol=1e-5, msg=name)
    # The last epoch's weights too (rank 0 writes the checkpoints), and they moved from the start.
    ddp_last = load_checkpoint(tmp_path / "ddp" / "last.pt")["model"]
    single_last = load_checkpoint(tmp_path / "single" / "last.pt")["model"]
    for name, value in single_last.items():
        torch.testing.assert_close(ddp_last[name], value, atol=1e-5, rtol=1e-5, msg=name)
    torch.manual_seed(0)
    initial = Trainer(ddp_config(), progress=False).model.state_dict()
    assert any(not torch.allclose(initial[k], single_last[k], atol=1e-4) for k in initial)
    # The logged training loss is the mean over both processes' samples.
    ddp_history = load_checkpoint(tmp_path / "ddp" / "last.pt")["history"]
    for ddp_record, record in zip(ddp_history, single.history):
        assert abs(ddp_record["train_loss"] - record["train_loss"]) < 1e-5

    # Evaluation is sharded: each process ran about half the test split through its model, and both
    # report the metrics of the whole split, those of one process evaluating rank 0's weights.
    records = [json.loads((tmp_path / f"eval{rank}.json").read_text()) for rank in (0, 1)]
    test_size = len(single.splits["test"])
    assert [r["evaluated"] for r in records] == [math.ceil(test_size / 2), test_size // 2]
    assert records[0]["metrics"] == records[1]["metrics"]
    single.model.load_state_dict(rank0)
    expected = single.evaluate("test")
    got = records[0]["metrics"]
    assert got["confusion_matrix"] == expected["confusion_matrix"]
    for name in ("accuracy", "precision_macro", "recall_macro", "f1_macro"):
        assert got[name] == expected[name], name
    assert abs(got["roc_auc"] - expected["roc_auc"]) < 1e-6
    assert abs(got["loss"] - expected["loss"]) < 1e-5
