"""Cross-modal transformer fusion: modality tokens with modality embeddings and a learned fusion
token, attention with padding masks through ``F.scaled_dot_product_attention``."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mmfast.nn.concat_linear import ConcatLinear
from mmfast.nn.reference import ReferenceConcatLinear, scaled_dot_product_attention_reference


class FusionBlock(nn.Module):
    """Pre-norm transformer block: ``x + attn(ln1(x))``, then ``x + mlp(ln2(x))``.

    The fused path runs attention as ``F.scaled_dot_product_attention`` with a boolean mask and the
    MLP's first layer as a :class:`ConcatLinear` with GELU; ``reference=True`` takes their twins from
    :mod:`mmfast.nn.reference` (the softmax attention spelled out, ``torch.cat`` + linear + GELU),
    with the same parameters.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, dropout: float, reference: bool) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"num_heads: {num_heads} does not divide the fusion width {dim}")
        self.num_heads = num_heads
        self.dropout = dropout
        self.reference = reference
        # A function, not a module: attention has no parameters of its own here (they are qkv, out).
        self.attention_fn = (
            scaled_dot_product_attention_reference if reference else F.scaled_dot_product_attention
        )
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.fc1 = (ReferenceConcatLinear if reference else ConcatLinear)([dim], hidden, activation="gelu")
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, padding_mask: torch.Tensor, first_only: bool = False) -> torch.Tensor:
        """``x`` ``[B, S, dim]``, ``padding_mask`` ``[B, S]`` (True: ignore that key). With
        ``first_only`` only position 0 is updated and returned (``[B, 1, dim]``)."""
        batch, steps, dim = x.shape
        heads = self.num_heads
        q, k, v = self.qkv(self.norm1(x)).view(batch, steps, 3, heads, dim // heads).permute(2, 0, 3, 1, 4)
        if first_only:
            x, q = x[:, :1], q[:, :, :1]
        attend = ~padding_mask[:, None, None, :]  # [B, 1, 1, S], broadcast over heads and queries
        p = self.dropout if self.training else 0.0
        attended = self.attention_fn(q, k, v, attn_mask=attend, dropout_p=p)
        x = x + self.drop(self.out(attended.transpose(1, 2).reshape(batch, -1, dim)))
        hidden = self.norm2(x)
        return x + self.drop(self.fc2(self.drop(self.fc1(hidden))))


class TransformerFusion(nn.Module):
    """Fuses per-modality token sequences into ``[B, dim]``.

    Each modality's tokens are projected to ``dim`` and tagged with a learned modality embedding;
    a learned fusion token is prepended and the sequence goes through ``num_layers`` pre-norm
    blocks whose attention ignores padded (or dropped) tokens. The output is the fusion token
    after a final LayerNorm. A modality may be absent (``None``): its tokens are left out.

    It declares ``consumes_tokens = True``: :class:`mmfast.models.MultimodalClassifier` then hands
    it each encoder's ``forward_tokens`` (tokens and padding masks) instead of pooled vectors.
    """

    consumes_tokens = True

    def __init__(
        self,
        in_dims: Sequence[int],
        dim: int,
        num_heads: int = 4,
        num_layers: int = 1,
        mlp_ratio: float = 2.0,
        dropout: float = 0.1,
        reference: bool = False,
    ) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers: expected >= 1, got {num_layers}")
        self.out_dim = dim
        self.projections = nn.ModuleList(nn.Linear(d, dim) for d in in_dims)
        self.modality_embedding = nn.Parameter(torch.randn(len(self.projections), dim) * 0.02)
        self.fusion_token = nn.Parameter(torch.randn(dim) * 0.02)
        self.blocks = nn.ModuleList(
            FusionBlock(dim, num_heads, mlp_ratio, dropout, reference) for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(dim)

    def forward(
        self,
        tokens: Sequence[torch.Tensor | None],
        padding_masks: Sequence[torch.Tensor | None],
    ) -> torch.Tensor:
        """``tokens[m]``: ``[B, S_m, d_m]`` or None (absent); ``padding_masks[m]``: ``[B, S_m]`` bool
        (True at padding) or None (all valid). Returns ``[B, dim]``."""
        present = [i for i, t in enumerate(tokens) if t is not None]
        if not present:
            raise ValueError("tokens: expected at least one modality present, got none")
        first = tokens[present[0]]
        batch = first.shape[0]
        fusion = self.fusion_token.expand(batch, 1, -1)
        sequence = [fusion]
        masks = [torch.zeros(batch, 1, dtype=torch.bool, device=first.device)]
        for i in present:
            sequence.append(self.projections[i](tokens[i]) + self.modality_embedding[i])
            mask = padding_masks[i]
            if mask is None:
                mask = torch.zeros(tokens[i].shape[:2], dtype=torch.bool, device=first.device)
            masks.append(mask)
        x = torch.cat(sequence, dim=1)
        padding_mask = torch.cat(masks, dim=1)
        for index, block in enumerate(self.blocks):
            x = block(x, padding_mask, first_only=index == len(self.blocks) - 1)
        return self.norm(x[:, 0])
