"""`attention_fusion`: attention over modalities (torchmultimodal's ``AttentionFusionModule``),
fused, for inputs with any leading dims.

The op is `torch.ops.mmfast.attention_fusion` (schema in C++, `csrc/fusion_registration.cpp`),
returning the output and the attention weights. It forwards to `mmfast::attention_fusion_forward`:
C++ kernels on CPU, the Triton kernels on CUDA, the autograd formula in C++; its fake
implementation and that of `mmfast::attention_fusion_backward` are here. ``MMFAST_BACKEND=triton``
runs the Triton kernels on any device. Without the compiled extension the reference runs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from mmfast import _backend
from mmfast.ops import _dispatch
from mmfast.ops._validation import (
    as_list,
    check_attention_fusion_args,
    first_device,
    parameter_list,
)
from mmfast.ops.fusion_reference import attention_fusion_reference

__all__ = ["attention_fusion", "attention_fusion_reference"]


def attention_fusion(
    inputs: Sequence[torch.Tensor],
    proj_weights: Sequence[torch.Tensor],
    proj_biases: Sequence[torch.Tensor] | None,
    score_weight: torch.Tensor,
    score_bias: torch.Tensor | None = None,
    *,
    return_weights: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Attention over M modalities without building the concatenation or the stacked projections.

    ``s = cat(x_1..x_M) @ score_weight.T + score_bias`` (``[*, M]``), ``w = softmax(s, -1)``,
    ``out = sum_m w[..., m] * (x_m @ proj_weights[m].T + proj_biases[m])``.

    Args:
        inputs: 1 to 16 tensors ``[*, D_m]`` (dims may differ; 1 to 8 on CUDA) with the same leading
            dims, dtype and device.
        proj_weights: one ``[D_out, D_m]`` per input.
        proj_biases: one ``[D_out]`` per input, or None.
        score_weight: ``[M, sum D_m]``.
        score_bias: ``[M]`` or None.
        return_weights: also return the attention weights ``w`` (``[*, M]``, differentiable).

    Returns:
        ``out`` (``[*, D_out]``), or ``(out, w)`` with ``return_weights``; differentiable once
        (a second derivative raises).
    """
    tensors = as_list(inputs, "inputs")
    projections = parameter_list(proj_weights, "proj_weights", len(tensors))
    biases = [] if proj_biases is None else parameter_list(proj_biases, "proj_biases", len(tensors))
    device = first_device(tensors)
    implementation = "reference" if device is None else _dispatch.implementation("attention_fusion", device)
    if implementation == "compiled":
        # The op checks the rest in C++ with the same messages; checking in Python too would cost
        # a third of a batch-1 call.
        out, attention = torch.ops.mmfast.attention_fusion.default(
            tensors, projections, biases, score_weight, score_bias
        )
    else:
        check_attention_fusion_args(tensors, projections, biases or None, score_weight, score_bias)
        if implementation == "triton":
            from mmfast.ops._triton_backend import attention_fusion_triton

            out, attention = attention_fusion_triton(tensors, projections, biases, score_weight, score_bias)
        else:
            out, attention = attention_fusion_reference(
                tensors, projections, biases or None, score_weight, score_bias, return_weights=True
            )
    return (out, attention) if return_weights else out


def _register_fakes() -> None:
    @torch.library.register_fake("mmfast::attention_fusion_forward")
    def _forward_fake(inputs, proj_weights, proj_biases, score_weight, score_bias):
        # The schema spells "no projection biases" as an empty list.
        tensors, _, _, out_dim = check_attention_fusion_args(
            inputs, proj_weights, proj_biases or None, score_weight, score_bias
        )
        leading = list(tensors[0].shape[:-1])
        return tensors[0].new_empty([*leading, out_dim]), tensors[0].new_empty([*leading, len(tensors)])

    @torch.library.register_fake("mmfast::attention_fusion_backward")
    def _backward_fake(
        grad_output, grad_weights, inputs, proj_weights, proj_biases, score_weight, weights, mask
    ):
        empty = grad_output.new_empty([0])
        in_features = sum(x.shape[-1] for x in inputs)
        contiguous = torch.contiguous_format
        return (
            grad_output.new_empty([*grad_output.shape[:-1], in_features]) if mask[0] else empty,
            [torch.empty_like(p, memory_format=contiguous) for p in proj_weights] if mask[1] else [],
            [torch.empty_like(b) for b in proj_biases] if mask[2] and proj_biases else [],
            torch.empty_like(score_weight, memory_format=contiguous) if mask[3] else empty,
            score_weight.new_empty([score_weight.shape[0]]) if mask[4] else empty,
        )


if _backend.extension_loaded():
    _register_fakes()
