"""attention_fusion against its eager reference (`torch.cat`, score GEMM, softmax, a loop of
projections, `torch.stack` and weighted sum) and torch.compile of it, forward and forward+backward.

CPU cases always run; the GPU section (marker ``gpu``, `make bench-gpu`) times the Triton kernels
and skips without a CUDA device. `make bench-quick` runs the cases marked quick."""

from __future__ import annotations

import pytest
import torch

from bench.concat_linear_cases import saved_bytes
from bench.conftest import SAVED_BYTES
from bench.fusion_cases import DTYPES, SHAPES, cases, make_problem, run_case
from mmfast.ops import attention_fusion_reference
from mmfast.ops.attention_fusion import attention_fusion

OP = "attention_fusion"


@pytest.mark.parametrize(("shape", "batch", "dtype", "mode", "impl"), list(cases(OP, "cpu")))
def test_attention_fusion_cpu(benchmark, shape, batch, dtype, mode, impl):
    run_case(benchmark, "cpu", OP, shape, batch, dtype, mode, impl)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the GPU section needs a CUDA device")
@pytest.mark.parametrize(("shape", "batch", "dtype", "mode", "impl"), list(cases(OP, "cuda")))
def test_attention_fusion_cuda(benchmark, shape, batch, dtype, mode, impl):
    run_case(benchmark, "cuda", OP, shape, batch, dtype, mode, impl)


# Not timed, so cheap enough for the quick set.
@pytest.mark.quick
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("shape", list(SHAPES[OP]))
def test_attention_fusion_saved_for_backward(shape, dtype):
    """The fused op keeps less for backward than eager, which keeps the concatenation and the
    stacked projections."""
    batch = 1024
    problem = make_problem(OP, shape, batch, DTYPES[dtype], requires_grad=True)
    fused = saved_bytes(lambda: attention_fusion(*problem.args), problem.leaves)
    eager = saved_bytes(lambda: attention_fusion_reference(*problem.args), problem.leaves)
    SAVED_BYTES[(OP, shape, dtype, batch)] = {"mmfast": fused, "eager": eager}
    inputs = problem.args[0]
    concatenation = sum(x.numel() for x in inputs) * inputs[0].element_size()
    assert eager - fused >= concatenation
