"""The inputs of the fusion layers: a sequence of tensors, or a mapping of modality name -> tensor
taken in sorted name order (as torchmultimodal does)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch


def ordered_inputs(
    inputs: Sequence[torch.Tensor] | Mapping[str, torch.Tensor], names: Sequence[str] | None = None
) -> list[torch.Tensor]:
    """The tensors of `inputs` in fusion order.

    A mapping is read in sorted key order; when the layer knows its modality `names`, the keys must
    be exactly those.
    """
    if isinstance(inputs, Mapping):
        keys = sorted(inputs)
        if names is not None and keys != sorted(names):
            raise ValueError(f"inputs: expected the modalities {sorted(names)}, got {keys}")
        return [inputs[key] for key in keys]
    if isinstance(inputs, torch.Tensor) or not isinstance(inputs, Sequence):
        raise TypeError(
            f"inputs: expected a sequence of tensors or a dict of them, got {type(inputs).__name__}"
        )
    return list(inputs)
