"""Gated and attention fusion over modality feature vectors, fused or in plain PyTorch.

The fused layers are ``mmfast.nn.GatedFusion`` and ``mmfast.nn.AttentionFusion``. Their reference
twins here are the same modules (same parameters, initialisation, inputs and errors) whose forward
computes the fusion the way eager models write it (``torch.cat``, a loop over modalities,
``torch.stack``), so state dicts move between the two and outputs compare one for one.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from mmfast.nn._modality_inputs import ModalityInputs, check_feature_dims
from mmfast.nn.attention_fusion import AttentionFusion
from mmfast.nn.gated_fusion import GatedFusion
from mmfast.ops.fusion_reference import gated_fusion_reference


class ReferenceGatedFusion(GatedFusion):
    """``GatedFusion`` computed in plain PyTorch: a gate GEMM over ``torch.cat`` of the inputs, then
    a sigmoid blend (M == 2) or a per-feature softmax over ``torch.stack`` of them (M > 2)."""

    def forward(self, inputs: ModalityInputs) -> torch.Tensor:
        tensors = self._ordered(inputs)
        check_feature_dims(inputs, tensors, [self.dim] * self.num_modalities)
        return gated_fusion_reference(tensors, self.weight, self.bias)


class ReferenceAttentionFusion(AttentionFusion):
    """``AttentionFusion`` computed as torchmultimodal's ``AttentionFusionModule`` does: the score
    ``Linear`` + ``Softmax`` (``self.attention``) over ``torch.cat`` of the inputs, each modality's
    ``Linear`` projection in a loop, ``torch.stack`` and a weighted sum."""

    def forward(
        self, inputs: ModalityInputs, return_weights: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        tensors = self._ordered(inputs)
        check_feature_dims(inputs, tensors, self.in_dims, self.modalities)
        weights = self.attention(torch.cat(tensors, dim=-1))
        projected = torch.stack(
            [self.encoding_projection[m](x) for m, x in zip(self.modalities, tensors)], dim=-2
        )
        out = (weights.unsqueeze(-1) * projected).sum(dim=-2)
        return (out, weights) if return_weights else out


class GatedFusionBlock(nn.Module):
    """Gated fusion of the modality features, ``[B, dim]``; all inputs must have size ``dim``."""

    def __init__(self, dim: int, num_modalities: int, reference: bool = False) -> None:
        super().__init__()
        self.out_dim = dim
        layer = ReferenceGatedFusion if reference else GatedFusion
        self.gate = layer(dim, num_modalities=num_modalities)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.gate(list(features))


class AttentionFusionBlock(nn.Module):
    """Attention fusion of the modality features into ``[B, out_dim]``."""

    def __init__(self, in_dims: Sequence[int], out_dim: int, reference: bool = False) -> None:
        super().__init__()
        self.out_dim = out_dim
        layer = ReferenceAttentionFusion if reference else AttentionFusion
        self.attention = layer(list(in_dims), out_dim=out_dim)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.attention(list(features))
