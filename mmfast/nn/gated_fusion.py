"""`GatedFusion`: learned gating between M modality features of one size, fused."""

from __future__ import annotations

import math

import torch
from torch import nn

from mmfast.nn._modality_inputs import ModalityInputs, check_feature_dims, ordered_inputs
from mmfast.ops._validation import MAX_FUSION_INPUTS
from mmfast.ops.gated_fusion import gated_fusion


class GatedFusion(nn.Module):
    """Gated fusion of ``num_modalities`` inputs of shape ``[*, dim]`` into ``[*, dim]``.

    - Two inputs: ``g = sigmoid(cat(x1, x2) @ weight.T + bias)``, ``out = g * x1 + (1 - g) * x2``;
      ``weight`` is ``[dim, 2 * dim]``.
    - M > 2 inputs: ``logits = cat(x_1..x_M) @ weight.T + bias`` viewed ``[*, M, dim]``, a softmax over
      the modalities for each feature, ``out = sum_m a_m * x_m``; ``weight`` is ``[M * dim, M * dim]``.

    The gate is an ``nn.Linear`` over the concatenation in all but name (same parameter shapes and
    initialisation); the op never builds the concatenation: one GEMM over the inputs in place, then
    the sigmoid / softmax and the blend in one pass. ``mmfast.models.weighted.ReferenceGatedFusion``
    is the same layer in plain PyTorch, with the same state dict.

    Args:
        dim: feature size of every input and of the output.
        num_modalities: number of inputs M (at least 2).
        bias: whether the gate has a bias.
        device: device of the parameters.
        dtype: dtype of the parameters.

    Example:
        >>> fusion = GatedFusion(256, num_modalities=3)
        >>> fused = fusion({"audio": a, "image": i, "text": t})  # sorted by name: audio, image, text
    """

    def __init__(
        self,
        dim: int,
        num_modalities: int = 2,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if dim <= 0:
            raise ValueError(f"dim: expected a positive size, got {dim}")
        if not 2 <= num_modalities <= MAX_FUSION_INPUTS:
            raise ValueError(
                f"num_modalities: expected 2 to {MAX_FUSION_INPUTS} (the op's limit), got {num_modalities}"
            )
        self.dim = int(dim)
        self.num_modalities = int(num_modalities)
        logits = dim if num_modalities == 2 else num_modalities * dim
        factory = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.empty(logits, num_modalities * dim, **factory))
        if bias:
            self.bias = nn.Parameter(torch.empty(logits, **factory))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The initialisation of ``nn.Linear(num_modalities * dim, logits)``."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.weight.shape[1])
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, inputs: ModalityInputs) -> torch.Tensor:
        """Fuses a list of M tensors ``[*, dim]`` with the same leading dims (or a dict of them, in
        sorted key order) into ``[*, dim]``."""
        tensors = self._ordered(inputs)
        try:
            return gated_fusion(tensors, self.weight, self.bias)
        except (ValueError, RuntimeError):
            check_feature_dims(inputs, tensors, [self.dim] * self.num_modalities)
            raise

    def _ordered(self, inputs: ModalityInputs) -> list[torch.Tensor]:
        """The M input tensors in fusion order (a dict in sorted key order)."""
        return ordered_inputs(inputs, self.num_modalities)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_modalities={self.num_modalities}, bias={self.bias is not None}"
