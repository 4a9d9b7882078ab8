"""The fusion modules and heads of :class:`mmfast.models.MultimodalClassifier`, built by name.

A fusion module takes one feature tensor ``[B, D_m]`` per modality (a list, in the classifier's
sorted modality order) and returns ``[B, out_dim]``; one that declares ``consumes_tokens = True``
(:class:`~mmfast.models.TransformerFusion`) takes ``(tokens, padding_masks)`` instead. Every fusion
built here has an ``out_dim`` attribute, the input size of its head.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import nn

from mmfast.models.concat import ConcatFusion
from mmfast.models.transformer import TransformerFusion
from mmfast.models.weighted import AttentionFusionBlock, GatedFusionBlock

FUSIONS: tuple[str, ...] = ("concat", "gated", "attention", "transformer")


def build_fusion(
    kind: str,
    in_dims: Mapping[str, int] | Sequence[int],
    hidden: int = 128,
    *,
    reference: bool = False,
    dropout: float = 0.1,
    num_heads: int = 4,
    num_layers: int = 1,
) -> nn.Module:
    """The fusion module called ``kind`` over modalities of sizes ``in_dims``.

    Args:
        kind: ``"concat"`` (``ConcatLinear`` + ReLU), ``"gated"`` (``GatedFusion``; at least two
            modalities of equal size, its output is that size), ``"attention"`` (``AttentionFusion``,
            at least two) or ``"transformer"`` (cross-modal transformer over the encoders' tokens).
        in_dims: feature size per modality, as modality name -> size (taken in sorted name order,
            the classifier's) or a sequence in that order.
        hidden: width of the fused representation (but for ``"gated"``).
        reference: build it from the plain-PyTorch twins of :mod:`mmfast.nn.reference` (same
            parameter names), for output-for-output comparison and timing.
        dropout: inside the transformer fusion.
        num_heads, num_layers: of the transformer fusion.
    """
    if kind not in FUSIONS:
        raise ValueError(f"fusion: expected one of {', '.join(FUSIONS)}, got {kind!r}")
    if isinstance(in_dims, Mapping):
        names = sorted(in_dims)
        dims = [int(in_dims[m]) for m in names]
    else:
        dims = [int(d) for d in in_dims]
        names = [str(i) for i in range(len(dims))]
    if not dims:
        raise ValueError("in_dims: expected at least one modality")
    if kind in ("gated", "attention") and len(dims) < 2:
        raise ValueError(f"fusion={kind!r}: needs at least two modalities, got {names}")
    if kind == "concat":
        return ConcatFusion(dims, hidden, reference)
    if kind == "gated":
        if len(set(dims)) != 1:
            raise ValueError(
                f"fusion='gated': needs modalities of equal feature size, got {dict(zip(names, dims))}"
            )
        return GatedFusionBlock(dims[0], len(dims), reference)
    if kind == "attention":
        return AttentionFusionBlock(dims, hidden, reference)
    return TransformerFusion(dims, hidden, num_heads, num_layers, dropout=dropout, reference=reference)


def build_head(in_dim: int, num_classes: int, dropout: float = 0.1) -> nn.Sequential:
    """The classification head: dropout, then ``nn.Linear(in_dim, num_classes)`` (logits)."""
    if num_classes < 2:
        raise ValueError(f"num_classes: expected >= 2, got {num_classes}")
    return nn.Sequential(nn.Dropout(dropout), nn.Linear(in_dim, num_classes))
