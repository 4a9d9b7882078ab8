"""Padding masks from sequence lengths, in PyTorch's ``key_padding_mask`` convention.

They live here, below the encoders that pool and attend with them, so that the modelling layers
(models -> encoders -> nn) never import ``mmfast.data``; ``mmfast.data`` re-exports them.
"""

from __future__ import annotations

import torch


def lengths_to_padding_mask(lengths: torch.Tensor, max_length: int | None = None) -> torch.Tensor:
    """Boolean ``[B, L]`` mask, True at padding positions (PyTorch's ``key_padding_mask`` convention).

    Args:
        lengths: int ``[B]``, the valid length of each sequence.
        max_length: ``L`` (default: the longest length).
    """
    if lengths.dim() != 1:
        raise ValueError(f"lengths: expected a 1-D tensor, got shape {list(lengths.shape)}")
    if lengths.numel() and not torch.compiler.is_compiling() and int(lengths.min()) < 0:
        raise ValueError("lengths: expected non-negative lengths")
    if max_length is None:
        max_length = int(lengths.max()) if lengths.numel() else 0
    positions = torch.arange(max_length, device=lengths.device)
    return positions.unsqueeze(0) >= lengths.unsqueeze(1)


def lengths_to_valid_mask(lengths: torch.Tensor, max_length: int | None = None) -> torch.Tensor:
    """Boolean ``[B, L]`` mask, True at valid (non-padding) positions."""
    return ~lengths_to_padding_mask(lengths, max_length)
