"""The fusion ops' forward and backward on the Triton kernels, in the conventions of the C++ op
schemas (any leading dims; the input gradient as one ``[*, sum D]`` tensor; empty tensors for
gradients not asked for).

They serve both the CUDA kernels of ``mmfast::gated_fusion_forward`` / ``_backward`` (and the
attention ops) and the ``MMFAST_BACKEND=triton`` ops. `mmfast.triton`'s kernel modules are imported
on first call, never at `import mmfast`: triton reads ``TRITON_INTERPRET`` when they are imported.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

TRITON_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
TRITON_MAX_INPUTS = 8


def check_triton_inputs(inputs: Sequence[torch.Tensor]) -> None:
    """What the Triton kernels take beyond the op's own checks: their dtypes and input count."""
    if len(inputs) > TRITON_MAX_INPUTS:
        raise ValueError(
            f"inputs: the Triton kernels (CUDA, MMFAST_BACKEND=triton) take at most {TRITON_MAX_INPUTS} "
            f"inputs, got {len(inputs)}"
        )
    dtype = inputs[0].dtype
    if dtype not in TRITON_DTYPES:
        raise TypeError(
            f"inputs: the Triton kernels (CUDA, MMFAST_BACKEND=triton) take torch.float32, torch.float16 "
            f"or torch.bfloat16, got {dtype}"
        )


def _rows(inputs: Sequence[torch.Tensor]) -> tuple[list[int], list[torch.Tensor]]:
    leading = list(inputs[0].shape[:-1])
    return leading, [x.reshape(-1, x.shape[-1]).contiguous() for x in inputs]


def _empty(like: torch.Tensor) -> torch.Tensor:
    return like.new_empty([0])


def gated_forward(
    inputs: Sequence[torch.Tensor], weight: torch.Tensor, bias: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(output [*, D], gates [rows, logits])`` like ``mmfast::gated_fusion_forward``."""
    from mmfast.triton.gated_fusion import gated_fusion_forward

    check_triton_inputs(inputs)
    leading, xs = _rows(inputs)
    out, gates = gated_fusion_forward(xs, weight.contiguous(), None if bias is None else bias.contiguous())
    return out.view([*leading, out.shape[-1]]), gates


def gated_backward(
    grad_output: torch.Tensor,
    inputs: Sequence[torch.Tensor],
    weight: torch.Tensor,
    gates: torch.Tensor,
    output_mask: Sequence[bool],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(grad_input [*, M*D], grad_weight, grad_bias)`` like ``mmfast::gated_fusion_backward``."""
    from mmfast.triton.gated_fusion import gated_fusion_backward

    check_triton_inputs(inputs)
    leading, xs = _rows(inputs)
    grad2d = grad_output.reshape(-1, grad_output.shape[-1])
    grad_xs, grad_weight, grad_bias = gated_fusion_backward(
        grad2d, xs, weight.contiguous(), gates.contiguous(), tuple(bool(m) for m in output_mask)
    )
    empty = _empty(grad_output)
    grad_input = torch.cat(grad_xs, dim=-1).view([*leading, -1]) if output_mask[0] else empty
    return (
        grad_input,
        grad_weight if output_mask[1] else empty,
        grad_bias if output_mask[2] else empty,
    )


def attention_forward(
    inputs: Sequence[torch.Tensor],
    proj_weights: Sequence[torch.Tensor],
    proj_biases: Sequence[torch.Tensor],
    score_weight: torch.Tensor,
    score_bias: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(output [*, D_out], weights [*, M])`` like ``mmfast::attention_fusion_forward``."""
    from mmfast.triton.attention_fusion import attention_fusion_forward

    check_triton_inputs(inputs)
    leading, xs = _rows(inputs)
    out, weights = attention_fusion_forward(
        xs,
        [p.contiguous() for p in proj_weights],
        [b.contiguous() for b in proj_biases] if proj_biases else None,
        score_weight.contiguous(),
        None if score_bias is None else score_bias.contiguous(),
    )
    return out.view([*leading, out.shape[-1]]), weights.view([*leading, len(xs)])


def attention_backward(
    grad_output: torch.Tensor,
    grad_weights: torch.Tensor | None,
    inputs: Sequence[torch.Tensor],
    proj_weights: Sequence[torch.Tensor],
    proj_biases: Sequence[torch.Tensor],
    score_weight: torch.Tensor,
    weights: torch.Tensor,
    output_mask: Sequence[bool],
) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor], torch.Tensor, torch.Tensor]:
    """The gradients like ``mmfast::attention_fusion_backward``.

    The kernels take the output's gradient only; a gradient reaching the weights output directly
    (``grad_weights``) adds ``w * (g - sum_m w_m g_m)`` to the score gradient, applied here with
    three small GEMMs.
    """
    from mmfast.triton.attention_fusion import attention_fusion_backward

    check_triton_inputs(inputs)
    leading, xs = _rows(inputs)
    count = len(xs)
    w2d = weights.reshape(-1, count).contiguous()
    need = tuple(bool(m) for m in output_mask)
    grad_xs, grad_projs, grad_proj_biases, grad_score, grad_score_bias = attention_fusion_backward(
        grad_output.reshape(-1, grad_output.shape[-1]),
        xs,
        [p.contiguous() for p in proj_weights],
        [b.contiguous() for b in proj_biases] if proj_biases else None,
        score_weight.contiguous(),
        w2d,
        need,
    )
    empty = _empty(grad_output)
    grad_input = torch.cat(grad_xs, dim=-1) if need[0] else empty
    if grad_weights is not None and (need[0] or need[3] or need[4]):
        g = grad_weights.reshape(-1, count).to(w2d.dtype)
        extra = w2d * (g - (w2d * g).sum(-1, keepdim=True))
        if need[0]:
            grad_input = grad_input + extra @ score_weight
        if need[3]:
            grad_score = grad_score + extra.t() @ torch.cat(xs, dim=-1)
        if need[4]:
            grad_score_bias = grad_score_bias + extra.sum(0)
    return (
        grad_input.view([*leading, -1]) if need[0] else empty,
        list(grad_projs) if need[1] else [],
        list(grad_proj_biases) if need[2] and proj_biases else [],
        grad_score if need[3] else empty,
        grad_score_bias if need[4] else empty,
    )
