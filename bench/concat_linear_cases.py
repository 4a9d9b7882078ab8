"""The concat_linear benchmark cases: shapes, and each implementation as a callable.

Implementations:
- ``mmfast``: the fused op.
- ``eager``: ``act(F.linear(torch.cat(xs, -1), W, b))``, what models write today.
- ``compile``: ``torch.compile`` of the eager code.
- ``linear_on_cat``: bare ``F.linear`` + activation on an input that is already concatenated
  (no cat cost).
- ``limit``: oneDNN's ``_linear_pointwise`` with the activation fused, on an already concatenated
  input: the fastest GEMM + activation this machine has (forward only).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from mmfast.ops import apply_activation, concat_linear

SHAPES: dict[str, tuple[list[int], int]] = {
    "768+512+128->512": ([768, 512, 128], 512),
    "1024+1024->1024": ([1024, 1024], 1024),
}
BATCHES = (1, 64, 1024, 4096)
DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16}
MODES = ("forward", "forward+backward")
IMPLEMENTATIONS = ("mmfast", "eager", "compile", "linear_on_cat", "limit")
ACTIVATION = "gelu"


@dataclass
class Problem:
    inputs: list[torch.Tensor]
    weight: torch.Tensor
    bias: torch.Tensor
    concatenated: torch.Tensor
    grad_output: torch.Tensor

    @property
    def leaves(self) -> list[torch.Tensor]:
        return [*self.inputs, self.weight, self.bias]


def make_problem(shape: str, batch: int, dtype: torch.dtype, requires_grad: bool) -> Problem:
    sizes, out_features = SHAPES[shape]
    generator = torch.Generator().manual_seed(0)
    inputs = [
        torch.randn(batch, d, generator=generator).to(dtype).requires_grad_(requires_grad) for d in sizes
    ]
    weight = (torch.randn(out_features, sum(sizes), generator=generator) / sum(sizes) ** 0.5).to(dtype)
    bias = torch.randn(out_features, generator=generator).to(dtype)
    weight.requires_grad_(requires_grad)
    bias.requires_grad_(requires_grad)
    concatenated = torch.cat([x.detach() for x in inputs], -1).requires_grad_(requires_grad)
    grad_output = torch.randn(batch, out_features, generator=generator).to(dtype)
    return Problem(inputs, weight, bias, concatenated, grad_output)


def eager_concat_linear(inputs, weight, bias):
    return apply_activation(F.linear(torch.cat(inputs, -1), weight, bias), ACTIVATION)


_compiled: dict[tuple, Callable] = {}


def _compiled_eager(key: tuple) -> Callable:
    if key not in _compiled:
        _compiled[key] = torch.compile(eager_concat_linear, dynamic=False)
    return _compiled[key]


def forward_callable(impl: str, problem: Problem, key: tuple) -> Callable[[], torch.Tensor] | None:
    """A no-argument callable computing the forward of `impl`, or None where it does not apply."""
    p = problem
    if impl == "mmfast":
        return lambda: concat_linear(p.inputs, p.weight, p.bias, ACTIVATION)
    if impl == "eager":
        return lambda: eager_concat_linear(p.inputs, p.weight, p.bias)
    if impl == "compile":
        compiled = _compiled_eager(key)
        return lambda: compiled(p.inputs, p.weight, p.bias)
    if impl == "linear_on_cat":
        return lambda: apply_activation(F.linear(p.concatenated, p.weight, p.bias), ACTIVATION)
    if impl == "limit":
        if p.weight.requires_grad:
            return None
        return lambda: torch.ops.mkldnn._linear_pointwise(
            p.concatenated, p.weight, p.bias, ACTIVATION, [], "none"
        )
    raise ValueError(f"impl: unknown implementation {impl!r}")


def benchmark_callable(impl: str, mode: str, problem: Problem, key: tuple) -> Callable[[], object] | None:
    """The callable timed for (impl, mode): the forward, or forward + gradients of every leaf."""
    forward = forward_callable(impl, problem, key)
    if forward is None or mode == "forward":
        return forward
    leaves = (
        [problem.concatenated, problem.weight, problem.bias] if impl == "linear_on_cat" else problem.leaves
    )

    def forward_backward():
        return torch.autograd.grad(forward(), leaves, problem.grad_output)

    return forward_backward
