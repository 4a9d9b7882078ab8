"""Triton kernels for CLIP's contrastive loss (the definition is `mmfast.ops.clip_loss_reference`).

Notation: image ``[B, D]``, text ``[B_t, D]``, ``L = scale * image @ text.T (+ bias)``, the positive
pair of image row ``i`` at text row ``i + label_offset``. No ``B x B`` tensor is ever stored: every
kernel recomputes its logit tiles with `tl.dot` over D (float32 accumulation; float64 for float64
features), and the kernels are shared with SigLIP (`mmfast.triton._contrastive_kernels`).

Forward, one kernel launched once per direction (two passes when symmetric, no atomics): a grid of
``cdiv(B, BLOCK_M)`` row-parallel programs, each sweeping all ``BLOCK_N`` column tiles with an
online max / sum, stores ``row_lse`` and each row's cross-entropy ``row_lse_i - L_{i,i+offset}``;
the column log-sum-exp is the same kernel over ``L.T = scale * text @ image.T + bias`` (text rows
against image rows). The loss is the mean of the row terms (averaged with the column terms when
symmetric), summed by PyTorch: deterministic.

Backward, the same gradient kernel launched for each side: grid ``(cdiv(rows, BLOCK_M),
cdiv(D, BLOCK_DO))``; each program recomputes its rows' logit tiles against all the other side's
rows, forms ``H = B * dloss/dL`` (``(softmax_rows + softmax_cols) / 2 - I`` when symmetric; the row
softmax minus the positive pair when not) and accumulates ``H @ other[:, chunk]``. The image side
gives ``grad_image``; the text side (``L.T``, whose roles of ``row_lse`` and ``col_lse`` swap) gives
``grad_text``, with no column-parallel kernel of its own. The first feature chunk's programs of one
side also store per-row partial sums of ``grad_logit_scale`` (``sum H * (image @ text.T)``) and
``grad_logit_bias`` (``sum H``), added up by PyTorch afterwards: deterministic whatever the config.
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


def _check(image, text, logit_scale, logit_bias, label_offset, symmetric):
    check_features(image, text, symmetric, label_offset)
    check_scalar("logit_scale", logit_scale, image.device)
    if logit_bias is not None:
        check_scalar("logit_bias", logit_bias, image.device)


def forward(
    image: torch.Tensor,
    text: torch.Tensor,
    logit_scale: torch.Tensor,
    logit_bias: torch.Tensor | None,
    label_offset: int,
    symmetric: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(loss, row_lse [B], col_lse [B_t] or [0])`` like ``mmfast::clip_loss_forward``."""
    image, text = image.contiguous(), text.contiguous()
    _check(image, text, logit_scale, logit_bias, label_offset, symmetric)
    rows = image.shape[0]
    row_lse, row_terms = launch_forward(image, text, logit_scale, logit_bias, label_offset, sigmoid=False)
    if not symmetric:
        col_lse = image.new_empty((0,), dtype=compute_dtype(image.dtype))
        return row_terms.sum() / rows, row_lse, col_lse
    col_lse, col_terms = launch_forward(text, image, logit_scale, logit_bias, 0, sigmoid=False)
    return (row_terms.sum() + col_terms.sum()) / (2 * rows), row_lse, col_lse


def backward(
    grad_loss: torch.Tensor,
    image: torch.Tensor,
    text: torch.Tensor,
    logit_scale: torch.Tensor,
    logit_bias: torch.Tensor | None,
    row_lse: torch.Tensor,
    col_lse: torch.Tensor,
    label_offset: int,
    symmetric: bool,
    output_mask: Sequence[bool],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(grad_image, grad_text, grad_logit_scale, grad_logit_bias)`` like
    ``mmfast::clip_loss_backward``; the gradients not in ``output_mask`` are empty ``[0]`` tensors
    (so is ``grad_logit_bias`` without a bias)."""
    image, text = image.contiguous(), text.contiguous()
    _check(image, text, logit_scale, logit_bias, label_offset, symmetric)
    dtype = compute_dtype(image.dtype)
    rows, texts = image.shape[0], text.shape[0]
    for name, lse, length in (("row_lse", row_lse, rows), ("col_lse", col_lse, texts if symmetric else 0)):
        if tuple(lse.shape) != (length,) or lse.dtype != dtype or lse.device != image.device:
            raise ValueError(
                f"{name}: expected {dtype} [{length}] on {image.device} from the forward, got "
                f"{lse.dtype} {list(lse.shape)} on {lse.device}"
            )
    row_lse, col_lse = row_lse.contiguous(), col_lse.contiguous()
    grad_loss = grad_loss.to(dtype).contiguous()
    need_image, need_text, need_scale = (bool(m) for m in output_mask[:3])
    need_bias = bool(output_mask[3]) and logit_bias is not None
    need_scalars = need_scale or need_bias
    # The scalar sums come from the image side unless only the text side runs.
    scalars_on_image = need_image or not need_text

    empty = image.new_empty([0])
    grad_image = grad_text = scale_sum = bias_sum = None
    common = dict(scale=logit_scale, bias=logit_bias, norm=rows, sigmoid=False)
    if need_image or (need_scalars and scalars_on_image):
        grad_image, scale_sum, bias_sum = launch_grad(
            grad_loss,
            image,
            text,
            lse_a=row_lse,
            lse_b=col_lse if symmetric else None,
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
            lse_a=col_lse if symmetric else None,
            lse_b=row_lse,
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
    logit_bias: torch.Tensor | None,
    label_offset: int,
    symmetric: bool,
    output_mask: Sequence[bool],
) -> tuple[torch.Tensor, ...]:
    """``(loss, row_lse, col_lse, grad_image, grad_text, grad_logit_scale, grad_logit_bias)`` like
    ``mmfast::clip_loss_forward_with_grads``: :func:`forward`, then :func:`backward` for
    ``grad_loss = 1`` (these kernels recompute the tiles); the feature gradients in the compute
    dtype, those not in ``output_mask`` empty ``[0]`` tensors."""
    loss, row_lse, col_lse = forward(image, text, logit_scale, logit_bias, label_offset, symmetric)
    tiles = (image, text, logit_scale, logit_bias, row_lse, col_lse, label_offset, symmetric)
    grads = backward(torch.ones_like(loss), *tiles, output_mask)
    features = tuple(g.to(loss.dtype) if need else g for g, need in zip(grads[:2], output_mask[:2]))
    return (loss, row_lse, col_lse, *features, *grads[2:])


def aot_cases():
    """The launches of this loss for `python -m mmfast.triton.aot`: CLIP's symmetric loss without a
    bias (open_clip's ClipLoss), every dtype."""
    return aot_cases_of(sigmoid=False, has_bias=False, symmetric=True)
