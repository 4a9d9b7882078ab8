"""`AudioEncoder`: a 1-D residual CNN over spectrogram or MFCC frames with masked pooling."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from mmfast.encoders.base import check_lengths, masked_mean
from mmfast.nn._padding import lengths_to_padding_mask


class FrameConvBlock(nn.Module):
    """Conv1d over time, LayerNorm over the channels of each frame, ReLU, plus a residual path.

    The norm is per frame (not BatchNorm over the batch and time), so padded frames never leak
    into the statistics of the valid ones.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        self.norm = nn.LayerNorm(out_channels)
        self.shortcut: nn.Module = (
            nn.Identity() if in_channels == out_channels else nn.Conv1d(in_channels, out_channels, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``[B, C, T]`` with zeros at padded frames; returns ``[B, C', T]``."""
        out = self.norm(self.conv(x).transpose(1, 2)).transpose(1, 2)
        return torch.relu(out) + self.shortcut(x)


class AudioEncoder(nn.Module):
    """1-D CNN over frames ``[B, T, F]`` (log-mel or MFCC), returning ``[B, out_dim]``.

    Residual conv blocks (odd ``kernel_size``, "same" padding) see exactly what a single unpadded
    sequence would: padded frames are zeroed after every block, like the convolution's own zero
    padding at a sequence's end. The output is the projection of the mean over the valid frames;
    the tokens (:meth:`forward_tokens`) are the projected frames with their padding mask.

    Args:
        in_features: feature size ``F`` of each frame.
        out_dim: size of the output features.
        channels: channels of each conv block.
        kernel_size: odd temporal kernel size.
    """

    def __init__(
        self, in_features: int, out_dim: int = 128, channels: Sequence[int] = (64, 128), kernel_size: int = 5
    ) -> None:
        super().__init__()
        if in_features < 1 or out_dim < 1 or not channels or min(channels) < 1:
            raise ValueError(
                f"AudioEncoder: expected positive in_features, out_dim and channels, got "
                f"{in_features}, {out_dim}, {list(channels)}"
            )
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size: expected an odd positive size, got {kernel_size}")
        self.in_features = in_features
        self.out_dim = out_dim
        widths = [in_features, *channels]
        self.blocks = nn.ModuleList(FrameConvBlock(a, b, kernel_size) for a, b in zip(widths, widths[1:]))
        self.proj = nn.Linear(widths[-1], out_dim)

    def frame_features(
        self, frames: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Per-frame features ``[B, T, channels[-1]]`` and the padding mask (None if no padding)."""
        if frames.dim() != 3 or frames.shape[2] != self.in_features:
            raise ValueError(f"frames: expected [B, T, {self.in_features}], got shape {list(frames.shape)}")
        batch, steps, _ = frames.shape
        padding_mask = None
        keep = None
        if lengths is not None:
            lengths = check_lengths(lengths, batch, steps, "lengths")
            padding_mask = lengths_to_padding_mask(lengths, steps).to(frames.device)
            keep = (~padding_mask).unsqueeze(1).to(frames.dtype)
        x = frames.transpose(1, 2)
        if keep is not None:
            x = x * keep
        for block in self.blocks:
            x = block(x)
            if keep is not None:
                x = x * keep
        return x.transpose(1, 2), padding_mask

    def forward(self, frames: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """``[B, out_dim]`` from frames ``[B, T, F]`` and int64 ``lengths`` ``[B]`` (default: all T)."""
        features, padding_mask = self.frame_features(frames, lengths)
        return self.proj(masked_mean(features, padding_mask))

    def forward_tokens(
        self, frames: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Projected frames ``[B, T, out_dim]`` and their padding mask ``[B, T]`` (None: all valid)."""
        features, padding_mask = self.frame_features(frames, lengths)
        return self.proj(features), padding_mask
