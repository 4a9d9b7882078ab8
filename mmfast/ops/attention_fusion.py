"""`attention_fusion`: attention over modalities (torchmultimodal's ``AttentionFusionModule``),
fused, for inputs with any leading dims.

Everything the Python side knows of the op is here: its reference (the definition), its argument
check (shared by the reference path and the fakes), its fake implementations and its descriptor.
The op is ``torch.ops.mmfast.attention_fusion``, returning the output and the attention weights;
its schemas, C++ checks, autograd formula and CPU kernel are in ``csrc/ops/attention_fusion/``, its
Triton kernels (CUDA, and every device with ``MMFAST_BACKEND=triton``) in
``mmfast/triton/attention_fusion.py``. Without the compiled extension the reference runs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from mmfast.ops import _dispatch, _registry
from mmfast.ops._validation import as_list, check_like, check_tensor_list, first_device, parameter_list

__all__ = ["attention_fusion", "attention_fusion_reference"]


def attention_fusion_reference(
    inputs: Sequence[torch.Tensor],
    proj_weights: Sequence[torch.Tensor],
    proj_biases: Sequence[torch.Tensor] | None,
    score_weight: torch.Tensor,
    score_bias: torch.Tensor | None = None,
    return_weights: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """The definition of attention fusion in plain PyTorch, as torchmultimodal's
    ``AttentionFusionModule`` computes it (a loop over modalities, `torch.cat`, `torch.stack`), for
    any leading dims.

    ``s = cat(x) @ score_weight.T + score_bias`` (``[*, M]``); ``w = softmax(s, -1)``;
    ``out = sum_m w[..., m] * (x_m @ P_m.T + p_m)`` (``[*, D_out]``). With ``return_weights`` also
    returns ``w``.
    """
    xs = list(inputs)
    weights = torch.softmax(F.linear(torch.cat(xs, dim=-1), score_weight, score_bias), dim=-1)
    biases = list(proj_biases) if proj_biases is not None else [None] * len(xs)
    projected = torch.stack([F.linear(x, p, b) for x, p, b in zip(xs, proj_weights, biases)], dim=-2)
    out = (weights.unsqueeze(-1) * projected).sum(dim=-2)
    return (out, weights) if return_weights else out


def check_attention_fusion_args(
    inputs: object,
    proj_weights: object,
    proj_biases: object,
    score_weight: object,
    score_bias: object,
) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor], int]:
    """Validated inputs, projection weights and biases (empty for None) and D_out; the errors are
    those of the C++ checks."""
    low, high = DESCRIPTOR.input_limits()
    tensors = check_tensor_list(inputs, "inputs", high, min_count=low)
    count = len(tensors)
    weights = parameter_list(proj_weights, "proj_weights", count)
    if weights[0].dim() != 2:
        raise ValueError(
            f"proj_weights[0]: expected shape [D_out, {tensors[0].shape[-1]}], got {list(weights[0].shape)}"
        )
    out_dim = weights[0].shape[0]
    for m, (w, x) in enumerate(zip(weights, tensors)):
        check_like(w, f"proj_weights[{m}]", tensors[0], [out_dim, x.shape[-1]])
    biases = [] if proj_biases is None else parameter_list(proj_biases, "proj_biases", count)
    for m, b in enumerate(biases):
        check_like(b, f"proj_biases[{m}]", tensors[0], [out_dim])
    check_like(score_weight, "score_weight", tensors[0], [count, sum(x.shape[-1] for x in tensors)])
    if score_bias is not None:
        check_like(score_bias, "score_bias", tensors[0], [count])
    return tensors, weights, biases, out_dim


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


DESCRIPTOR = _registry.register(
    _registry.OpDescriptor(
        name="attention_fusion",
        summary="softmax attention over M modalities [*, D_m], summing their projections (torchmultimodal's)",
        reference=attention_fusion_reference,
        compiled={"cpu": "cpp (ATen / oneDNN GEMMs, at::vec fused softmax and blend pass)"},
        register_fakes=_register_fakes,
        min_inputs=1,
        triton="mmfast.triton.attention_fusion",
    )
)
