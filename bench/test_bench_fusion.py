"""gated_fusion and attention_fusion against their eager references and torch.compile of them.

CPU cases always run; the GPU section (marker ``gpu``, `make bench-gpu`) times the Triton kernels
when a CUDA device is present. `make bench-quick` runs the cases marked quick."""

from __future__ import annotations

import itertools

import pytest
import torch

from bench.conftest import time_case
from bench.fusion_cases import (
    BATCHES,
    DTYPES,
    IMPLEMENTATIONS,
    MODES,
    SHAPES,
    benchmark_callable,
    make_problem,
)

QUICK_SHAPES = {"gated_fusion": "3x256", "attention_fusion": "768+512+128->256"}


def _is_quick(op: str, shape: str, batch: int, dtype: str, mode: str) -> bool:
    if shape != QUICK_SHAPES[op] or batch not in (1, 1024):
        return False
    return mode == "forward" or (dtype == "float32" and batch == 1024)


def _cases(device: str):
    for op, shapes in SHAPES.items():
        for shape, batch, dtype, mode, impl in itertools.product(
            shapes, BATCHES, DTYPES, MODES, IMPLEMENTATIONS
        ):
            marks = []
            if device == "cuda":
                marks = [pytest.mark.gpu]
            elif _is_quick(op, shape, batch, dtype, mode):
                marks = [pytest.mark.quick]
            yield pytest.param(
                op,
                shape,
                batch,
                dtype,
                mode,
                impl,
                marks=marks,
                id=f"{op}-{mode}-{dtype}-{shape}-b{batch}-{impl}",
            )


def _run(benchmark, device, op, shape, batch, dtype, mode, impl):
    problem = make_problem(op, shape, batch, DTYPES[dtype], requires_grad=mode != "forward", device=device)
    fn = benchmark_callable(op, impl, mode, problem, key=(device, op, shape, batch, dtype, mode))
    if device == "cuda":
        inner = fn

        def fn():
            result = inner()
            torch.cuda.synchronize()
            return result

    with torch.no_grad() if mode == "forward" else torch.enable_grad():
        label = shape if device == "cpu" else f"{shape} (cuda)"
        time_case(benchmark, fn, op=op, impl=impl, mode=mode, dtype=dtype, shape=label, batch=batch)


@pytest.mark.parametrize(("op", "shape", "batch", "dtype", "mode", "impl"), list(_cases("cpu")))
def test_fusion_cpu(benchmark, op, shape, batch, dtype, mode, impl):
    _run(benchmark, "cpu", op, shape, batch, dtype, mode, impl)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the GPU section needs a CUDA device")
@pytest.mark.parametrize(("op", "shape", "batch", "dtype", "mode", "impl"), list(_cases("cuda")))
def test_fusion_cuda(benchmark, op, shape, batch, dtype, mode, impl):
    _run(benchmark, "cuda", op, shape, batch, dtype, mode, impl)
