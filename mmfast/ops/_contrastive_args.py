"""Argument checks and conventions shared by the contrastive losses (two feature matrices, a
scalar scale and bias); the C++ checks (``csrc/engine/pairwise.h``) raise the same messages."""

from __future__ import annotations

import torch

# Features of these dtypes are computed (and the loss returned) in float32.
_REDUCED = (torch.bfloat16, torch.float16)
FEATURE_DTYPES = (torch.float32, torch.float64, torch.bfloat16)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the losses compute in (and return) for features of ``dtype``."""
    return torch.float32 if dtype in _REDUCED else dtype


def scalar_tensor(value: torch.Tensor | float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``value`` (a 0-dim tensor, keeping its autograd history, or a number) as a 0-dim tensor of
    ``dtype`` on ``device``."""
    if isinstance(value, torch.Tensor):
        return value.to(device=device, dtype=dtype)
    return torch.tensor(float(value), dtype=dtype, device=device)


def _check_scalar(value: object, argument: str, device: torch.device) -> None:
    if isinstance(value, bool) or not isinstance(value, (torch.Tensor, int, float)):
        raise TypeError(f"{argument}: expected a 0-dim tensor or a float, got {type(value).__name__}")
    if isinstance(value, torch.Tensor):
        if value.dim() != 0:
            raise ValueError(f"{argument}: expected a 0-dim tensor (a scalar), got shape {list(value.shape)}")
        if not value.dtype.is_floating_point:
            raise TypeError(f"{argument}: expected a floating-point tensor, got {value.dtype}")
        if value.device != device:
            raise ValueError(f"{argument}: expected device {device} like the features, got {value.device}")


def check_contrastive_args(
    image: object,
    text: object,
    logit_scale: object,
    logit_bias: object,
    label_offset: int = 0,
    square: bool = True,
    bias_required: bool = False,
) -> None:
    """Raises a TypeError / ValueError naming the argument for anything the losses do not take."""
    for argument, x in (("image_features", image), ("text_features", text)):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{argument}: expected a tensor, got {type(x).__name__}")
        if x.dim() != 2:
            raise ValueError(f"{argument}: expected a 2-D tensor [B, D], got shape {list(x.shape)}")
        if x.dtype not in FEATURE_DTYPES:
            raise TypeError(
                f"{argument}: expected torch.float32, torch.float64 or torch.bfloat16, got {x.dtype}"
            )
    if text.dtype != image.dtype:
        raise TypeError(f"text_features: expected dtype {image.dtype} like image_features, got {text.dtype}")
    if text.device != image.device:
        raise ValueError(
            f"text_features: expected device {image.device} like image_features, got {text.device}"
        )
    if text.shape[1] != image.shape[1]:
        raise ValueError(
            f"text_features: expected feature dim {image.shape[1]} like image_features, got {text.shape[1]}"
        )
    if image.shape[0] == 0:
        raise ValueError("image_features: expected a batch of at least 1 pair, got 0 rows")
    if square:
        if text.shape[0] != image.shape[0]:
            raise ValueError(
                f"text_features: expected {image.shape[0]} rows like image_features (one text per "
                f"image), got {text.shape[0]}"
            )
        if label_offset != 0:
            raise ValueError(f"label_offset: expected 0 for the symmetric loss, got {label_offset}")
    elif text.shape[0] < image.shape[0]:
        raise ValueError(
            f"text_features: expected at least {image.shape[0]} rows (one text per image), "
            f"got {text.shape[0]}"
        )
    elif not 0 <= label_offset <= text.shape[0] - image.shape[0]:
        raise ValueError(
            f"label_offset: image row i pairs with text row i + label_offset, so expected 0 to "
            f"{text.shape[0] - image.shape[0]} for {image.shape[0]} images and {text.shape[0]} texts, "
            f"got {label_offset}"
        )
    _check_scalar(logit_scale, "logit_scale", image.device)
    if logit_bias is None:
        if bias_required:
            raise TypeError("logit_bias: expected a 0-dim tensor or a float, got None")
    else:
        _check_scalar(logit_bias, "logit_bias", image.device)
