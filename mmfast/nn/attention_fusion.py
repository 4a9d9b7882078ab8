"""`AttentionFusion`: attention over modalities (torchmultimodal's ``AttentionFusionModule``),
fused, for inputs with any leading dims."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypeVar

import torch
from torch import nn

from mmfast.nn._modality_inputs import ModalityInputs, NotScriptable, check_feature_dims, ordered_inputs
from mmfast.ops import input_limits
from mmfast.ops.attention_fusion import attention_fusion

_T = TypeVar("_T")


class AttentionFusion(NotScriptable, nn.Module):
    """Weighs M modality features ``x_m [*, D_m]`` by attention and sums their projections.

    ``w = softmax(cat(x_1..x_M) @ S.T + s)`` (``[*, M]``), ``out = sum_m w_m * (x_m @ P_m.T + p_m)``
    (``[*, out_dim]``), with the modalities in sorted name order.

    Its state dict is that of torchmultimodal's ``AttentionFusionModule`` (``attention.0.weight`` /
    ``.bias`` for the scores, ``encoding_projection.<name>.weight`` / ``.bias`` per modality), so
    weights trained with one load into the other; its constructor also takes torchmultimodal's
    argument names, ``AttentionFusion(channel_to_encoder_dim=..., encoding_projection_dim=...)``.
    The sub-modules only hold the parameters (their ``forward`` and hooks are never called;
    replacing them by wrappers changes nothing): the fused op does the work (the score GEMM reads
    the inputs in place, the projections go straight into the weighted sum: no concatenation, no
    stack of projections).
    ``mmfast.nn.reference.ReferenceAttentionFusion`` is the same layer computed the
    torchmultimodal way, with the same state dict.

    Args:
        in_dims: the feature size of each modality, as a mapping name -> size, or a sequence (the
            modalities are then named ``"0"``, ``"1"``, ... and keep the sequence's order).
        out_dim: output size; defaults to the smallest input size, like torchmultimodal.
        device: device of the parameters.
        dtype: dtype of the parameters.
        channel_to_encoder_dim: torchmultimodal's name for ``in_dims`` (give one of the two).
        encoding_projection_dim: torchmultimodal's name for ``out_dim`` (give at most one).

    TorchScript is not supported (``torch.jit.script`` raises); ``torch.export.export`` and
    ``torch.compile`` are.

    Example:
        >>> fusion = AttentionFusion({"image": 512, "text": 768})
        >>> out, weights = fusion({"image": i, "text": t}, return_weights=True)
    """

    def __init__(
        self,
        in_dims: Sequence[int] | Mapping[str, int] | None = None,
        out_dim: int | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        channel_to_encoder_dim: Mapping[str, int] | None = None,
        encoding_projection_dim: int | None = None,
    ) -> None:
        super().__init__()
        in_dims = _one_of("in_dims", in_dims, "channel_to_encoder_dim", channel_to_encoder_dim)
        out_dim = _one_of("out_dim", out_dim, "encoding_projection_dim", encoding_projection_dim)
        if in_dims is None:
            raise TypeError(
                "AttentionFusion: expected the modality sizes, in_dims (or channel_to_encoder_dim)"
            )
        if not isinstance(in_dims, (Mapping, Sequence)) or isinstance(in_dims, str):
            raise TypeError(
                f"in_dims: expected a sequence of sizes or a dict name -> size, got {type(in_dims).__name__}"
            )
        if isinstance(in_dims, Mapping):
            self._named = True
            dims = {str(name): int(size) for name, size in in_dims.items()}
        else:
            self._named = False
            dims = {str(i): int(size) for i, size in enumerate(in_dims)}
        shown = dict(in_dims) if self._named else list(in_dims)
        if not dims or any(size <= 0 for size in dims.values()):
            raise ValueError(f"in_dims: expected one or more positive sizes, got {shown}")
        _, most = input_limits("attention_fusion")
        if most is not None and len(dims) > most:
            raise ValueError(f"in_dims: the op fuses at most {most} modalities, got {len(dims)}")
        self.modalities: tuple[str, ...] = tuple(sorted(dims)) if self._named else tuple(dims)
        self.in_dims: tuple[int, ...] = tuple(dims[m] for m in self.modalities)
        self.out_dim = int(out_dim) if out_dim is not None else min(self.in_dims)
        if self.out_dim <= 0:
            raise ValueError(f"out_dim: expected a positive size, got {out_dim}")
        factory = {"device": device, "dtype": dtype}
        self.attention = nn.Sequential(
            nn.Linear(sum(self.in_dims), len(self.in_dims), **factory), nn.Softmax(dim=-1)
        )
        self.encoding_projection = nn.ModuleDict(
            {m: nn.Linear(d, self.out_dim, **factory) for m, d in zip(self.modalities, self.in_dims)}
        )

    def forward(
        self, inputs: ModalityInputs, return_weights: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Fuses M tensors ``[*, D_m]`` with the same leading dims into ``[*, out_dim]``.

        Args:
            inputs: a list in the layer's modality order, or a dict name -> tensor (with named
                ``in_dims`` its keys must be exactly those names, read in sorted order; a layer
                built from a list reads the keys ``"0"``, ``"1"``, ... in its own order, and
                other keys in sorted order).
            return_weights: also return the attention weights ``[*, M]`` (differentiable).
        """
        tensors = self._ordered(inputs)
        # The ModuleDict holds the projections in modality order. Iterating the containers costs far
        # less than indexing them (a microsecond per index), which shows at batch 1.
        projections = list(self.encoding_projection.values())
        score = next(iter(self.attention))
        try:
            return attention_fusion(
                tensors,
                [p.weight for p in projections],
                [p.bias for p in projections],
                score.weight,
                score.bias,
                return_weights=return_weights,
            )
        except (ValueError, RuntimeError):
            check_feature_dims(inputs, tensors, self.in_dims, self.modalities)
            raise

    def _ordered(self, inputs: ModalityInputs) -> list[torch.Tensor]:
        """The M input tensors in the layer's modality order."""
        return ordered_inputs(inputs, len(self.in_dims), self.modalities, names_required=self._named)

    def extra_repr(self) -> str:
        dims = dict(zip(self.modalities, self.in_dims)) if self._named else list(self.in_dims)
        return f"in_dims={dims}, out_dim={self.out_dim}"


def _one_of(name: str, value: _T | None, alias: str, alias_value: _T | None) -> _T | None:
    """The value of an argument that also has torchmultimodal's name ``alias``, given under either
    name; both at once is a TypeError, as Python's for an argument given twice."""
    if value is not None and alias_value is not None:
        raise TypeError(f"AttentionFusion: got both {name} and {alias} (torchmultimodal's name for it)")
    return alias_value if value is None else value
