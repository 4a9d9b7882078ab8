"""Pure-PyTorch definitions of the modality fusions (gated and attention fusion).

They are written the way eager models write them (a loop over modalities, `torch.cat`,
`torch.stack`), and they define what the fused ops compute.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def gated_fusion_reference(
    inputs: Sequence[torch.Tensor], weight: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """Gated fusion of M >= 2 inputs of shape ``[*, D]``; returns ``[*, D]``.

    M == 2: ``g = sigmoid(cat(x1, x2) @ W.T + b)`` with W ``[D, 2D]``; ``out = g * x1 + (1 - g) * x2``.
    M > 2: ``logits = cat(x) @ W.T + b`` with W ``[M*D, M*D]``, viewed ``[*, M, D]``;
    ``a = softmax(logits, dim=M)`` per feature; ``out = sum_m a_m * x_m``.
    """
    xs = list(inputs)
    logits = F.linear(torch.cat(xs, dim=-1), weight, bias)
    if len(xs) == 2:
        gate = torch.sigmoid(logits)
        return gate * xs[0] + (1 - gate) * xs[1]
    dim = xs[0].shape[-1]
    weights = torch.softmax(logits.unflatten(-1, (len(xs), dim)), dim=-2)
    return (weights * torch.stack(xs, dim=-2)).sum(dim=-2)


def attention_fusion_reference(
    inputs: Sequence[torch.Tensor],
    proj_weights: Sequence[torch.Tensor],
    proj_biases: Sequence[torch.Tensor] | None,
    score_weight: torch.Tensor,
    score_bias: torch.Tensor | None = None,
    return_weights: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Attention over modalities (torchmultimodal's ``AttentionFusionModule``), any leading dims.

    ``s = cat(x) @ score_weight.T + score_bias`` (``[*, M]``); ``w = softmax(s, -1)``;
    ``out = sum_m w[..., m] * (x_m @ P_m.T + p_m)`` (``[*, D_out]``). With ``return_weights`` also
    returns ``w``.
    """
    xs = list(inputs)
    weights = torch.softmax(F.linear(torch.cat(xs, dim=-1), score_weight, score_bias), dim=-1)
    biases = list(proj_biases) if proj_biases is not None else [None] * len(xs)
    projected = torch.stack([F.linear(x, p, b) for x, p, b in zip(xs, proj_weights, biases)], dim=-2)
    out = (weights.unsqueeze(-1) * projected).sum(dim=-2)
    return (out, weights) if return_weights else out
