"""`gated_fusion`: a sigmoid gate (two inputs) or a per-feature softmax over modalities (more)
blending M inputs of one size, fused.

Everything the Python side knows of the op is here: its reference (the definition), its argument
check (shared by the reference path and the fakes), its fake implementations and its descriptor.
The op is ``torch.ops.mmfast.gated_fusion``; its schemas, C++ checks, autograd formula and CPU
kernel are in ``csrc/ops/gated_fusion/``, its Triton kernels (CUDA, and every device with
``MMFAST_BACKEND=triton``) in ``mmfast/triton/gated_fusion.py``. Without the compiled extension the
reference runs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from mmfast.ops import _dispatch, _registry
from mmfast.ops._validation import as_list, check_like, check_tensor_list, first_device

__all__ = ["gated_fusion", "gated_fusion_reference"]


def gated_fusion_reference(
    inputs: Sequence[torch.Tensor], weight: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """The definition of gated fusion in plain PyTorch, as eager models write it (`torch.cat`,
    `torch.stack`). M >= 2 inputs ``[*, D]``; returns ``[*, D]``.

    M == 2: ``g = sigmoid(cat(x1, x2) @ W.T + b)`` with W ``[D, 2D]``; ``out = g * x1 + (1 - g) * x2``.
    M > 2: ``logits = cat(x) @ W.T + b`` with W ``[M*D, M*D]``, viewed ``[*, M, D]``;
    ``a = softmax(logits, dim=M)`` per feature; ``out = sum_m a_m * x_m``.
    """
    xs = list(inputs)
    logits = F.linear(torch.cat(xs, dim=-1), weight, bias)
    if len(xs) == 2:
        gate = torch.sigmoid(logits)
        return gate * xs[0] + (1 - gate) * xs[1]
    dim = xs[0].shape[-1]
    weights = torch.softmax(logits.unflatten(-1, (len(xs), dim)), dim=-2)
    return (weights * torch.stack(xs, dim=-2)).sum(dim=-2)


def check_gated_fusion_args(inputs: object, weight: object, bias: object) -> tuple[list[torch.Tensor], int]:
    """Validated inputs and the number of gate logits (D for two inputs, M*D else); the errors are
    those of the C++ checks."""
    low, high = DESCRIPTOR.input_limits()
    tensors = check_tensor_list(inputs, "inputs", high, min_count=low)
    count = len(tensors)
    dim = tensors[0].shape[-1]
    for i, x in enumerate(tensors[1:], start=1):
        if x.shape[-1] != dim:
            raise ValueError(
                f"inputs[{i}]: expected feature dim {dim} like inputs[0] (gated fusion blends inputs of "
                f"one size), got {x.shape[-1]}"
            )
    if dim == 0:
        raise ValueError("inputs: expected a feature dim of at least 1, got 0")
    logits = dim if count == 2 else count * dim
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"weight: expected a tensor, got {type(weight).__name__}")
    if list(weight.shape) != [logits, count * dim]:
        form = "[D, 2D] for two inputs" if count == 2 else "[M*D, M*D]"
        raise ValueError(
            f"weight: expected shape [{logits}, {count * dim}] for {count} inputs of dim {dim} ({form}), "
            f"got {list(weight.shape)}"
        )
    check_like(weight, "weight", tensors[0], weight.shape)
    if bias is not None:
        check_like(bias, "bias", tensors[0], [logits])
    return tensors, logits


def gated_fusion(
    inputs: Sequence[torch.Tensor], weight: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """Gated fusion of ``M >= 2`` inputs of shape ``[*, D]``, without building their concatenation.

    - M == 2: ``g = sigmoid(cat(x1, x2) @ weight.T + bias)``, ``out = g * x1 + (1 - g) * x2``.
    - M > 2: ``logits = cat(x_1..x_M) @ weight.T + bias`` viewed ``[*, M, D]``,
      ``a = softmax(logits)`` over the modalities for each feature, ``out = sum_m a_m * x_m``.

    Args:
        inputs: 2 to 16 tensors ``[*, D]`` with the same shape, dtype and device (2 to 8 on the
            Triton kernels, CUDA's).
        weight: ``[D, 2*D]`` for two inputs, ``[M*D, M*D]`` for more.
        bias: ``[D]`` / ``[M*D]``, or None.

    Returns:
        ``[*, D]``, differentiable (once: a second derivative raises) with respect to every
        input, ``weight`` and ``bias``.
    """
    tensors = as_list(inputs, "inputs")
    device = first_device(tensors)
    if device is not None and _dispatch.implementation("gated_fusion", device) == "compiled":
        # The op checks its arguments in C++ with the same messages; checking in Python too would
        # cost a third of a batch-1 call.
        return torch.ops.mmfast.gated_fusion.default(tensors, weight, bias)
    tensors, _ = check_gated_fusion_args(tensors, weight, bias)
    return gated_fusion_reference(tensors, weight, bias)


def _register_fakes() -> None:
    @torch.library.register_fake("mmfast::gated_fusion_forward")
    def _forward_fake(inputs, weight, bias):
        tensors, logits = check_gated_fusion_args(inputs, weight, bias)
        first = tensors[0]
        rows = math.prod(first.shape[:-1])
        return first.new_empty(first.shape), first.new_empty([rows, logits])

    @torch.library.register_fake("mmfast::gated_fusion_backward")
    def _backward_fake(grad_output, inputs, weight, gates, output_mask):
        empty = grad_output.new_empty([0])
        in_features = sum(x.shape[-1] for x in inputs)
        return (
            grad_output.new_empty([*grad_output.shape[:-1], in_features]) if output_mask[0] else empty,
            torch.empty_like(weight, memory_format=torch.contiguous_format) if output_mask[1] else empty,
            weight.new_empty([weight.shape[0]]) if output_mask[2] else empty,
        )


DESCRIPTOR = _registry.register(
    _registry.OpDescriptor(
        name="gated_fusion",
        summary="sigmoid gate (2 inputs) or per-feature softmax over modalities blending M inputs [*, D]",
        reference=gated_fusion_reference,
        compiled={"cpu": "cpp (ATen / oneDNN GEMMs, at::vec fused softmax and blend pass)"},
        register_fakes=_register_fakes,
        min_inputs=2,
        triton="mmfast.triton.gated_fusion",
    )
)
