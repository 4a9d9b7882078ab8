"""Concatenation fusion: ``relu(Linear(cat(features)))``, fused by ``ConcatLinear``."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from mmfast.nn.concat_linear import ConcatLinear
from mmfast.nn.reference import ReferenceConcatLinear


class ConcatFusion(nn.Module):
    """``relu(cat(features, -1) @ proj.weight.T + proj.bias)``, ``[B, out_dim]``.

    ``proj`` is a :class:`mmfast.nn.ConcatLinear` (the concatenation is never built), or with
    ``reference=True`` its twin :class:`mmfast.nn.reference.ReferenceConcatLinear` (``torch.cat``
    then a linear layer); both have the parameters of ``nn.Linear(sum(in_dims), out_dim)``.
    """

    def __init__(self, in_dims: Sequence[int], out_dim: int, reference: bool = False) -> None:
        super().__init__()
        self.in_dims = tuple(in_dims)
        self.out_dim = out_dim
        self.reference = reference
        layer = ReferenceConcatLinear if reference else ConcatLinear
        self.proj = layer(self.in_dims, out_dim, activation="relu")

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """``features``: one ``[B, D_m]`` tensor per modality, in the classifier's order."""
        return self.proj(list(features))
