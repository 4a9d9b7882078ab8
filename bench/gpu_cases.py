"""What the GPU benchmark cases (bench/test_bench_*_gpu.py, marker ``gpu``) share: each timed call
waits for its kernels, and each case also records the peak memory of one call
(``torch.cuda.max_memory_allocated`` beyond what was allocated before it: the inputs and
parameters), which ``python -m bench.report --gpu`` puts beside the speed-ups in
bench/RESULTS-gpu.md.

The ``quick`` GPU cases (one shape, one large batch and bfloat16 per op, forward and
forward+backward, every implementation) are what `make gpu-check` runs: torch.compile's first call
of each case dominates their time, so that set stays small.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from bench.conftest import time_case

# The GPU is fast: a quarter of a second of rounds (at least 5, at most 200) per case is plenty.
GPU_BUDGET_SECONDS = 0.25

requires_cuda = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="the GPU section needs a CUDA device"
)


def synchronized(fn: Callable[[], object]) -> Callable[[], object]:
    """`fn`, waiting for its kernels: they launch asynchronously."""

    def call():
        result = fn()
        torch.cuda.synchronize()
        return result

    return call


def peak_mib(fn: Callable[[], object]) -> float:
    """Peak CUDA memory of one call of `fn` beyond what is allocated before it, in MiB (its outputs
    and gradients included: every implementation returns the same ones)."""
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    result = fn()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - before
    del result
    return peak / 2**20


def time_gpu_case(
    benchmark,
    fn: Callable[[], object],
    *,
    op: str,
    impl: str,
    mode: str,
    dtype: str,
    shape: str,
    batch: int,
) -> None:
    """Times `fn` (synchronised) and records its peak memory in the benchmark's extra_info."""
    call = synchronized(fn)
    with torch.no_grad() if mode == "forward" else torch.enable_grad():
        time_case(
            benchmark,
            call,
            op=op,
            impl=impl,
            mode=mode,
            dtype=dtype,
            shape=f"{shape} (cuda)",
            batch=batch,
            budget_seconds=GPU_BUDGET_SECONDS,
        )
        benchmark.extra_info["peak_mib"] = peak_mib(call)
        benchmark.extra_info["device"] = torch.cuda.get_device_name()


def marks(quick: bool) -> list:
    return [pytest.mark.gpu, pytest.mark.quick] if quick else [pytest.mark.gpu]
