"""`film`: feature-wise linear modulation (Perez et al., 2018) of a feature map by a condition,
fused: ``gamma, beta = split(condition @ weight.T + bias)``, ``out = features * (1 + gamma) + beta``
broadcast over the spatial dims of ``features [B, C, *spatial]``.

Everything the Python side knows of the op is here: its reference (the definition), its argument
check (shared by the reference path and the fakes), its fake implementations and its descriptor.
The op is ``torch.ops.mmfast.film``; its schemas, C++ checks, autograd formula and CPU kernel are in
``csrc/ops/film/``, its Triton kernels (CUDA, and every device with ``MMFAST_BACKEND=triton``) in
``mmfast/triton/film.py``. Without the compiled extension the reference runs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mmfast.ops import _dispatch, _registry
from mmfast.ops._validation import check_like
from mmfast.triton._layout import empty_in_layout, stored_channels_last

__all__ = ["film", "film_reference", "stored_channels_last"]


def film_reference(
    features: torch.Tensor, condition: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """The definition of FiLM in plain PyTorch, as eager models write it: a linear FiLM generator
    ``[B, K] -> [B, 2C]`` split into ``gamma`` (first C) and ``beta``, broadcast over the spatial
    dims of ``features [B, C, *spatial]``."""
    gamma, beta = F.linear(condition, weight, bias).chunk(2, dim=1)
    shape = [*gamma.shape, *([1] * (features.dim() - 2))]
    return features * (1 + gamma.view(shape)) + beta.view(shape)


def check_film_args(features: object, condition: object, weight: object, bias: object) -> tuple[int, int]:
    """Validated ``(channels C, condition dim K)``; the errors are those of the C++ checks."""
    if not isinstance(features, torch.Tensor):
        raise TypeError(f"features: expected a tensor, got {type(features).__name__}")
    if not features.dtype.is_floating_point:
        raise TypeError(f"features: expected a floating-point tensor, got {features.dtype}")
    if features.dim() < 2:
        raise ValueError(f"features: expected a tensor [B, C, *spatial], got shape {list(features.shape)}")
    batch, channels = features.shape[0], features.shape[1]
    if not isinstance(condition, torch.Tensor):
        raise TypeError(f"condition: expected a tensor, got {type(condition).__name__}")
    if condition.dim() != 2 or condition.shape[0] != batch:
        raise ValueError(
            f"condition: expected shape [{batch}, K] (one condition per sample of features), "
            f"got {list(condition.shape)}"
        )
    cond_dim = condition.shape[1]
    check_like(condition, "condition", features, condition.shape)
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"weight: expected a tensor, got {type(weight).__name__}")
    if list(weight.shape) != [2 * channels, cond_dim]:
        raise ValueError(
            f"weight: expected shape [{2 * channels}, {cond_dim}] ([2C, K]: gamma's rows, then beta's), "
            f"got {list(weight.shape)}"
        )
    check_like(weight, "weight", features, weight.shape)
    if bias is not None:
        check_like(bias, "bias", features, [2 * channels])
    return channels, cond_dim


def film(
    features: torch.Tensor, condition: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """``features * (1 + gamma) + beta`` with ``gamma, beta = split(condition @ weight.T + bias)``.

    Args:
        features: ``[B, C, *spatial]`` (any number of spatial dims, none included).
        condition: ``[B, K]``, same dtype and device.
        weight: ``[2C, K]``: gamma's rows, then beta's (an ``nn.Linear(K, 2C)`` FiLM generator).
        bias: ``[2C]`` or None.

    Returns:
        ``[B, C, *spatial]``, stored like ``features`` where that is channels last (see
        `stored_channels_last`: ``torch.channels_last``, a transposed ``[B, L, C]``), else contiguous;
        differentiable (once: a second derivative raises) with respect to
        ``features``, ``condition``, ``weight`` and ``bias``. One GEMM and one pass over the feature
        map; the backward keeps the inputs and ``gamma, beta`` (``B x 2C`` numbers), and makes one
        pass over the feature map before its GEMMs.
    """
    device = features.device if isinstance(features, torch.Tensor) else None
    if device is not None and _dispatch.implementation("film", device) == "compiled":
        return torch.ops.mmfast.film.default(features, condition, weight, bias)
    check_film_args(features, condition, weight, bias)
    return film_reference(features, condition, weight, bias)


def _register_fakes() -> None:
    @torch.library.register_fake("mmfast::film_forward")
    def _forward_fake(features, condition, weight, bias):
        channels, _ = check_film_args(features, condition, weight, bias)
        return empty_in_layout(features, stored_channels_last(features)), features.new_empty(
            [features.shape[0], 2 * channels]
        )

    @torch.library.register_fake("mmfast::film_backward")
    def _backward_fake(grad_output, features, condition, weight, modulation, output_mask):
        empty = grad_output.new_empty([0])
        return (
            empty_in_layout(grad_output, stored_channels_last(grad_output)) if output_mask[0] else empty,
            torch.empty_like(condition, memory_format=torch.contiguous_format) if output_mask[1] else empty,
            torch.empty_like(weight, memory_format=torch.contiguous_format) if output_mask[2] else empty,
            weight.new_empty([weight.shape[0]]) if output_mask[3] else empty,
        )


DESCRIPTOR = _registry.register(
    _registry.OpDescriptor(
        name="film",
        summary="features [B, C, *spatial] * (1 + gamma) + beta, (gamma, beta) = split(condition @ W.T + b)",
        reference=film_reference,
        compiled={"cpu": "cpp (ATen / oneDNN GEMM, at::vec modulation pass)"},
        register_fakes=_register_fakes,
        min_inputs=1,
        triton="mmfast.triton.film",
    )
)
