"""concat_linear against eager PyTorch, torch.compile, bare F.linear and the oneDNN limit.

`make bench` runs every case; `make bench-quick` the ones marked quick."""

from __future__ import annotations

import itertools

import pytest
import torch

from bench.concat_linear_cases import (
    BATCHES,
    DTYPES,
    IMPLEMENTATIONS,
    MODES,
    SHAPES,
    benchmark_callable,
    make_problem,
)
from bench.conftest import time_case

QUICK_SHAPE = "768+512+128->512"


def _is_quick(shape: str, batch: int, dtype: str, mode: str) -> bool:
    if shape != QUICK_SHAPE or batch not in (1, 1024):
        return False
    return mode == "forward" or batch == 1024


def _cases():
    for shape, batch, dtype, mode, impl in itertools.product(SHAPES, BATCHES, DTYPES, MODES, IMPLEMENTATIONS):
        if impl == "limit" and mode != "forward":
            continue
        marks = [pytest.mark.quick] if _is_quick(shape, batch, dtype, mode) else []
        yield pytest.param(
            shape, batch, dtype, mode, impl, marks=marks, id=f"{mode}-{dtype}-{shape}-b{batch}-{impl}"
        )


@pytest.mark.parametrize(("shape", "batch", "dtype", "mode", "impl"), list(_cases()))
def test_concat_linear(benchmark, shape, batch, dtype, mode, impl):
    problem = make_problem(shape, batch, DTYPES[dtype], requires_grad=mode != "forward")
    fn = benchmark_callable(impl, mode, problem, key=(shape, batch, dtype, mode))
    with torch.no_grad() if mode == "forward" else torch.enable_grad():
        time_case(
            benchmark, fn, op="concat_linear", impl=impl, mode=mode, dtype=dtype, shape=shape, batch=batch
        )
