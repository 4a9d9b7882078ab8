"""film against its eager reference (a linear FiLM generator, `chunk`, the broadcast multiply-add)
and torch.compile of it: forward and forward+backward, float32 and bfloat16, feature maps 64x8x8
and 128x16x16 conditioned on 128-d vectors, batch 1, 64 and 512; and channels-last maps (every
implementation given the same channels-last tensor): 128x16x16, and Sort-of-CLEVR's first FiLM'd
map, 24 channels at 38x38."""

from __future__ import annotations

import pytest
import torch

from bench.conftest import time_case
from mmfast.ops import film, film_reference

OP = "film"
COND_DIM = 128
# (channels, height, width, channels last)
MAPS = ((64, 8, 8, False), (128, 16, 16, False), (128, 16, 16, True), (24, 38, 38, True))
QUICK_BATCHES = (64,)
CHANNELS_LAST = " channels-last"


def _cases():
    for channels, height, width, channels_last in MAPS:
        shape = f"{channels}x{height}x{width}" + (CHANNELS_LAST if channels_last else "")
        for batch in (1, 64, 512):
            for dtype in ("float32", "bfloat16"):
                for mode in ("forward", "forward+backward"):
                    for impl in ("mmfast", "eager", "compile"):
                        marks = [pytest.mark.quick] if batch in QUICK_BATCHES else []
                        yield pytest.param(shape, batch, dtype, mode, impl, marks=marks)


def _problem(shape: str, batch: int, dtype: torch.dtype, backward: bool):
    channels, height, width = (int(v) for v in shape.removesuffix(CHANNELS_LAST).split("x"))
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(batch, channels, height, width, generator=generator)
    if shape.endswith(CHANNELS_LAST):
        features = features.contiguous(memory_format=torch.channels_last)
    condition = torch.randn(batch, COND_DIM, generator=generator)
    weight = torch.randn(2 * channels, COND_DIM, generator=generator) / COND_DIM**0.5
    bias = torch.randn(2 * channels, generator=generator)
    # .to keeps the channels-last layout (memory_format=torch.preserve_format).
    return [t.to(dtype).requires_grad_(backward) for t in (features, condition, weight, bias)]


@pytest.mark.parametrize(("shape", "batch", "dtype", "mode", "impl"), list(_cases()))
def test_film_cpu(benchmark, shape, batch, dtype, mode, impl):
    fn = {"mmfast": film, "eager": film_reference, "compile": torch.compile(film_reference)}[impl]
    backward = mode == "forward+backward"
    args = _problem(shape, batch, getattr(torch, dtype), backward)

    def step():
        out = fn(*args)
        if backward:
            out.backward(torch.ones_like(out))
            for t in args:
                t.grad = None
        return out

    time_case(benchmark, step, op=OP, impl=impl, mode=mode, dtype=dtype, shape=shape, batch=batch)
