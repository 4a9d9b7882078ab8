"""The GPU section of the film benchmark (marker ``gpu``, `make bench-gpu`): the op's CUDA kernels
against its eager reference (a linear FiLM generator, `chunk`, the broadcast multiply-add) and
torch.compile of it, float32, float16 and bfloat16 feature maps conditioned on 128-d vectors: time
and peak memory (bench/gpu_cases.py). Skips without a CUDA device."""

from __future__ import annotations

import itertools

import pytest
import torch

import mmfast.ops
from bench.gpu_cases import marks, requires_cuda, time_gpu_case

if not hasattr(mmfast.ops, "film"):
    pytest.skip("this mmfast has no film op", allow_module_level=True)

OP = "film"
COND_DIM = 128
MAPS = ("128x16x16", "256x32x32")  # channels x height x width
BATCHES = (1, 64, 512)
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
MODES = ("forward", "forward+backward")
IMPLEMENTATIONS = ("mmfast", "eager", "compile")
QUICK = ("256x32x32", 512, "bfloat16")
_compiled: dict[tuple, object] = {}


def _cases():
    for shape, batch, dtype, mode, impl in itertools.product(MAPS, BATCHES, DTYPES, MODES, IMPLEMENTATIONS):
        yield pytest.param(
            shape,
            batch,
            dtype,
            mode,
            impl,
            marks=marks((shape, batch, dtype) == QUICK),
            id=f"{OP}-{mode}-{dtype}-{shape}-b{batch}-{impl}",
        )


@requires_cuda
@pytest.mark.parametrize(("shape", "batch", "dtype", "mode", "impl"), list(_cases()))
def test_film_cuda(benchmark, shape, batch, dtype, mode, impl):
    reference = mmfast.ops.film_reference
    if impl == "compile":
        fn = _compiled.setdefault((shape, batch, dtype, mode), torch.compile(reference, dynamic=False))
    else:
        fn = mmfast.ops.film if impl == "mmfast" else reference
    backward = mode == "forward+backward"
    channels, height, width = (int(v) for v in shape.split("x"))
    generator = torch.Generator().manual_seed(0)
    tensors = (
        torch.randn(batch, channels, height, width, generator=generator),
        torch.randn(batch, COND_DIM, generator=generator),
        torch.randn(2 * channels, COND_DIM, generator=generator) / COND_DIM**0.5,
        torch.randn(2 * channels, generator=generator),
    )
    args = [t.to(device="cuda", dtype=DTYPES[dtype]).requires_grad_(backward) for t in tensors]
    grad_output = torch.randn(batch, channels, height, width, generator=generator).to("cuda", DTYPES[dtype])

    def step():
        out = fn(*args)
        return torch.autograd.grad(out, args, grad_output) if backward else out

    time_gpu_case(benchmark, step, op=OP, impl=impl, mode=mode, dtype=dtype, shape=shape, batch=batch)
