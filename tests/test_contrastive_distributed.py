"""`ContrastiveLoss` data-parallel: 2 CPU processes (gloo, under torch.distributed.run), each with its
half of a global batch through a two-tower model wrapped in DDP, against one process on the whole
batch: the mean of the local losses is the global loss, and every gradient DDP averages (towers,
``logit_scale``, ``logit_bias``) is the one-process gradient; unequal local batches raise."""

from __future__ import annotations

import pytest
import torch

from tests._contrastive_ddp_worker import CASES, TwoTowers, global_batch
from tests._torchrun import run_two_processes

PER_PROCESS_BATCH = 6
# float64 throughout; the two sides sum the same terms in another grouping (per rank, then the
# all-reduce), so only rounding separates them.
TIGHT = {"rtol": 1e-10, "atol": 1e-12}


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("contrastive_ddp")
    run_two_processes("_contrastive_ddp_worker.py", str(out), str(PER_PROCESS_BATCH), timeout=120)
    return [torch.load(out / f"rank{rank}.pt", weights_only=True) for rank in (0, 1)]


@pytest.mark.parametrize("case", list(CASES))
def test_two_processes_match_one_process_on_the_global_batch(ranks, case):
    kind, bias = CASES[case]
    single = TwoTowers(kind, bias)
    images, texts = global_batch(2 * PER_PROCESS_BATCH)
    loss = single(images, texts)
    loss.backward()
    assert not single.loss.is_distributed()

    rank0, rank1 = ranks[0][case], ranks[1][case]
    assert rank0["distributed"] and rank1["distributed"]
    # Each rank's loss is its own rows' (not the global one); their mean is the global loss.
    assert not torch.allclose(rank0["local_loss"], rank1["local_loss"])
    assert not torch.allclose(rank0["local_loss"], loss)
    torch.testing.assert_close(rank0["mean_loss"], loss.detach(), **TIGHT)
    torch.testing.assert_close(rank1["mean_loss"], loss.detach(), **TIGHT)

    names = [name for name, _ in single.named_parameters()]
    assert sorted(rank0["grads"]) == sorted(names) == sorted(rank1["grads"])
    assert "loss.logit_scale" in names and ("loss.logit_bias" in names) == (
        kind == "siglip" or bias is not None
    )
    for name, parameter in single.named_parameters():
        torch.testing.assert_close(rank0["grads"][name], rank1["grads"][name], rtol=0, atol=0, msg=name)
        torch.testing.assert_close(rank0["grads"][name], parameter.grad, **TIGHT, msg=name)
        if name != "loss.logit_bias" or kind == "siglip":
            assert parameter.grad.abs().sum() > 1e-6, name  # nothing vacuous


def test_unequal_local_batches_raise_on_every_rank(ranks):
    for rank in ranks:
        message = rank["unequal_error"]
        assert "expected the same local batch size on every process" in message
        assert f"got [{PER_PROCESS_BATCH}, {PER_PROCESS_BATCH - 1}]" in message


def test_fewer_texts_than_images_on_one_rank_raise_on_every_rank(ranks):
    for rank in ranks:
        message = rank["unpaired_error"]
        assert "expected as many text_features rows as image_features rows" in message
        assert f"{{1: ({PER_PROCESS_BATCH}, {PER_PROCESS_BATCH - 1})}} on rank(s) [1]" in message
