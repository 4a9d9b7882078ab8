"""clip_loss and siglip_loss against open_clip-style eager code (it builds the B x B logits) and
torch.compile of it: time, forward and forward+backward, float32 and bfloat16, D = 256 and B from
256 to 65536 (eager only where it fits), and the peak resident memory of one loss step, each
measured in a process of its own (`bench/contrastive_memory.py`)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from bench.conftest import PEAK_MEMORY, time_case
from bench.contrastive_memory import eager_clip, eager_siglip
from mmfast.ops import clip_loss, siglip_loss

DIM = 256
LOSSES = {"clip_loss": (clip_loss, eager_clip), "siglip_loss": (siglip_loss, eager_siglip)}
# Eager and its compiled form build B x B float32 matrices (several, with the gradients): above
# 16384 they need tens of GiB, so they are measured up to there only.
EAGER_MAX_BATCH = 16384
QUICK_BATCHES = (256, 4096)


def _cases():
    for op in LOSSES:
        for batch in (256, 4096, 16384, 65536):
            for dtype in ("float32", "bfloat16"):
                for mode in ("forward", "forward+backward"):
                    for impl in ("mmfast", "eager", "compile"):
                        if impl != "mmfast" and batch > EAGER_MAX_BATCH:
                            continue
                        if batch > EAGER_MAX_BATCH and (dtype != "float32" or mode != "forward+backward"):
                            continue  # the largest batch once: it runs for minutes
                        marks = [pytest.mark.quick] if batch in QUICK_BATCHES else []
                        yield pytest.param(op, batch, dtype, mode, impl, marks=marks)


def _problem(batch: int, dtype: torch.dtype, backward: bool):
    generator = torch.Generator().manual_seed(0)
    image, text = (
        F.normalize(torch.randn(batch, DIM, generator=generator), dim=-1).to(dtype).requires_grad_(backward)
        for _ in range(2)
    )
    scale = torch.tensor(14.0, requires_grad=backward)
    bias = torch.tensor(-10.0, requires_grad=backward)
    return image, text, scale, bias


@pytest.mark.parametrize(("op", "batch", "dtype", "mode", "impl"), list(_cases()))
def test_contrastive_loss_cpu(benchmark, op, batch, dtype, mode, impl):
    fused, eager = LOSSES[op]
    fn = {"mmfast": fused, "eager": eager, "compile": torch.compile(eager)}[impl]
    backward = mode == "forward+backward"
    args = _problem(batch, getattr(torch, dtype), backward)

    def step():
        loss = fn(*args)
        if backward:
            loss.backward()
            for t in args:
                t.grad = None
        return loss

    if batch >= EAGER_MAX_BATCH:
        # Steps of seconds (tens of seconds at 65536): a warm-up and two timed rounds (one at the
        # largest batch) instead of the harness's five or more, which would take many minutes.
        benchmark.group = f"{op} | {mode} | {dtype} | D={DIM} | batch {batch}"
        benchmark.extra_info.update(op=op, impl=impl, mode=mode, dtype=dtype, shape=f"D={DIM}", batch=batch)
        large = batch > EAGER_MAX_BATCH
        benchmark.pedantic(step, rounds=1 if large else 2, warmup_rounds=0 if large else 1, iterations=1)
        return
    time_case(benchmark, step, op=op, impl=impl, mode=mode, dtype=dtype, shape=f"D={DIM}", batch=batch)


def _memory_cases():
    for op in LOSSES:
        for batch in (4096, 16384, 65536):
            for impl in ("mmfast", "eager"):
                if impl == "eager" and batch > EAGER_MAX_BATCH:
                    continue
                marks = [pytest.mark.quick] if batch == 4096 else []
                yield pytest.param(op, batch, impl, marks=marks)


@pytest.mark.parametrize(("op", "batch", "impl"), list(_memory_cases()))
def test_contrastive_loss_peak_memory(op, batch, impl):
    """Peak resident memory of a float32 forward+backward beyond the inputs and their gradients."""
    command = [
        sys.executable, "-m", "bench.contrastive_memory", "--loss", op.removesuffix("_loss"), "--impl", impl,
        "--batch", str(batch), "--dim", str(DIM), "--dtype", "float32", "--mode", "forward+backward",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=3600)
    assert result.returncode == 0, result.stderr[-2000:]
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    PEAK_MEMORY[(op, f"D={DIM}", "float32", batch)][impl] = measured["peak_mib"]
