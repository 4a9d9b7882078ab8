"""The gated_fusion and attention_fusion benchmark cases: shapes, and each implementation as a callable.

Implementations: ``mmfast`` (the fused op), ``eager`` (the reference: `torch.cat`, a gate / score
GEMM, softmax or sigmoid, a Python loop of projections, `torch.stack` and a weighted sum, as
torchmultimodal and papers write it) and ``compile`` (`torch.compile` of that reference).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
import torch

from bench.conftest import time_case
from mmfast.ops import attention_fusion_reference, gated_fusion_reference
from mmfast.ops.attention_fusion import attention_fusion
from mmfast.ops.gated_fusion import gated_fusion

# op -> shape name -> (input dims, output dim or None for gated fusion)
SHAPES: dict[str, dict[str, tuple[list[int], int | None]]] = {
    "gated_fusion": {"2x512": ([512, 512], None), "3x256": ([256, 256, 256], None)},
    "attention_fusion": {"768+512+128->256": ([768, 512, 128], 256), "512+512->512": ([512, 512], 512)},
}
BATCHES = (1, 64, 1024)
DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16}
MODES = ("forward", "forward+backward")
IMPLEMENTATIONS = ("mmfast", "eager", "compile")
# The shape of each op in `make bench-quick`.
QUICK_SHAPES = {"gated_fusion": "3x256", "attention_fusion": "768+512+128->256"}

FUSED: dict[str, Callable] = {"gated_fusion": gated_fusion, "attention_fusion": attention_fusion}
REFERENCE: dict[str, Callable] = {
    "gated_fusion": gated_fusion_reference,
    "attention_fusion": attention_fusion_reference,
}


@dataclass
class Problem:
    args: list
    leaves: list[torch.Tensor]
    grad_output: torch.Tensor


def make_problem(
    op: str, shape: str, batch: int, dtype: torch.dtype, requires_grad: bool, device="cpu"
) -> Problem:
    dims, out_dim = SHAPES[op][shape]
    generator = torch.Generator().manual_seed(0)

    def randn(*size: int, scale: float = 1.0) -> torch.Tensor:
        t = (torch.randn(*size, generator=generator) * scale).to(device=device, dtype=dtype)
        return t.requires_grad_(requires_grad)

    inputs = [randn(batch, d) for d in dims]
    total = sum(dims)
    if op == "gated_fusion":
        logits = dims[0] if len(dims) == 2 else total
        args = [inputs, randn(logits, total, scale=total**-0.5), randn(logits)]
        grad_output = torch.randn(batch, dims[0], generator=generator).to(device=device, dtype=dtype)
        leaves = [*inputs, args[1], args[2]]
    else:
        projections = [randn(out_dim, d, scale=d**-0.5) for d in dims]
        biases = [randn(out_dim) for _ in dims]
        args = [inputs, projections, biases, randn(len(dims), total, scale=total**-0.5), randn(len(dims))]
        grad_output = torch.randn(batch, out_dim, generator=generator).to(device=device, dtype=dtype)
        leaves = [*inputs, *projections, *biases, args[3], args[4]]
    return Problem(args, leaves, grad_output)


_compiled: dict[tuple, Callable] = {}


def _forward(op: str, impl: str, key: tuple) -> Callable:
    if impl == "mmfast":
        return FUSED[op]
    if impl == "eager":
        return REFERENCE[op]
    if impl == "compile":
        if key not in _compiled:
            _compiled[key] = torch.compile(REFERENCE[op], dynamic=False)
        return _compiled[key]
    raise ValueError(f"impl: unknown implementation {impl!r}")


def benchmark_callable(op: str, impl: str, mode: str, problem: Problem, key: tuple) -> Callable[[], object]:
    """The callable timed for (impl, mode): the forward, or forward + gradients of every leaf."""
    forward = _forward(op, impl, key)
    if mode == "forward":
        return lambda: forward(*problem.args)
    return lambda: torch.autograd.grad(forward(*problem.args), problem.leaves, problem.grad_output)


def _is_quick(op: str, shape: str, batch: int, dtype: str, mode: str) -> bool:
    if shape != QUICK_SHAPES[op] or batch not in (1, 1024):
        return False
    return mode == "forward" or batch == 1024


def cases(op: str, device: str) -> Iterator:
    """pytest params (shape, batch, dtype, mode, impl) of `op` on `device`: CUDA cases are marked
    ``gpu``, a few CPU ones ``quick``."""
    for shape, batch, dtype, mode, impl in itertools.product(
        SHAPES[op], BATCHES, DTYPES, MODES, IMPLEMENTATIONS
    ):
        if device == "cuda":
            marks = [pytest.mark.gpu]
        else:
            marks = [pytest.mark.quick] if _is_quick(op, shape, batch, dtype, mode) else []
        yield pytest.param(
            shape, batch, dtype, mode, impl, marks=marks, id=f"{mode}-{dtype}-{shape}-b{batch}-{impl}"
        )


def run_case(
    benchmark, device: str, op: str, shape: str, batch: int, dtype: str, mode: str, impl: str
) -> None:
    """Times one case (the forward under ``torch.no_grad``, as in the concat_linear benchmark); on
    CUDA each call ends with a synchronisation so that the kernels' time is what is measured."""
    problem = make_problem(op, shape, batch, DTYPES[dtype], requires_grad=mode != "forward", device=device)
    fn = benchmark_callable(op, impl, mode, problem, key=(device, op, shape, batch, dtype, mode))
    if device == "cuda":
        unsynchronised = fn

        def fn():
            result = unsynchronised()
            torch.cuda.synchronize()
            return result

    label = shape if device == "cpu" else f"{shape} (cuda)"
    with torch.no_grad() if mode == "forward" else torch.enable_grad():
        time_case(benchmark, fn, op=op, impl=impl, mode=mode, dtype=dtype, shape=label, batch=batch)
