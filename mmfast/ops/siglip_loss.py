"""`siglip_loss`: SigLIP's pairwise sigmoid loss over image-text pairs without the ``B x B`` logit
matrix.

Everything the Python side knows of the op is here: its reference (the definition: open_clip's
``SigLipLoss`` on one process), its argument check, its fake implementations and its descriptor.
The op is ``torch.ops.mmfast.siglip_loss``; its schemas, C++ checks, autograd formula and CPU
kernel (tiles of logits, one pass each way) are in ``csrc/ops/siglip_loss/``. Without the compiled
extension the reference runs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mmfast.ops import _dispatch, _registry
from mmfast.ops._contrastive_args import check_contrastive_args, compute_dtype, scalar_tensor

__all__ = ["siglip_loss", "siglip_loss_reference"]


def siglip_loss_reference(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    logit_scale: torch.Tensor | float,
    logit_bias: torch.Tensor | float,
    *,
    label_offset: int = 0,
) -> torch.Tensor:
    """The definition of `siglip_loss` in plain PyTorch, as open_clip's ``SigLipLoss`` computes it
    (it builds the ``[B_image, B_text]`` logits), in float32 for bfloat16 / float16 features.

    ``logits = logit_scale * image_features @ text_features.T + logit_bias``; labels are 1 for the
    pairs ``(i, i + label_offset)`` and -1 elsewhere (``2 * eye - 1`` for a square batch);
    ``loss = -logsigmoid(labels * logits).sum() / B_image``.
    """
    dtype = compute_dtype(image_features.dtype)
    device = image_features.device
    logits = scalar_tensor(logit_scale, dtype, device) * (
        image_features.to(dtype) @ text_features.to(dtype).T
    )
    logits = logits + scalar_tensor(logit_bias, dtype, device)
    rows = image_features.shape[0]
    labels = -torch.ones_like(logits)
    labels[torch.arange(rows, device=device), torch.arange(rows, device=device) + label_offset] = 1
    return -F.logsigmoid(labels * logits).sum() / rows


def siglip_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    logit_scale: torch.Tensor | float,
    logit_bias: torch.Tensor | float,
    *,
    label_offset: int = 0,
) -> torch.Tensor:
    """SigLIP's pairwise sigmoid loss, fused: memory linear in the batch.

    ``logits = logit_scale * image_features @ text_features.T + logit_bias``,
    ``loss = -logsigmoid(labels * logits).sum() / B`` with ``labels = 2 * eye(B) - 1``: exactly
    open_clip's ``SigLipLoss`` on one process. The features are used as given (normalise them
    first); ``logit_scale`` is the multiplier itself (open_clip passes ``logit_scale.exp()``).

    Args:
        image_features: ``[B, D]``; float32, float64 or bfloat16 (computed in float32).
        text_features: ``[B_text, D]`` with ``B_text >= B + label_offset``, same dtype and device:
            the loss is defined for more texts than images (the extra texts are negatives only).
        logit_scale: a 0-dim tensor or a float.
        logit_bias: a 0-dim tensor or a float.
        label_offset: image row ``i`` pairs with text row ``i + label_offset`` (a data-parallel
            rank's rows against the gathered texts).

    Returns:
        The 0-dim loss, in float32 for bfloat16 features; differentiable (once) with respect to
        both feature matrices, ``logit_scale`` and ``logit_bias``.
    """
    check_contrastive_args(
        image_features, text_features, logit_scale, logit_bias, label_offset, square=False, bias_required=True
    )
    device = image_features.device
    if _dispatch.implementation("siglip_loss", device) == "compiled":
        dtype = compute_dtype(image_features.dtype)
        return torch.ops.mmfast.siglip_loss.default(
            image_features,
            text_features,
            scalar_tensor(logit_scale, dtype, device),
            scalar_tensor(logit_bias, dtype, device),
            label_offset,
        )
    return siglip_loss_reference(
        image_features, text_features, logit_scale, logit_bias, label_offset=label_offset
    )


def _register_fakes() -> None:
    @torch.library.register_fake("mmfast::siglip_loss_forward")
    def _forward_fake(image, text, logit_scale, logit_bias, label_offset):
        check_contrastive_args(
            image, text, logit_scale, logit_bias, label_offset, square=False, bias_required=True
        )
        return image.new_empty([], dtype=compute_dtype(image.dtype))

    @torch.library.register_fake("mmfast::siglip_loss_forward_with_grads")
    def _forward_with_grads_fake(image, text, logit_scale, logit_bias, label_offset, mask):
        check_contrastive_args(
            image, text, logit_scale, logit_bias, label_offset, square=False, bias_required=True
        )
        dtype = compute_dtype(image.dtype)

        def empty():  # one of its own per gradient left out: outputs do not alias
            return image.new_empty([0], dtype=dtype)

        return (
            image.new_empty([], dtype=dtype),
            image.new_empty(image.shape, dtype=dtype) if mask[0] else empty(),
            text.new_empty(text.shape, dtype=dtype) if mask[1] else empty(),
            torch.empty_like(logit_scale) if mask[2] else empty(),
            torch.empty_like(logit_bias) if mask[3] else empty(),
        )

    @torch.library.register_fake("mmfast::siglip_loss_backward")
    def _backward_fake(grad, image, text, logit_scale, logit_bias, label_offset, mask):
        empty = image.new_empty([0])
        return (
            torch.empty_like(image, memory_format=torch.contiguous_format) if mask[0] else empty,
            torch.empty_like(text, memory_format=torch.contiguous_format) if mask[1] else empty,
            torch.empty_like(logit_scale) if mask[2] else empty,
            torch.empty_like(logit_bias) if mask[3] else empty,
        )


DESCRIPTOR = _registry.register(
    _registry.OpDescriptor(
        name="siglip_loss",
        summary="SigLIP's pairwise sigmoid loss over [B, D] image and text features, memory O(B)",
        reference=siglip_loss_reference,
        compiled={"cpu": "cpp (tiled logits through ATen GEMMs, one pass each way)"},
        register_fakes=_register_fakes,
        min_inputs=2,
        triton="mmfast.triton.siglip_loss",
    )
)
