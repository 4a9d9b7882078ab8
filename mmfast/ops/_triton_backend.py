"""``MMFAST_BACKEND=triton``: the fusion ops on their Triton kernels for tensors of any device
(CPU tensors need ``TRITON_INTERPRET=1``), as custom ops with autograd and fake implementations,
so that the kernels themselves are what CPU tests exercise. Imported only when that backend is
requested."""

from __future__ import annotations

import math

import torch

from mmfast.ops import _triton_adapters as adapters


def _gated_fake(inputs, weight, bias):
    first = inputs[0]
    logits = weight.shape[0]
    rows = math.prod(first.shape[:-1])
    return first.new_empty(first.shape), first.new_empty([rows, logits])


@torch.library.custom_op("mmfast::gated_fusion_triton", mutates_args=(), device_types=("cpu", "cuda"))
def gated_fusion_triton(
    inputs: list[torch.Tensor], weight: torch.Tensor, bias: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(output, gates)`` of gated fusion on the Triton kernels."""
    return adapters.gated_forward(inputs, weight, bias)


@torch.library.custom_op(
    "mmfast::gated_fusion_triton_backward", mutates_args=(), device_types=("cpu", "cuda")
)
def gated_fusion_triton_backward(
    grad_output: torch.Tensor,
    inputs: list[torch.Tensor],
    weight: torch.Tensor,
    gates: torch.Tensor,
    output_mask: list[bool],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return adapters.gated_backward(grad_output, inputs, weight, gates, output_mask)


@gated_fusion_triton.register_fake
def _(inputs, weight, bias):
    return _gated_fake(inputs, weight, bias)


@gated_fusion_triton_backward.register_fake
def _(grad_output, inputs, weight, gates, output_mask):
    empty = grad_output.new_empty([0])
    in_features = sum(x.shape[-1] for x in inputs)
    return (
        grad_output.new_empty([*grad_output.shape[:-1], in_features]) if output_mask[0] else empty,
        torch.empty_like(weight) if output_mask[1] else empty,
        weight.new_empty([weight.shape[0]]) if output_mask[2] else empty,
    )


def _gated_setup(ctx, inputs, output):
    xs, weight, bias = inputs
    ctx.count = len(xs)
    ctx.has_bias = bias is not None
    ctx.save_for_backward(weight, output[1], *xs)
    ctx.mark_non_differentiable(output[1])


def _gated_backward(ctx, grad_output, _grad_gates):
    weight, gates, *xs = ctx.saved_tensors
    count = ctx.count
    mask = [any(ctx.needs_input_grad[0]), ctx.needs_input_grad[1], ctx.has_bias and ctx.needs_input_grad[2]]
    grad_input, grad_weight, grad_bias = gated_fusion_triton_backward(grad_output, xs, weight, gates, mask)
    grad_xs = list(grad_input.chunk(count, dim=-1)) if mask[0] else None
    return grad_xs, grad_weight if mask[1] else None, grad_bias if mask[2] else None


gated_fusion_triton.register_autograd(_gated_backward, setup_context=_gated_setup)


@torch.library.custom_op("mmfast::attention_fusion_triton", mutates_args=(), device_types=("cpu", "cuda"))
def attention_fusion_triton(
    inputs: list[torch.Tensor],
    proj_weights: list[torch.Tensor],
    proj_biases: list[torch.Tensor],
    score_weight: torch.Tensor,
    score_bias: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(output, weights)`` of attention fusion on the Triton kernels."""
    return adapters.attention_forward(inputs, proj_weights, proj_biases, score_weight, score_bias)


@torch.library.custom_op(
    "mmfast::attention_fusion_triton_backward", mutates_args=(), device_types=("cpu", "cuda")
)
def attention_fusion_triton_backward(
    grad_output: torch.Tensor,
    grad_weights: torch.Tensor | None,
    inputs: list[torch.Tensor],
    proj_weights: list[torch.Tensor],
    proj_biases: list[torch.Tensor],
    score_weight: torch.Tensor,
    weights: torch.Tensor,
    output_mask: list[bool],
) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor], torch.Tensor, torch.Tensor]:
    return adapters.attention_backward(
        grad_output, grad_weights, inputs, proj_weights, proj_biases, score_weight, weights, output_mask
    )


@attention_fusion_triton.register_fake
def _(inputs, proj_weights, proj_biases, score_weight, score_bias):
    first = inputs[0]
    leading = list(first.shape[:-1])
    return first.new_empty([*leading, proj_weights[0].shape[0]]), first.new_empty([*leading, len(inputs)])


@attention_fusion_triton_backward.register_fake
def _(grad_output, grad_weights, inputs, proj_weights, proj_biases, score_weight, weights, output_mask):
    empty = grad_output.new_empty([0])
    in_features = sum(x.shape[-1] for x in inputs)
    return (
        grad_output.new_empty([*grad_output.shape[:-1], in_features]) if output_mask[0] else empty,
        [torch.empty_like(p) for p in proj_weights] if output_mask[1] else [],
        [torch.empty_like(b) for b in proj_biases] if output_mask[2] else [],
        torch.empty_like(score_weight) if output_mask[3] else empty,
        score_weight.new_empty([score_weight.shape[0]]) if output_mask[4] else empty,
    )


def _attention_setup(ctx, inputs, output):
    xs, proj_weights, proj_biases, score_weight, score_bias = inputs
    ctx.count = len(xs)
    ctx.bias_count = len(proj_biases)
    ctx.has_score_bias = score_bias is not None
    ctx.save_for_backward(score_weight, output[1], *xs, *proj_weights, *proj_biases)


def _attention_backward(ctx, grad_output, grad_weights):
    score_weight, weights, *rest = ctx.saved_tensors
    count, bias_count = ctx.count, ctx.bias_count
    xs, proj_weights, proj_biases = rest[:count], rest[count : 2 * count], rest[2 * count :]
    needs = ctx.needs_input_grad
    mask = [
        any(needs[0]),
        any(needs[1]),
        bias_count > 0 and any(needs[2]),
        needs[3],
        ctx.has_score_bias and needs[4],
    ]
    if grad_output is None:
        grad_output = weights.new_zeros([*weights.shape[:-1], proj_weights[0].shape[0]])
    grad_input, grad_projs, grad_proj_biases, grad_score, grad_score_bias = attention_fusion_triton_backward(
        grad_output, grad_weights, xs, proj_weights, proj_biases, score_weight, weights, mask
    )
    sizes = [x.shape[-1] for x in xs]
    return (
        list(grad_input.split(sizes, dim=-1)) if mask[0] else None,
        grad_projs if mask[1] else None,
        grad_proj_biases if mask[2] else None,
        grad_score if mask[3] else None,
        grad_score_bias if mask[4] else None,
    )


attention_fusion_triton.register_autograd(_attention_backward, setup_context=_attention_setup)
