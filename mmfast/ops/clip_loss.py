"""`clip_loss`: CLIP's symmetric contrastive loss (InfoNCE over image-text pairs) without the
``B x B`` logit matrix.

Everything the Python side knows of the op is here: its reference (the definition: open_clip's
``ClipLoss`` on one process), its argument check (shared by the reference path and the fakes),
its fake implementations and its descriptor. The op is ``torch.ops.mmfast.clip_loss``; its
schemas, C++ checks, autograd formula and CPU kernel (tiles of logits, the row and the column
log-sum-exp accumulated in one pass, the backward recomputing the tiles) are in
``csrc/ops/clip_loss/``. Without the compiled extension the reference runs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mmfast.ops import _dispatch, _registry
from mmfast.ops._contrastive_args import check_contrastive_args, compute_dtype, scalar_tensor

__all__ = ["clip_loss", "clip_loss_reference"]


def clip_loss_reference(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    logit_scale: torch.Tensor | float,
    logit_bias: torch.Tensor | float | None = None,
    *,
    label_offset: int = 0,
    symmetric: bool = True,
) -> torch.Tensor:
    """The definition of `clip_loss` in plain PyTorch, as open_clip's ``ClipLoss`` computes it
    (it builds the ``[B_image, B_text]`` logits), in float32 for bfloat16 / float16 features.

    ``logits = logit_scale * image_features @ text_features.T (+ logit_bias)``; with ``symmetric``
    (the two batches equal) ``(cross_entropy(logits, arange(B)) + cross_entropy(logits.T,
    arange(B))) / 2``; without, the image rows alone: ``cross_entropy(logits, arange(B_image) +
    label_offset)`` (one direction of open_clip's ``local_loss``).
    """
    dtype = compute_dtype(image_features.dtype)
    logits = scalar_tensor(logit_scale, dtype, image_features.device) * (
        image_features.to(dtype) @ text_features.to(dtype).T
    )
    if logit_bias is not None:
        logits = logits + scalar_tensor(logit_bias, dtype, image_features.device)
    labels = torch.arange(image_features.shape[0], device=image_features.device) + label_offset
    if not symmetric:
        return F.cross_entropy(logits, labels)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


def clip_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    logit_scale: torch.Tensor | float,
    logit_bias: torch.Tensor | float | None = None,
    *,
    label_offset: int = 0,
    symmetric: bool = True,
) -> torch.Tensor:
    """CLIP's symmetric InfoNCE loss, fused: memory linear in the batch.

    ``logits = logit_scale * image_features @ text_features.T (+ logit_bias)``; the loss is the
    mean of the cross-entropies of the rows and of the columns against the diagonal, exactly
    open_clip's ``ClipLoss`` on one process. The features are used as given (normalise them first,
    as CLIP does); ``logit_scale`` is the multiplier itself (open_clip passes ``logit_scale.exp()``).

    Args:
        image_features: ``[B, D]``; float32, float64 or bfloat16 (computed in float32).
        text_features: ``[B, D]``, same dtype and device (``[B_text, D]`` without ``symmetric``).
        logit_scale: a 0-dim tensor or a float.
        logit_bias: a 0-dim tensor, a float or None.
        label_offset: without ``symmetric``, image row ``i`` pairs with text row ``i + label_offset``
            (a data-parallel rank's rows against the gathered texts).
        symmetric: both directions over a square batch (the default); False: the image rows only.

    Returns:
        The 0-dim loss, in float32 for bfloat16 features; differentiable (once) with respect to
        both feature matrices, ``logit_scale`` and ``logit_bias``.
    """
    check_contrastive_args(
        image_features, text_features, logit_scale, logit_bias, label_offset, square=symmetric
    )
    device = image_features.device
    if _dispatch.implementation("clip_loss", device) == "compiled":
        dtype = compute_dtype(image_features.dtype)
        bias = None if logit_bias is None else scalar_tensor(logit_bias, dtype, device)
        return torch.ops.mmfast.clip_loss.default(
            image_features,
            text_features,
            scalar_tensor(logit_scale, dtype, device),
            bias,
            label_offset,
            symmetric,
        )
    return clip_loss_reference(
        image_features,
        text_features,
        logit_scale,
        logit_bias,
        label_offset=label_offset,
        symmetric=symmetric,
    )


def _register_fakes() -> None:
    @torch.library.register_fake("mmfast::clip_loss_forward")
    def _forward_fake(image, text, logit_scale, logit_bias, label_offset, symmetric):
        check_contrastive_args(image, text, logit_scale, logit_bias, label_offset, square=symmetric)
        dtype = compute_dtype(image.dtype)
        return (
            image.new_empty([], dtype=dtype),
            image.new_empty([image.shape[0]], dtype=dtype),
            image.new_empty([text.shape[0] if symmetric else 0], dtype=dtype),
        )

    @torch.library.register_fake("mmfast::clip_loss_forward_with_grads")
    def _forward_with_grads_fake(image, text, logit_scale, logit_bias, label_offset, symmetric, mask):
        loss, row_lse, col_lse = _forward_fake(image, text, logit_scale, logit_bias, label_offset, symmetric)
        dtype = loss.dtype

        def empty():  # one of its own per gradient left out: outputs do not alias
            return image.new_empty([0], dtype=dtype)

        return (
            loss,
            row_lse,
            col_lse,
            image.new_empty(image.shape, dtype=dtype) if mask[0] else empty(),
            text.new_empty(text.shape, dtype=dtype) if mask[1] else empty(),
            torch.empty_like(logit_scale) if mask[2] else empty(),
            torch.empty_like(logit_bias) if mask[3] and logit_bias is not None else empty(),
        )

    @torch.library.register_fake("mmfast::clip_loss_backward")
    def _backward_fake(
        grad, image, text, logit_scale, logit_bias, row_lse, col_lse, label_offset, symmetric, mask
    ):
        empty = image.new_empty([0])
        return (
            torch.empty_like(image, memory_format=torch.contiguous_format) if mask[0] else empty,
            torch.empty_like(text, memory_format=torch.contiguous_format) if mask[1] else empty,
            torch.empty_like(logit_scale) if mask[2] else empty,
            torch.empty_like(logit_bias) if mask[3] and logit_bias is not None else empty,
        )


DESCRIPTOR = _registry.register(
    _registry.OpDescriptor(
        name="clip_loss",
        summary="CLIP's symmetric InfoNCE over [B, D] image and text features, memory O(B), no B x B logits",
        reference=clip_loss_reference,
        compiled={"cpu": "cpp (tiled logits through ATen GEMMs, both log-sum-exps in one pass)"},
        register_fakes=_register_fakes,
        min_inputs=2,
        triton="mmfast.triton.clip_loss",
    )
)
