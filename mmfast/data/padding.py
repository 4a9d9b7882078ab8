"""Padding of variable-length sequences to a batch, with lengths; and the padding masks.

The masks are defined in :mod:`mmfast.nn._padding`, beside the layers that use them (the encoders
must not depend on ``mmfast.data``); they are re-exported here for the data pipeline and for code
that imported them from this module.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from mmfast.nn._padding import lengths_to_padding_mask, lengths_to_valid_mask

__all__ = ["lengths_to_padding_mask", "lengths_to_valid_mask", "pad_sequences"]


def pad_sequences(
    sequences: Sequence[torch.Tensor],
    padding_value: float = 0.0,
    max_length: int | None = None,
    truncate: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad sequences of shape ``[L_i, *]`` to ``[B, L, *]``; returns ``(padded, lengths)``.

    Args:
        sequences: tensors with the same trailing shape, dtype and device; ``L_i`` may differ.
        padding_value: value written past each sequence's end.
        max_length: pad to this length instead of the longest sequence.
        truncate: allow sequences longer than ``max_length`` to be cut to it. Without it a longer
            sequence is an error, so nothing is ever cut silently.

    Returns:
        ``padded`` of shape ``[B, L, *]`` and ``lengths`` (int64 ``[B]``, after truncation).
    """
    if len(sequences) == 0:
        raise ValueError("sequences: expected at least one tensor, got none")
    first = sequences[0]
    for i, seq in enumerate(sequences):
        if not isinstance(seq, torch.Tensor) or seq.dim() == 0:
            raise ValueError(f"sequences[{i}]: expected a tensor with a length dimension, got {seq!r}")
        if seq.shape[1:] != first.shape[1:] or seq.dtype != first.dtype or seq.device != first.device:
            raise ValueError(
                f"sequences[{i}]: expected trailing shape {list(first.shape[1:])}, dtype {first.dtype} and "
                f"device {first.device}, got {list(seq.shape[1:])}, {seq.dtype}, {seq.device}"
            )
    lengths = torch.tensor([seq.shape[0] for seq in sequences], dtype=torch.int64)
    longest = int(lengths.max())
    if max_length is None:
        target = longest
    else:
        if max_length < 0:
            raise ValueError(f"max_length: expected a non-negative length, got {max_length}")
        if longest > max_length and not truncate:
            raise ValueError(
                f"sequences: the longest has length {longest} > max_length={max_length}; "
                "pass truncate=True to cut sequences to max_length"
            )
        target = max_length
    lengths = lengths.clamp(max=target)
    padded = first.new_full((len(sequences), target, *first.shape[1:]), padding_value)
    for i, seq in enumerate(sequences):
        padded[i, : lengths[i]] = seq[: lengths[i]]
    return padded, lengths
