"""`gated_fusion`: a sigmoid gate (two inputs) or a per-feature softmax over modalities (more)
blending M inputs of one size, fused.

The op is `torch.ops.mmfast.gated_fusion` (schema in C++, `csrc/fusion_registration.cpp`). It
forwards to `mmfast::gated_fusion_forward`: C++ kernels on CPU, the Triton kernels on CUDA, the
autograd formula in C++; its fake implementation and that of `mmfast::gated_fusion_backward` are
here. ``MMFAST_BACKEND=triton`` runs the Triton kernels on any device. Without the compiled
extension the pure-PyTorch reference runs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from mmfast import _backend
from mmfast.ops import _dispatch
from mmfast.ops._validation import as_list, check_gated_fusion_args, first_device
from mmfast.ops.fusion_reference import gated_fusion_reference

__all__ = ["gated_fusion", "gated_fusion_reference"]


def gated_fusion(
    inputs: Sequence[torch.Tensor], weight: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """Gated fusion of ``M >= 2`` inputs of shape ``[*, D]``, without building their concatenation.

    - M == 2: ``g = sigmoid(cat(x1, x2) @ weight.T + bias)``, ``out = g * x1 + (1 - g) * x2``.
    - M > 2: ``logits = cat(x_1..x_M) @ weight.T + bias`` viewed ``[*, M, D]``,
      ``a = softmax(logits)`` over the modalities for each feature, ``out = sum_m a_m * x_m``.

    Args:
        inputs: 2 to 16 tensors ``[*, D]`` with the same shape, dtype and device (2 to 8 on CUDA).
        weight: ``[D, 2*D]`` for two inputs, ``[M*D, M*D]`` for more.
        bias: ``[D]`` / ``[M*D]``, or None.

    Returns:
        ``[*, D]``, differentiable (once: a second derivative raises) with respect to every
        input, ``weight`` and ``bias``.
    """
    tensors = as_list(inputs, "inputs")
    device = first_device(tensors)
    implementation = "reference" if device is None else _dispatch.implementation("gated_fusion", device)
    if implementation == "compiled":
        # The op checks its arguments in C++ with the same messages; checking in Python too would
        # cost a third of a batch-1 call.
        return torch.ops.mmfast.gated_fusion.default(tensors, weight, bias)
    tensors, _ = check_gated_fusion_args(tensors, weight, bias)
    if implementation == "triton":
        from mmfast.ops._triton_backend import gated_fusion_triton

        return gated_fusion_triton(tensors, weight, bias)[0]
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


if _backend.extension_loaded():
    _register_fakes()
