"""What every modality encoder provides."""

from __future__ import annotations

from typing import NamedTuple, Protocol, runtime_checkable

import torch


@runtime_checkable
class ModalityEncoder(Protocol):
    """An ``nn.Module`` that encodes one modality.

    ``forward(x, lengths=None)`` returns ``[B, out_dim]``. ``forward_tokens(x, lengths=None)``
    returns the sequence the pooled vector summarises, ``[B, S, out_dim]``, and a boolean padding
    mask ``[B, S]`` (True at padding) or None when every token is valid; attention fusions attend
    over these tokens. ``lengths`` (int64 ``[B]``) is the valid length of each padded sequence.
    """

    out_dim: int

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor: ...

    def forward_tokens(
        self, x: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]: ...


class EncoderOutputs(NamedTuple):
    """What ``forward_with_tokens`` returns: the pooled vector ``[B, out_dim]`` (what ``forward``
    returns), the tokens ``[B, S, out_dim]`` (what ``forward_tokens`` returns) and their padding
    mask ``[B, S]`` (True at padding; None when every token is valid), from one pass."""

    pooled: torch.Tensor
    tokens: torch.Tensor
    padding_mask: torch.Tensor | None


def check_lengths(lengths: torch.Tensor | None, batch: int, max_length: int, name: str) -> torch.Tensor:
    """``lengths`` validated against a padded ``[batch, max_length, ...]`` input (default: all full)."""
    if lengths is None:
        return torch.full((batch,), max_length, dtype=torch.int64)
    if lengths.dim() != 1 or lengths.shape[0] != batch or lengths.dtype not in (torch.int32, torch.int64):
        raise ValueError(
            f"{name}: expected int64 lengths of shape [{batch}], got {lengths.dtype} {list(lengths.shape)}"
        )
    # Lengths live on the CPU for pack_padded_sequence; validating them there costs no device sync.
    lengths = lengths.to("cpu", torch.int64)
    # Under torch.compile / torch.export the values are not known while tracing; the check runs
    # in eager calls only.
    if (
        batch
        and not torch.compiler.is_compiling()
        and (int(lengths.min()) < 1 or int(lengths.max()) > max_length)
    ):
        raise ValueError(f"{name}: expected lengths in [1, {max_length}], got {lengths.tolist()}")
    return lengths


def masked_mean(tokens: torch.Tensor, padding_mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of ``tokens [B, S, D]`` over the positions where ``padding_mask [B, S]`` is False."""
    if padding_mask is None:
        return tokens.mean(dim=1)
    valid = (~padding_mask).unsqueeze(-1).to(tokens.dtype)
    return (tokens * valid).sum(dim=1) / valid.sum(dim=1).clamp_min(1.0)
