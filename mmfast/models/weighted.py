"""Gated and attention fusion over modality feature vectors, as classifier fusion modules.

The layers are ``mmfast.nn.GatedFusion`` and ``mmfast.nn.AttentionFusion``, or with
``reference=True`` their plain-PyTorch twins from :mod:`mmfast.nn.reference` (same state dict).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from mmfast.nn import reference as _reference
from mmfast.nn.attention_fusion import AttentionFusion
from mmfast.nn.gated_fusion import GatedFusion

# The reference twins used to be defined here; they live in mmfast.nn.reference now.
_MOVED = {"ReferenceGatedFusion", "ReferenceAttentionFusion"}


def __getattr__(name: str) -> Any:
    # Old import path, kept for one release: `from mmfast.models.weighted import ReferenceGatedFusion`.
    if name in _MOVED:
        warnings.warn(
            f"mmfast.models.weighted.{name} is deprecated; import it from mmfast.nn.reference",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(_reference, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class GatedFusionBlock(nn.Module):
    """Gated fusion of the modality features, ``[B, dim]``; all inputs must have size ``dim``.

    Args:
        dim: size of every modality's features and of the output.
        num_modalities: number of inputs (at least 2).
        reference: use :class:`mmfast.nn.reference.ReferenceGatedFusion` (same parameters).
    """

    def __init__(self, dim: int, num_modalities: int, reference: bool = False) -> None:
        super().__init__()
        self.out_dim = dim
        layer = _reference.ReferenceGatedFusion if reference else GatedFusion
        self.gate = layer(dim, num_modalities=num_modalities)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """``features``: one ``[B, dim]`` tensor per modality, in the classifier's order."""
        return self.gate(list(features))


class AttentionFusionBlock(nn.Module):
    """Attention fusion of the modality features into ``[B, out_dim]``.

    Args:
        in_dims: feature size of each modality, in the classifier's order.
        out_dim: output size.
        reference: use :class:`mmfast.nn.reference.ReferenceAttentionFusion` (same parameters).
    """

    def __init__(self, in_dims: Sequence[int], out_dim: int, reference: bool = False) -> None:
        super().__init__()
        self.out_dim = out_dim
        layer = _reference.ReferenceAttentionFusion if reference else AttentionFusion
        self.attention = layer(list(in_dims), out_dim=out_dim)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """``features``: one ``[B, D_m]`` tensor per modality, in the classifier's order."""
        return self.attention(list(features))
