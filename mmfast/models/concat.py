"""Concatenation fusion: ``relu(Linear(cat(features)))``, fused by ``ConcatLinear``."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from mmfast.nn.concat_linear import ConcatLinear


class ConcatFusion(nn.Module):
    """``relu(cat(features, -1) @ proj.weight.T + proj.bias)``, ``[B, out_dim]``.

    ``proj`` is a :class:`mmfast.nn.ConcatLinear` (the concatenation is never built), or with
    ``reference=True`` an ``nn.Linear`` after ``torch.cat``; both have the same parameters.
    """

    def __init__(self, in_dims: Sequence[int], out_dim: int, reference: bool = False) -> None:
        super().__init__()
        self.in_dims = tuple(in_dims)
        self.out_dim = out_dim
        self.reference = reference
        if reference:
            self.proj: nn.Module = nn.Linear(sum(self.in_dims), out_dim)
        else:
            self.proj = ConcatLinear(self.in_dims, out_dim, activation="relu")

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        if self.reference:
            return torch.relu(self.proj(torch.cat(list(features), dim=-1)))
        return self.proj(list(features))
