"""`FiLM`: feature-wise linear modulation of a feature map by a condition (Perez et al., 2018), the
fused form of the usual FiLM generator ``nn.Linear(cond_dim, 2 * channels)`` followed by
``features * (1 + gamma) + beta``."""

from __future__ import annotations

import math

import torch
from torch import nn

from mmfast.ops import film

__all__ = ["FiLM"]


class FiLM(nn.Module):
    """``features * (1 + gamma) + beta``, ``(gamma, beta) = split(Linear(cond_dim, 2C)(condition))``.

    A drop-in for a FiLM block written with an ``nn.Linear(cond_dim, 2 * channels)`` generator:
    the state dict is that linear layer's (``weight [2C, K]``, gamma's rows first; ``bias [2C]``),
    so checkpoints load either way. The ``1 + gamma`` form starts as the identity when the generator
    outputs zeros (as FiLM-ed networks such as FiLM's CLEVR model use it).

    Args:
        channels: C, the channel dim (dim 1) of the feature maps.
        cond_dim: K, the size of the condition vectors.
        bias: whether the generator has a bias.

    Shape:
        features ``[B, C, *spatial]`` (any number of spatial dims, none included), condition
        ``[B, K]``; output like ``features``.
    """

    def __init__(
        self,
        channels: int,
        cond_dim: int,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if channels < 1 or cond_dim < 1:
            raise ValueError(f"FiLM: expected channels and cond_dim >= 1, got {channels} and {cond_dim}")
        self.channels = channels
        self.cond_dim = cond_dim
        factory = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.empty(2 * channels, cond_dim, **factory))
        self.bias = nn.Parameter(torch.empty(2 * channels, **factory)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """nn.Linear's initialisation, so a model built either way starts from the same values."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.cond_dim)
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, features: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        """Modulates ``features [B, C, *spatial]`` by ``condition [B, K]``."""
        return film(features, condition, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, cond_dim={self.cond_dim}, bias={self.bias is not None}"
