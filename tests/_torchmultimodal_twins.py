"""torchmultimodal's fusion modules and late-fusion model, rewritten in plain PyTorch for the tests
(torchmultimodal is not a dependency): the same constructor arguments, parameter names, state dict
keys and forward computation as ``torchmultimodal.modules.fusions`` and
``torchmultimodal.models.late_fusion``, so that a test can check that mmfast's layers are drop-ins
for them."""

from __future__ import annotations

import torch
from torch import nn


class ConcatFusionModule(nn.Module):
    """Concatenates a dict of modality tensors in sorted key order, then applies ``projection``
    (the identity when none is given)."""

    def __init__(self, projection: nn.Module | None = None) -> None:
        super().__init__()
        self.projection = projection if projection is not None else nn.Identity()

    def forward(self, embeddings: dict[str, torch.Tensor]) -> torch.Tensor:
        joined = torch.cat([embeddings[name] for name in sorted(embeddings)], dim=-1)
        return self.projection(joined)


class AttentionFusionModule(nn.Module):
    """Softmax-scored ``Linear`` over the sorted-key concatenation, one ``Linear`` projection per
    channel (to ``encoding_projection_dim``, default the smallest channel size), and the weighted
    sum of the projections. Inputs are ``[B, D_channel]``, as torchmultimodal indexes the weights
    by column."""

    def __init__(
        self, channel_to_encoder_dim: dict[str, int], encoding_projection_dim: int | None = None
    ) -> None:
        super().__init__()
        total = sum(channel_to_encoder_dim.values())
        self.attention = nn.Sequential(nn.Linear(total, len(channel_to_encoder_dim)), nn.Softmax(-1))
        if encoding_projection_dim is None:
            encoding_projection_dim = min(channel_to_encoder_dim.values())
        self.encoding_projection = nn.ModuleDict(
            {
                name: nn.Linear(channel_to_encoder_dim[name], encoding_projection_dim)
                for name in sorted(channel_to_encoder_dim)
            }
        )

    def forward(self, embeddings: dict[str, torch.Tensor]) -> torch.Tensor:
        weights = self.attention(torch.cat([embeddings[name] for name in sorted(embeddings)], dim=-1))
        weighted = [
            weights[:, i].unsqueeze(-1) * projection(embeddings[name])
            for i, (name, projection) in enumerate(self.encoding_projection.items())
        ]
        return torch.stack(weighted).sum(dim=0)


class LateFusion(nn.Module):
    """One encoder per modality (kept in sorted name order), a fusion module over the dict of their
    outputs, and a head."""

    def __init__(self, encoders: nn.ModuleDict, fusion_module: nn.Module, head_module: nn.Module) -> None:
        super().__init__()
        self.encoders = nn.ModuleDict({name: encoders[name] for name in sorted(encoders)})
        self.fusion_module = fusion_module
        self.head_module = head_module

    def forward(self, modalities: dict[str, torch.Tensor]) -> torch.Tensor:
        embeddings = {name: encoder(modalities[name]) for name, encoder in self.encoders.items()}
        return self.head_module(self.fusion_module(embeddings))
