"""The GPU section of the contrastive-loss benchmark (marker ``gpu``, `make bench-gpu`): clip_loss
and siglip_loss (their Triton kernels) against open_clip-style eager code, which builds the B x B
logits, and torch.compile of it, D = 256, float32 and bfloat16 features: time and peak memory
(bench/gpu_cases.py). Skips without a CUDA device; the CPU section is
bench/test_bench_contrastive.py."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from bench.gpu_cases import marks, requires_cuda, time_gpu_case
from mmfast.ops import clip_loss, siglip_loss

DIM = 256
BATCHES = (1024, 16384, 65536)
# Eager keeps several B x B float32 matrices (logits, their gradient, softmax): 65536 would need
# tens of GiB, so eager and its compiled form stop at 16384.
EAGER_MAX_BATCH = 16384
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
MODES = ("forward", "forward+backward")
IMPLEMENTATIONS = ("mmfast", "eager", "compile")
QUICK = (16384, "bfloat16")


def eager_clip(image, text, scale, bias=None):
    """open_clip's ClipLoss on one process (in float32 for bfloat16 features, as autocast does)."""
    logits = scale * image.float() @ text.float().T
    labels = torch.arange(image.shape[0], device=image.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


def eager_siglip(image, text, scale, bias):
    """open_clip's SigLipLoss on one process."""
    logits = scale * image.float() @ text.float().T + bias
    labels = 2 * torch.eye(image.shape[0], device=image.device) - 1
    return -F.logsigmoid(labels * logits).sum() / image.shape[0]


LOSSES = {"clip_loss": (clip_loss, eager_clip), "siglip_loss": (siglip_loss, eager_siglip)}
_compiled: dict[tuple, object] = {}


def _cases():
    for op, batch, dtype, mode, impl in itertools.product(LOSSES, BATCHES, DTYPES, MODES, IMPLEMENTATIONS):
        if impl != "mmfast" and batch > EAGER_MAX_BATCH:
            continue
        yield pytest.param(
            op,
            batch,
            dtype,
            mode,
            impl,
            marks=marks((batch, dtype) == QUICK),
            id=f"{op}-{mode}-{dtype}-b{batch}-{impl}",
        )


@requires_cuda
@pytest.mark.parametrize(("op", "batch", "dtype", "mode", "impl"), list(_cases()))
def test_contrastive_loss_cuda(benchmark, op, batch, dtype, mode, impl):
    fused, eager = LOSSES[op]
    if impl == "compile":
        fn = _compiled.setdefault((op, batch, dtype, mode), torch.compile(eager, dynamic=False))
    else:
        fn = fused if impl == "mmfast" else eager
    backward = mode == "forward+backward"
    generator = torch.Generator().manual_seed(0)
    image, text = (
        F.normalize(torch.randn(batch, DIM, generator=generator), dim=-1)
        .to(device="cuda", dtype=DTYPES[dtype])
        .requires_grad_(backward)
        for _ in range(2)
    )
    scale = torch.tensor(14.0, device="cuda", requires_grad=backward)
    bias = torch.tensor(-10.0, device="cuda", requires_grad=backward)
    args = (image, text, scale) + ((bias,) if op == "siglip_loss" else ())

    def step():
        loss = fn(*args)
        return torch.autograd.grad(loss, args) if backward else loss

    time_gpu_case(benchmark, step, op=op, impl=impl, mode=mode, dtype=dtype, shape=f"D={DIM}", batch=batch)
