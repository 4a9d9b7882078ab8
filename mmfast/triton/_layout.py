"""Channels-last storage of a map ``[B, C, *spatial]``: the rule the ops' C++ kernels apply
(``film_channels_last`` in ``csrc/ops/film/film.h``), for their fakes (`mmfast.ops`) and the Triton
launchers. Imports torch only."""

from __future__ import annotations

import torch

__all__ = ["empty_in_layout", "in_layout", "stored_channels_last"]


def _channels_last_order(dim: int) -> list[int]:
    """``[0, 2, ..., dim - 1, 1]``: the dims of ``[B, C, *spatial]`` in channels-last storage order."""
    return [0, *range(2, dim), 1]


def stored_channels_last(features: torch.Tensor) -> bool:
    """Whether ``features [B, C, *spatial]`` is stored channels last: each sample a dense
    ``[*spatial, C]`` block (``torch.channels_last`` / ``channels_last_3d``, or a ``[B, L, C]`` tensor
    transposed to ``[B, C, L]``) and not also plainly contiguous (one channel, one position)."""
    return (
        features.dim() >= 3
        and not features.is_contiguous()
        and features.permute(_channels_last_order(features.dim())).is_contiguous()
    )


def empty_in_layout(like: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """An uninitialised tensor of ``like``'s shape, dtype and device, channels last or contiguous."""
    if not channels_last:
        return like.new_empty(like.shape)
    return torch.empty_permuted(
        like.shape, _channels_last_order(like.dim()), dtype=like.dtype, device=like.device
    )


def in_layout(map_: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """``map_`` channels last or contiguous, copied only where it is not already."""
    if not channels_last:
        return map_.contiguous()
    if map_.permute(_channels_last_order(map_.dim())).is_contiguous():
        return map_
    return empty_in_layout(map_, True).copy_(map_)
