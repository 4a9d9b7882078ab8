"""Gated and attention fusion over modality feature vectors.

The fused layers come from issue 3 (``mmfast.nn.gated_fusion.GatedFusion``,
``mmfast.nn.attention_fusion.AttentionFusion``); the reference modules here compute the same in
plain PyTorch (a loop over modalities, ``torch.cat``, ``torch.stack``) with the same parameter
names, so state dicts move between the two.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Sequence

import torch
from torch import nn

from mmfast.ops.fusion_reference import gated_fusion_reference


def import_fusion_layer(module: str, name: str, fusion: str) -> type[nn.Module]:
    """The layer class ``module.name``, or an ImportError naming what is missing for ``fusion``."""
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as error:
        raise ImportError(
            f"fusion={fusion!r} needs the fused layer {module}.{name} (issue 3: attention fusion "
            f"layers), which is not available in this build ({error}); use fusion='concat' or "
            f"'transformer', or reference=True for the plain-PyTorch version"
        ) from error


class ReferenceGatedFusion(nn.Module):
    """Plain-PyTorch gated fusion of M inputs ``[*, dim]`` (parameters as ``GatedFusion``'s).

    ``weight``: ``[dim, 2 * dim]`` for M == 2 (sigmoid gate), ``[M * dim, M * dim]`` for M > 2
    (softmax over modalities per feature); ``bias`` to match.
    """

    def __init__(self, dim: int, num_modalities: int = 2, bias: bool = True) -> None:
        super().__init__()
        if num_modalities < 2:
            raise ValueError(f"num_modalities: expected >= 2, got {num_modalities}")
        self.dim = dim
        self.num_modalities = num_modalities
        rows = dim if num_modalities == 2 else num_modalities * dim
        self.weight = nn.Parameter(torch.empty(rows, num_modalities * dim))
        self.bias = nn.Parameter(torch.empty(rows)) if bias else None
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(num_modalities * dim)
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        return gated_fusion_reference(list(inputs), self.weight, self.bias)


class ReferenceAttentionFusion(nn.Module):
    """Plain-PyTorch modality attention (torchmultimodal's ``AttentionFusionModule``) over inputs
    ``[*, D_m]``: ``w = softmax(score(cat(x)))``, ``out = sum_m w_m * proj_m(x_m)``. Parameters are
    named like ``AttentionFusion``'s (and torchmultimodal's): ``attention.0.*`` and
    ``encoding_projection.<m>.*``, with modalities named ``"0"``, ``"1"``, ... in order."""

    def __init__(self, in_dims: Sequence[int], out_dim: int | None = None) -> None:
        super().__init__()
        self.in_dims = tuple(in_dims)
        self.out_dim = out_dim if out_dim is not None else min(self.in_dims)
        self.attention = nn.Sequential(nn.Linear(sum(self.in_dims), len(self.in_dims)), nn.Softmax(dim=-1))
        self.encoding_projection = nn.ModuleDict(
            {str(i): nn.Linear(d, self.out_dim) for i, d in enumerate(self.in_dims)}
        )

    def forward(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        xs = list(inputs)
        weights = self.attention(torch.cat(xs, dim=-1))
        projected = torch.stack([self.encoding_projection[str(i)](x) for i, x in enumerate(xs)], dim=-2)
        return (weights.unsqueeze(-1) * projected).sum(dim=-2)


class GatedFusionBlock(nn.Module):
    """Gated fusion of the modality features, ``[B, dim]``; all inputs must have size ``dim``."""

    def __init__(self, dim: int, num_modalities: int, reference: bool = False) -> None:
        super().__init__()
        self.out_dim = dim
        if reference:
            self.gate: nn.Module = ReferenceGatedFusion(dim, num_modalities)
        else:
            layer = import_fusion_layer("mmfast.nn.gated_fusion", "GatedFusion", "gated")
            self.gate = layer(dim, num_modalities=num_modalities)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.gate(list(features))


class AttentionFusionBlock(nn.Module):
    """Attention fusion of the modality features into ``[B, out_dim]``."""

    def __init__(self, in_dims: Sequence[int], out_dim: int, reference: bool = False) -> None:
        super().__init__()
        self.out_dim = out_dim
        if reference:
            self.attention: nn.Module = ReferenceAttentionFusion(in_dims, out_dim)
        else:
            layer = import_fusion_layer("mmfast.nn.attention_fusion", "AttentionFusion", "attention")
            self.attention = layer(list(in_dims), out_dim=out_dim)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.attention(list(features))
