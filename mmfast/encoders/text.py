"""`TextEncoder`: token embeddings and a bidirectional LSTM (packed) or a Transformer encoder."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from mmfast.encoders.base import EncoderOutputs, check_lengths, masked_mean
from mmfast.nn._padding import lengths_to_padding_mask

TEXT_ENCODER_KINDS = ("lstm", "transformer")


def sinusoidal_positions(length: int, dim: int, device: torch.device | None = None) -> torch.Tensor:
    """The sine / cosine position encoding of "Attention Is All You Need", ``[length, dim]``."""
    position = torch.arange(length, dtype=torch.float32, device=device).unsqueeze(1)
    frequency = torch.exp(
        torch.arange(0, dim, 2, dtype=torch.float32, device=device) * (-math.log(10000.0) / dim)
    )
    table = torch.zeros(length, dim, device=device)
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency[: dim // 2])
    return table


class TextEncoder(nn.Module):
    """Encoder of padded token ids ``[B, L]`` returning ``[B, out_dim]``.

    ``kind="lstm"``: embedding, bidirectional LSTM over packed sequences (padding never enters
    the recurrence); the output projects the last hidden state of both directions.
    ``kind="transformer"``: scaled embedding plus sinusoidal positions, pre-norm
    ``nn.TransformerEncoder`` with a key padding mask; the output is the mean of the valid tokens.
    The tokens (:meth:`forward_tokens`) are the projected per-position outputs (the transformer's
    carry the sinusoidal positions of its input); :meth:`forward_with_tokens` returns the pooled
    vector and the tokens of one pass.

    With ``bag_of_words`` the pooled vector also gets a projection of the mean of the token
    embeddings, a path no gate can close for one kind of sentence: a word's contribution is the
    same in every sentence (scaled by its length). Why: an LSTM can learn to drop a word in one
    template only. On Sort-of-CLEVR a run whose count questions ("how many objects have the shape
    of the red object?") were first answered from the image alone learnt to drop the colour from
    those questions (its pooled vectors of that template no longer varied with the colour), and
    then nothing after the encoder could learn to use it: the count questions stayed at the
    answer the image alone gives.

    Args:
        vocab_size: number of token ids (special tokens included).
        out_dim: size of the output features.
        kind: ``"lstm"`` or ``"transformer"``.
        embed_dim: embedding size (the transformer's model width).
        hidden: LSTM hidden size per direction, or the transformer's feed-forward size.
        num_layers: LSTM or transformer layers.
        num_heads: attention heads (transformer).
        dropout: dropout between layers.
        pad_id: the padding token id (its embedding stays zero).
        bag_of_words: add the projected mean of the token embeddings to the pooled vector.
    """

    def __init__(
        self,
        vocab_size: int,
        out_dim: int = 128,
        kind: str = "lstm",
        embed_dim: int = 64,
        hidden: int = 64,
        num_layers: int = 1,
        num_heads: int = 4,
        dropout: float = 0.1,
        pad_id: int = 0,
        bag_of_words: bool = False,
    ) -> None:
        super().__init__()
        if kind not in TEXT_ENCODER_KINDS:
            raise ValueError(f"kind: expected one of {', '.join(TEXT_ENCODER_KINDS)}, got {kind!r}")
        if min(vocab_size, out_dim, embed_dim, hidden, num_layers) < 1:
            raise ValueError(
                "TextEncoder: expected positive vocab_size, out_dim, embed_dim, hidden and num_layers, got "
                f"{vocab_size}, {out_dim}, {embed_dim}, {hidden}, {num_layers}"
            )
        if not 0 <= pad_id < vocab_size:
            raise ValueError(f"pad_id: expected an id in [0, {vocab_size}), got {pad_id}")
        self.kind = kind
        self.vocab_size = vocab_size
        self.out_dim = out_dim
        self.pad_id = pad_id
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=pad_id)
        if kind == "lstm":
            self.lstm = nn.LSTM(
                embed_dim,
                hidden,
                num_layers=num_layers,
                batch_first=True,
                bidirectional=True,
                dropout=dropout if num_layers > 1 else 0.0,
            )
            self.proj = nn.Linear(2 * hidden, out_dim)
        else:
            if embed_dim % num_heads:
                raise ValueError(f"num_heads: {num_heads} does not divide embed_dim={embed_dim}")
            layer = nn.TransformerEncoderLayer(
                embed_dim, num_heads, hidden, dropout, batch_first=True, norm_first=True
            )
            self.transformer = nn.TransformerEncoder(
                layer, num_layers, norm=nn.LayerNorm(embed_dim), enable_nested_tensor=False
            )
            self.proj = nn.Linear(embed_dim, out_dim)
        # Created last, so that the other parameters are initialised as without it.
        self.bag_of_words = nn.Linear(embed_dim, out_dim) if bag_of_words else None

    def _lengths(self, tokens: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
        if tokens.dim() != 2 or tokens.dtype not in (torch.int32, torch.int64):
            raise ValueError(f"tokens: expected int64 ids [B, L], got {tokens.dtype} {list(tokens.shape)}")
        if lengths is None:
            # Without lengths, padding is wherever the pad id is (at the end of each row).
            lengths = (tokens != self.pad_id).sum(dim=1).clamp_min(1)
        return check_lengths(lengths, tokens.shape[0], tokens.shape[1], "lengths")

    def _run(
        self, tokens: torch.Tensor, lengths: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """Per-position outputs ``[B, L, D]``, the padding mask, (LSTM) the final states ``[B, D]``
        and the token embeddings ``[B, L, embed_dim]``."""
        lengths = self._lengths(tokens, lengths)
        steps = tokens.shape[1]
        padding_mask = lengths_to_padding_mask(lengths, steps).to(tokens.device)
        embedded = self.embedding(tokens)
        if self.kind == "lstm":
            packed = pack_padded_sequence(embedded, lengths, batch_first=True, enforce_sorted=False)
            outputs, (h_n, _) = self.lstm(packed)
            outputs, _ = pad_packed_sequence(outputs, batch_first=True, total_length=steps)
            final = torch.cat([h_n[-2], h_n[-1]], dim=-1)
            return outputs, padding_mask, final, embedded
        scale = math.sqrt(embedded.shape[-1])
        x = embedded * scale + sinusoidal_positions(steps, embedded.shape[-1], tokens.device)
        outputs = self.transformer(x, src_key_padding_mask=padding_mask)
        return outputs, padding_mask, None, embedded

    def _pooled(
        self,
        outputs: torch.Tensor,
        padding_mask: torch.Tensor,
        final: torch.Tensor | None,
        embedded: torch.Tensor,
        sequence: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The LSTM's projected final states, or the mean of the transformer's projected tokens
        (``sequence``, computed here when None); with ``bag_of_words``, plus the projected mean of
        the token embeddings."""
        if final is not None:
            pooled = self.proj(final)
        else:
            pooled = masked_mean(self.proj(outputs) if sequence is None else sequence, padding_mask)
        if self.bag_of_words is not None:
            pooled = pooled + self.bag_of_words(masked_mean(embedded, padding_mask))
        return pooled

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """``[B, out_dim]`` from ids ``[B, L]`` and int64 ``lengths`` ``[B]`` (default: non-pad count)."""
        return self._pooled(*self._run(tokens, lengths))

    def forward_tokens(
        self, tokens: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Projected per-position outputs ``[B, L, out_dim]`` and the padding mask ``[B, L]``."""
        outputs, padding_mask, _, _ = self._run(tokens, lengths)
        return self.proj(outputs), padding_mask

    def forward_with_tokens(
        self, tokens: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> EncoderOutputs:
        """The pooled ``[B, out_dim]`` (as :meth:`forward`), the token sequence ``[B, L, out_dim]``
        and its padding mask (as :meth:`forward_tokens`), from one pass of the LSTM or Transformer."""
        outputs, padding_mask, final, embedded = self._run(tokens, lengths)
        sequence = self.proj(outputs)
        pooled = self._pooled(outputs, padding_mask, final, embedded, sequence)
        return EncoderOutputs(pooled, sequence, padding_mask)
