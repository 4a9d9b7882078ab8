"""Plain-PyTorch twins of the fused layers, for output-for-output comparison and timing.

Each twin is its fused layer (a subclass: same parameters, names, initialisation, inputs and
errors) whose ``forward`` computes the result the way eager models write it: ``torch.cat`` then
``nn.Linear``-style GEMMs, a loop over the modalities, ``torch.stack``. State dicts therefore load
strictly from one into the other, and a model built from twins (``reference=True`` in
:func:`mmfast.models.build_classifier`) is the fused model with the fused ops taken out.

- :class:`ReferenceConcatLinear` mirrors :class:`mmfast.nn.ConcatLinear`;
- :class:`ReferenceGatedFusion` mirrors :class:`mmfast.nn.GatedFusion`;
- :class:`ReferenceAttentionFusion` mirrors :class:`mmfast.nn.AttentionFusion`;
- :class:`ReferenceFiLM` mirrors :class:`mmfast.nn.FiLM`;
- :func:`scaled_dot_product_attention_reference` spells out the softmax attention that
  ``F.scaled_dot_product_attention`` fuses (the transformer fusion of ``mmfast.models``).

The op definitions come from the public :mod:`mmfast.ops` namespace only.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from mmfast.nn._modality_inputs import ModalityInputs, check_feature_dims
from mmfast.nn.attention_fusion import AttentionFusion
from mmfast.nn.concat_linear import ConcatLinear
from mmfast.nn.film import FiLM
from mmfast.nn.gated_fusion import GatedFusion
from mmfast.ops import concat_linear_reference, film_reference, gated_fusion_reference

__all__ = [
    "ReferenceAttentionFusion",
    "ReferenceConcatLinear",
    "ReferenceFiLM",
    "ReferenceGatedFusion",
    "scaled_dot_product_attention_reference",
]


class ReferenceConcatLinear(ConcatLinear):
    """``ConcatLinear`` computed in plain PyTorch: ``act(F.linear(torch.cat(xs, -1), weight, bias))``.

    Its state dict is that of ``ConcatLinear`` (and so of ``nn.Linear``): ``weight``, ``bias``.
    """

    def forward(self, *inputs: torch.Tensor | ModalityInputs) -> torch.Tensor:
        """``forward(x1, x2, ...)``, ``forward([x1, x2, ...])`` or ``forward({name: x, ...})``, read
        and checked as by ``ConcatLinear``; returns ``[*, out_features]``."""
        return concat_linear_reference(self._ordered(inputs), self.weight, self.bias, self.activation)


class ReferenceFiLM(FiLM):
    """``FiLM`` computed in plain PyTorch: ``F.linear`` of the condition, ``chunk`` into gamma and
    beta, and the broadcast multiply-add (the way eager FiLM blocks write it)."""

    def forward(self, features: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        """Modulates ``features [B, C, *spatial]`` by ``condition [B, K]``."""
        return film_reference(features, condition, self.weight, self.bias)


class ReferenceGatedFusion(GatedFusion):
    """``GatedFusion`` computed in plain PyTorch: a gate GEMM over ``torch.cat`` of the inputs, then
    a sigmoid blend (M == 2) or a per-feature softmax over ``torch.stack`` of them (M > 2)."""

    def forward(self, inputs: ModalityInputs) -> torch.Tensor:
        """Fuses M tensors ``[*, dim]`` (a list, or a dict in sorted key order) into ``[*, dim]``."""
        tensors = self._ordered(inputs)
        check_feature_dims(inputs, tensors, [self.dim] * self.num_modalities, self.modalities)
        return gated_fusion_reference(tensors, self.weight, self.bias)


class ReferenceAttentionFusion(AttentionFusion):
    """``AttentionFusion`` computed as torchmultimodal's ``AttentionFusionModule`` does: the score
    ``Linear`` + ``Softmax`` (``self.attention``) over ``torch.cat`` of the inputs, each modality's
    ``Linear`` projection in a loop, ``torch.stack`` and a weighted sum."""

    def forward(
        self, inputs: ModalityInputs, return_weights: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Fuses M tensors ``[*, D_m]`` into ``[*, out_dim]`` (and the weights ``[*, M]``)."""
        tensors = self._ordered(inputs)
        check_feature_dims(inputs, tensors, self.in_dims, self.modalities)
        # The sub-modules are called here (unlike in the fused layer, which only reads their
        # parameters): this is the computation torchmultimodal's module runs.
        weights = self.attention(torch.cat(tensors, dim=-1))
        projected = torch.stack(
            [self.encoding_projection[m](x) for m, x in zip(self.modalities, tensors)], dim=-2
        )
        out = (weights.unsqueeze(-1) * projected).sum(dim=-2)
        return (out, weights) if return_weights else out


def scaled_dot_product_attention_reference(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """``F.scaled_dot_product_attention`` written out: ``dropout(softmax(q k^T / sqrt(d))) v``.

    Args:
        query, key, value: ``[*, L, d]``, ``[*, S, d]``, ``[*, S, d_v]``.
        attn_mask: boolean, broadcastable to ``[*, L, S]``; True where a query may attend a key.
        dropout_p: dropout probability on the attention weights (pass 0 outside training, as
            with ``F.scaled_dot_product_attention``).
    """
    scores = (query @ key.transpose(-2, -1)) / math.sqrt(query.shape[-1])
    if attn_mask is not None:
        scores = scores.masked_fill(~attn_mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    if dropout_p > 0.0:
        weights = F.dropout(weights, dropout_p)
    return weights @ value
