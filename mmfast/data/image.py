"""Image preprocessing with tensor ops: scaling to [0, 1], resizing, per-channel normalisation."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

_RESIZE_MODES = ("nearest", "bilinear", "bicubic", "area")


def _check_image(images: torch.Tensor, name: str = "images") -> None:
    if images.dim() not in (3, 4):
        raise ValueError(f"{name}: expected [C, H, W] or [B, C, H, W], got shape {list(images.shape)}")


def to_unit_range(images: torch.Tensor, max_value: float | None = None) -> torch.Tensor:
    """Float images in [0, 1]: integers are divided by their dtype's maximum (255 for uint8),
    floats by ``max_value`` when given (e.g. 16 for scikit-learn's digits)."""
    _check_image(images)
    if images.is_floating_point():
        if max_value is None:
            return images
        if max_value <= 0:
            raise ValueError(f"max_value: expected a positive value, got {max_value}")
        return images / max_value
    scale = float(max_value) if max_value is not None else float(torch.iinfo(images.dtype).max)
    return images.to(torch.float32) / scale


def resize_image(
    images: torch.Tensor, size: int | Sequence[int], mode: str = "bilinear", antialias: bool = True
) -> torch.Tensor:
    """Resize ``[C, H, W]`` or ``[B, C, H, W]`` float images to ``size`` (an int for a square).

    Antialiasing (for bilinear and bicubic) low-pass filters when shrinking, as image libraries do.
    """
    _check_image(images)
    if not images.is_floating_point():
        raise ValueError(f"images: expected a floating dtype, got {images.dtype} (see to_unit_range)")
    if mode not in _RESIZE_MODES:
        raise ValueError(f"mode: expected one of {', '.join(_RESIZE_MODES)}, got {mode!r}")
    hw = (int(size), int(size)) if isinstance(size, int) else tuple(int(s) for s in size)
    if len(hw) != 2 or min(hw) <= 0:
        raise ValueError(f"size: expected a positive int or (height, width), got {size!r}")
    batched = images if images.dim() == 4 else images.unsqueeze(0)
    options = {"align_corners": False, "antialias": antialias} if mode in ("bilinear", "bicubic") else {}
    resized = F.interpolate(batched, size=hw, mode=mode, **options)
    return resized if images.dim() == 4 else resized.squeeze(0)


def channel_stats(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and standard deviation of a ``[B, C, H, W]`` image set (e.g. a training split)."""
    if images.dim() != 4:
        raise ValueError(f"images: expected [B, C, H, W], got shape {list(images.shape)}")
    flat = images.transpose(0, 1).reshape(images.shape[1], -1).to(torch.float64)
    return flat.mean(dim=1).to(images.dtype), flat.std(dim=1).to(images.dtype)


def normalize_image(
    images: torch.Tensor,
    mean: Sequence[float] | torch.Tensor,
    std: Sequence[float] | torch.Tensor,
    eps: float = 1e-8,
) -> torch.Tensor:
    """``(images - mean) / std`` per channel, for ``[C, H, W]`` or ``[B, C, H, W]`` images."""
    _check_image(images)
    channels = images.shape[-3]
    mean_t = torch.as_tensor(mean, dtype=images.dtype, device=images.device).reshape(-1)
    std_t = torch.as_tensor(std, dtype=images.dtype, device=images.device).reshape(-1)
    for name, value in (("mean", mean_t), ("std", std_t)):
        if value.numel() not in (1, channels):
            raise ValueError(f"{name}: expected 1 or {channels} values, got {value.numel()}")
    if bool((std_t < 0).any()):
        raise ValueError("std: expected non-negative values")
    return (images - mean_t.view(-1, 1, 1)) / std_t.clamp_min(eps).view(-1, 1, 1)
