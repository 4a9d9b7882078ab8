"""The GPU section of the gated_fusion and attention_fusion benchmarks (marker ``gpu``,
`make bench-gpu`): the ops' Triton kernels against their eager references (`torch.cat`, the gate /
score GEMM, sigmoid or softmax, the projections, `torch.stack` and a weighted sum) and
torch.compile of them, in float32, float16 and bfloat16: time and peak memory
(bench/gpu_cases.py). Skips without a CUDA device."""

from __future__ import annotations

import itertools

import pytest
import torch

from bench.fusion_cases import MODES, QUICK_SHAPES, SHAPES, benchmark_callable, make_problem
from bench.gpu_cases import marks, requires_cuda, time_gpu_case

GPU_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}
GPU_BATCHES = (1, 1024, 16384)
IMPLEMENTATIONS = ("mmfast", "eager", "compile")


def _cases():
    for op, batch, dtype, mode, impl in itertools.product(
        SHAPES, GPU_BATCHES, GPU_DTYPES, MODES, IMPLEMENTATIONS
    ):
        for shape in SHAPES[op]:
            quick = shape == QUICK_SHAPES[op] and batch == max(GPU_BATCHES) and dtype == "bfloat16"
            yield pytest.param(
                op,
                shape,
                batch,
                dtype,
                mode,
                impl,
                marks=marks(quick),
                id=f"{op}-{mode}-{dtype}-{shape}-b{batch}-{impl}",
            )


@requires_cuda
@pytest.mark.parametrize(("op", "shape", "batch", "dtype", "mode", "impl"), list(_cases()))
def test_fusion_cuda(benchmark, op, shape, batch, dtype, mode, impl):
    problem = make_problem(
        op, shape, batch, GPU_DTYPES[dtype], requires_grad=mode != "forward", device="cuda"
    )
    fn = benchmark_callable(op, impl, mode, problem, key=("cuda-gpu", op, shape, batch, dtype, mode))
    time_gpu_case(benchmark, fn, op=op, impl=impl, mode=mode, dtype=dtype, shape=shape, batch=batch)
