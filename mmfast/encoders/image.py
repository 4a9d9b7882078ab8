"""`ImageEncoder`: a small residual CNN (conv-BN-ReLU blocks, global average pooling)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class ResidualBlock(nn.Module):
    """``relu(bn(conv(relu(bn(conv(x))))) + shortcut(x))``; the shortcut is a strided 1x1 conv + BN
    when the shape changes."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ImageEncoder(nn.Module):
    """Residual CNN over ``[B, C, H, W]`` images, returning ``[B, out_dim]``.

    A conv-BN-ReLU stem, then one stage per entry of ``channels`` (``blocks`` residual blocks each;
    every stage after the first halves the resolution), global average pooling and a linear
    projection. The tokens (:meth:`forward_tokens`) are the projected positions of the last
    feature map, ``[B, H' * W', out_dim]``; their mean is the pooled output.

    Args:
        in_channels: channels of the input images.
        out_dim: size of the output features.
        channels: channels of each stage.
        blocks: residual blocks per stage.
    """

    def __init__(
        self, in_channels: int, out_dim: int = 128, channels: Sequence[int] = (32, 64), blocks: int = 1
    ) -> None:
        super().__init__()
        if in_channels < 1 or out_dim < 1 or blocks < 1 or not channels or min(channels) < 1:
            raise ValueError(
                f"ImageEncoder: expected positive in_channels, out_dim, blocks and channels, got "
                f"{in_channels}, {out_dim}, {blocks}, {list(channels)}"
            )
        self.in_channels = in_channels
        self.out_dim = out_dim
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, channels[0], 3, padding=1, bias=False),
            nn.BatchNorm2d(channels[0]),
            nn.ReLU(inplace=True),
        )
        layers = []
        previous = channels[0]
        for stage, width in enumerate(channels):
            for block in range(blocks):
                stride = 2 if stage > 0 and block == 0 else 1
                layers.append(ResidualBlock(previous, width, stride))
                previous = width
        self.stages = nn.Sequential(*layers)
        self.proj = nn.Linear(previous, out_dim)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """The last feature map, ``[B, channels[-1], H', W']``."""
        if images.dim() != 4 or images.shape[1] != self.in_channels:
            raise ValueError(
                f"images: expected [B, {self.in_channels}, H, W], got shape {list(images.shape)}"
            )
        return self.stages(self.stem(images))

    def forward(self, images: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """``[B, out_dim]``; ``lengths`` is accepted for a uniform encoder interface and ignored."""
        return self.proj(self.features(images).mean(dim=(2, 3)))

    def forward_tokens(
        self, images: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, None]:
        """``[B, H' * W', out_dim]`` tokens, one per position of the last feature map (all valid)."""
        return self.proj(self.features(images).flatten(2).transpose(1, 2)), None
