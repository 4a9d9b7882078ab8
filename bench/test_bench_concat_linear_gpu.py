"""The GPU section of the concat_linear benchmark (marker ``gpu``, `make bench-gpu`): the op's CUDA
kernels against eager PyTorch (`cat` + cuBLAS `F.linear` + activation), torch.compile of it and bare
`F.linear` on an already concatenated input, in float32, float16 and bfloat16: time and peak
memory (bench/gpu_cases.py). Skips without a CUDA device; the CPU section is
bench/test_bench_concat_linear.py."""

from __future__ import annotations

import itertools

import pytest
import torch

from bench.concat_linear_cases import BATCHES, MODES, SHAPES, Problem, benchmark_callable, make_problem
from bench.gpu_cases import marks, requires_cuda, time_gpu_case

GPU_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}
# "limit" is oneDNN's CPU GEMM: on the GPU the bare cuBLAS GEMM (linear_on_cat) is the reference point.
GPU_IMPLEMENTATIONS = ("mmfast", "eager", "compile", "linear_on_cat")
# `make gpu-check`'s cases: one shape at the largest batch in bfloat16, both modes.
QUICK = ("768+512+128->512", max(BATCHES), "bfloat16")


def _on_cuda(problem: Problem) -> Problem:
    def move(t: torch.Tensor) -> torch.Tensor:
        return t.detach().to("cuda").requires_grad_(t.requires_grad)

    return Problem(
        inputs=[move(x) for x in problem.inputs],
        weight=move(problem.weight),
        bias=move(problem.bias),
        concatenated=move(problem.concatenated),
        grad_output=problem.grad_output.to("cuda"),
    )


def _cases():
    for shape, batch, dtype, mode, impl in itertools.product(
        SHAPES, BATCHES, GPU_DTYPES, MODES, GPU_IMPLEMENTATIONS
    ):
        yield pytest.param(
            shape,
            batch,
            dtype,
            mode,
            impl,
            marks=marks((shape, batch, dtype) == QUICK),
            id=f"concat_linear-{mode}-{dtype}-{shape}-b{batch}-{impl}",
        )


@requires_cuda
@pytest.mark.parametrize(("shape", "batch", "dtype", "mode", "impl"), list(_cases()))
def test_concat_linear_cuda(benchmark, shape, batch, dtype, mode, impl):
    problem = _on_cuda(make_problem(shape, batch, GPU_DTYPES[dtype], requires_grad=mode != "forward"))
    fn = benchmark_callable(impl, mode, problem, key=("cuda", shape, batch, dtype, mode))
    time_gpu_case(
        benchmark, fn, op="concat_linear", impl=impl, mode=mode, dtype=dtype, shape=shape, batch=batch
    )
