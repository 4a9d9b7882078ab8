"""`GatedFusion`: learned gating between M modality features of one size, fused."""

from __future__ import annotations

import math

import torch
from torch import nn

from mmfast.nn._modality_inputs import ModalityInputs, NotScriptable, check_feature_dims, ordered_inputs
from mmfast.ops import input_limits
from mmfast.ops.gated_fusion import gated_fusion


class GatedFusion(NotScriptable, nn.Module):
    """Gated fusion of ``num_modalities`` inputs of shape ``[*, dim]`` into ``[*, dim]``.

    - Two inputs: ``g = sigmoid(cat(x1, x2) @ weight.T + bias)``, ``out = g * x1 + (1 - g) * x2``;
      ``weight`` is ``[dim, 2 * dim]``.
    - M > 2 inputs: ``logits = cat(x_1..x_M) @ weight.T + bias`` viewed ``[*, M, dim]``, a softmax over
      the modalities for each feature, ``out = sum_m a_m * x_m``; ``weight`` is ``[M * dim, M * dim]``.

    The gate is an ``nn.Linear`` over the concatenation in all but name (same parameter shapes and
    initialisation); the op never builds the concatenation: one GEMM over the inputs in place, then
    the sigmoid / softmax and the blend in one pass. ``mmfast.nn.reference.ReferenceGatedFusion``
    is the same layer in plain PyTorch, with the same state dict.

    The inputs are a list, or a dict name -> tensor read in sorted key order (as torchmultimodal's
    fusion modules read theirs; torchmultimodal has no gated fusion). TorchScript is not supported
    (``torch.jit.script`` raises); ``torch.export.export`` and ``torch.compile`` are.

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
        fewest, most = input_limits("gated_fusion")
        if num_modalities < fewest or (most is not None and num_modalities > most):
            expected = f"{fewest} to {most}" if most is not None else f"at least {fewest}"
            raise ValueError(f"num_modalities: expected {expected} (the op's limit), got {num_modalities}")
        self.dim = int(dim)
        self.num_modalities = int(num_modalities)
        # The names a dict input may use to mean "in list order" (see `mapping_order`): "0", "1", ...
        self.modalities: tuple[str, ...] = tuple(str(i) for i in range(self.num_modalities))
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
        sorted key order; the keys ``"0"``, ``"1"``, ... in numeric order) into ``[*, dim]``."""
        tensors = self._ordered(inputs)
        try:
            return gated_fusion(tensors, self.weight, self.bias)
        except (ValueError, RuntimeError):
            check_feature_dims(inputs, tensors, [self.dim] * self.num_modalities, self.modalities)
            raise

    def _ordered(self, inputs: ModalityInputs) -> list[torch.Tensor]:
        """The M input tensors in fusion order (a dict in sorted key order, or numeric for the keys
        ``"0"`` to ``"M-1"``, which sorted as strings would put ``"10"`` before ``"2"``)."""
        return ordered_inputs(inputs, self.num_modalities, self.modalities)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_modalities={self.num_modalities}, bias={self.bias is not None}"
