"""`ImageEncoder`: a small residual CNN (conv-BN-ReLU blocks, global average pooling)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from mmfast.encoders.base import EncoderOutputs
from mmfast.encoders.text import sinusoidal_positions


def sinusoidal_positions_2d(
    height: int, width: int, dim: int, device: torch.device | None = None
) -> torch.Tensor:
    """A fixed 2-D position encoding of a ``height x width`` map, ``[height * width, dim]`` in
    row-major order: the first ``dim // 2`` features are the sine / cosine encoding
    (:func:`~mmfast.encoders.text.sinusoidal_positions`) of the row, the others that of the column."""
    if min(height, width) < 1 or dim < 2:
        raise ValueError(
            f"height, width, dim: expected positive sizes and dim >= 2, got {height}, {width}, {dim}"
        )
    rows = sinusoidal_positions(height, dim // 2, device)  # [H, dim // 2]
    columns = sinusoidal_positions(width, dim - dim // 2, device)  # [W, dim - dim // 2]
    grid = torch.cat(
        [rows[:, None, :].expand(height, width, -1), columns[None, :, :].expand(height, width, -1)], dim=-1
    )
    return grid.reshape(height * width, dim)


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
    feature map, ``[B, H' * W', out_dim]`` in row-major order; their mean is the pooled output.
    With ``token_positions=True`` each token also gets the fixed 2-D sine / cosine encoding of its
    row and column (:func:`sinusoidal_positions_2d`), so that attention over the tokens knows where
    each one is; it has no parameters (the state dict is the same) and the pooled output is
    unchanged. :meth:`forward_with_tokens` returns the pooled vector and the tokens of one pass.

    Args:
        in_channels: channels of the input images.
        out_dim: size of the output features.
        channels: channels of each stage.
        blocks: residual blocks per stage.
        token_positions: add the 2-D position encoding to the tokens (default False).
        stem_stride: stride of the stem convolution (2 halves the resolution before the first
            stage: a quarter of the work on large images of small objects).
    """

    def __init__(
        self,
        in_channels: int,
        out_dim: int = 128,
        channels: Sequence[int] = (32, 64),
        blocks: int = 1,
        token_positions: bool = False,
        stem_stride: int = 1,
    ) -> None:
        super().__init__()
        if stem_stride < 1:
            raise ValueError(f"stem_stride: expected a positive stride, got {stem_stride}")
        if in_channels < 1 or out_dim < 1 or blocks < 1 or not channels or min(channels) < 1:
            raise ValueError(
                f"ImageEncoder: expected positive in_channels, out_dim, blocks and channels, got "
                f"{in_channels}, {out_dim}, {blocks}, {list(channels)}"
            )
        self.in_channels = in_channels
        self.out_dim = out_dim
        self.token_positions = bool(token_positions)
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, channels[0], 3, stride=stem_stride, padding=1, bias=False),
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
        self.feature_channels = previous
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
        """``[B, H' * W', out_dim]`` tokens, one per position of the last feature map (all valid),
        row-major, with their 2-D position encoding if ``token_positions``."""
        outputs = self.forward_with_tokens(images)
        return outputs.tokens, None

    def forward_with_tokens(
        self, images: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> EncoderOutputs:
        """The pooled ``[B, out_dim]`` (as :meth:`forward`) and the tokens (as
        :meth:`forward_tokens`) of one pass over the CNN; the padding mask is None."""
        return self.tokens_of(self.features(images))

    def tokens_of(self, feature_map: torch.Tensor) -> EncoderOutputs:
        """:meth:`forward_with_tokens` from a feature map ``[B, feature_channels, H', W']`` (what
        :meth:`features` returns, or a map computed from it)."""
        height, width = feature_map.shape[-2:]
        projected = self.proj(feature_map.flatten(2).transpose(1, 2))  # [B, H' * W', out_dim]
        pooled = projected.mean(dim=1)
        if self.token_positions:
            positions = sinusoidal_positions_2d(height, width, self.out_dim, feature_map.device)
            projected = projected + positions.to(projected.dtype)
        return EncoderOutputs(pooled, projected, None)
