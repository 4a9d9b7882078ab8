"""Triton kernels for SigLIP's pairwise sigmoid loss (the definition is
`mmfast.ops.siglip_loss_reference`).

Notation: image ``[B, D]``, text ``[B_t, D]``, ``L = scale * image @ text.T + bias``, labels
``y = +1`` at ``(i, i + label_offset)`` and -1 elsewhere, ``loss = sum softplus(-y L) / B``. No
``B x B`` tensor is ever stored: the kernels (shared with CLIP, `mmfast.triton._contrastive_kernels`)
recompute their logit tiles with `tl.dot` over D in float32 (float64 for float64 features).

Forward, one kernel: a grid of ``cdiv(B, BLOCK_M)`` row-parallel programs, each sweeping all
``BLOCK_N`` text tiles and storing its rows' sums of ``softplus(-y L)`` (a stable softplus with an
accurate ``log1p``: most pairs are far negative); PyTorch adds the B row sums up (deterministic).

Backward, the gradient kernel launched for each side, grid ``(cdiv(rows, BLOCK_M), cdiv(D,
BLOCK_DO))``: each program recomputes its rows' logit tiles against all the other side's rows,
forms ``H = B * dloss/dL = -y * sigmoid(-y L)`` and accumulates ``H @ other[:, chunk]``; the image
side gives ``grad_image``, the text side (``L.T = scale * text @ image.T + bias``, the positive pair
of text row ``j`` at image row ``j - label_offset``) ``grad_text``. The first feature chunk's
programs of one side store per-row partial sums of the scale and bias gradients, added up by
PyTorch afterwards.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from mmfast.triton._contrastive_kernels import (
    aot_cases_of,
    check_features,
    check_scalar,
    compute_dtype,
    launch_forward,
    launch_grad,
)

__all__ = ["backward", "forward"]


def _check(image, text, logit_scale, logit_bias, label_offset):
    check_features(image, text, False, label_offset)
    check_scalar("logit_scale", logit_scale, image.device)
    check_scalar("logit_bias", logit_bias, image.device)


def forward(
    image: torch.Tensor,
    text: torch.Tensor,
    logit_scale: torch.Tensor,
    logit_bias: torch.Tensor,
    label_offset: int,
) -> torch.Tensor:
    """The 0-dim loss, in the compute dtype, like ``mmfast::siglip_loss_forward``."""
    image, text = image.contiguous(), text.contiguous()
    _check(image, text, logit_scale, logit_bias, label_offset)
    _, terms = launch_forward(image, text, logit_scale, logit_bias, label_offset, sigmoid=True)
    return terms.sum() / image.shape[0]


def backward(
    grad_loss: torch.Tensor,
    image: torch.Tensor,
    text: torch.Tensor,
    logit_scale: torch.Tensor,
    logit_bias: torch.Tensor,
    label_offset: int,
    output_mask: Sequence[bool],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(grad_image, grad_text, grad_logit_scale, grad_logit_bias)`` like
    ``mmfast::siglip_loss_backward``; the gradients not in ``output_mask`` are empty ``[0]`` tensors."""
    image, text = image.contiguous(), text.contiguous()
    _check(image, text, logit_scale, logit_bias, label_offset)
    rows = image.shape[0]
    grad_loss = grad_loss.to(compute_dtype(image.dtype))
    need_image, need_text, need_scale, need_bias = (bool(m) for m in output_mask)
    need_scalars = need_scale or need_bias
    scalars_on_image = need_image or not need_text

    empty = image.new_empty([0])
    grad_image = grad_text = scale_sum = bias_sum = None
    common = dict(scale=logit_scale, bias=logit_bias, lse_a=None, lse_b=None, norm=rows, sigmoid=True)
    if need_image or (need_scalars and scalars_on_image):
        grad_image, scale_sum, bias_sum = launch_grad(
            grad_loss,
            image,
            text,
            shift=label_offset,
            need_grad=need_image,
            need_scalars=need_scalars and scalars_on_image,
            **common,
        )
    if need_text:
        grad_text, text_scale_sum, text_bias_sum = launch_grad(
            grad_loss,
            text,
            image,
            shift=-label_offset,
            need_grad=True,
            need_scalars=need_scalars and not scalars_on_image,
            **common,
        )
        if not scalars_on_image:
            scale_sum, bias_sum = text_scale_sum, text_bias_sum
    return (
        grad_image if need_image else empty,
        grad_text if need_text else empty,
        scale_sum.to(logit_scale.dtype) if need_scale else empty,
        bias_sum.to(logit_bias.dtype) if need_bias else empty,
    )


def forward_with_grads(
    image: torch.Tensor,
    text: torch.Tensor,
    logit_scale: torch.Tensor,
    logit_bias: torch.Tensor,
    label_offset: int,
    output_mask: Sequence[bool],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(loss, grad_image, grad_text, grad_logit_scale, grad_logit_bias)`` like
    ``mmfast::siglip_loss_forward_with_grads``: :func:`forward`, then :func:`backward` for
    ``grad_loss = 1`` (these kernels recompute the tiles); the feature gradients in the compute
    dtype, those not in ``output_mask`` empty ``[0]`` tensors."""
    loss = forward(image, text, logit_scale, logit_bias, label_offset)
    grads = backward(torch.ones_like(loss), image, text, logit_scale, logit_bias, label_offset, output_mask)
    features = tuple(g.to(loss.dtype) if need else g for g, need in zip(grads[:2], output_mask[:2]))
    return (loss, *features, *grads[2:])


def aot_cases():
    """The launches of this loss for `python -m mmfast.triton.aot`: SigLIP's loss with its bias,
    every dtype."""
    return aot_cases_of(sigmoid=True, has_bias=True, symmetric=False)
