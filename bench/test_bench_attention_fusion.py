"""attention_fusion against its eager reference (`torch.cat`, score GEMM, softmax, a loop of
projections, `torch.stack` and weighted sum) and torch.compile of it, forward and forward+backward.

CPU cases always run; the GPU section (marker ``gpu``, `make bench-gpu`) times the Triton kernels
and skips without a CUDA device. `make bench-quick` runs the cases marked quick."""

from __future__ import annotations

import pytest
import torch

from bench.fusion_cases import cases, run_case

OP = "attention_fusion"


@pytest.mark.parametrize(("shape", "batch", "dtype", "mode", "impl"), list(cases(OP, "cpu")))
def test_attention_fusion_cpu(benchmark, shape, batch, dtype, mode, impl):
    run_case(benchmark, "cpu", OP, shape, batch, dtype, mode, impl)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the GPU section needs a CUDA device")
@pytest.mark.parametrize(("shape", "batch", "dtype", "mode", "impl"), list(cases(OP, "cuda")))
def test_attention_fusion_cuda(benchmark, shape, batch, dtype, mode, impl):
    run_case(benchmark, "cuda", OP, shape, batch, dtype, mode, impl)
