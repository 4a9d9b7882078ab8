"""The inputs of the fusion layers: a sequence of tensors, or a mapping of modality name -> tensor
taken in sorted name order (as torchmultimodal does)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

ModalityInputs = Sequence[torch.Tensor] | Mapping[str, torch.Tensor]


def ordered_inputs(
    inputs: ModalityInputs, count: int, names: Sequence[str] | None = None
) -> list[torch.Tensor]:
    """The `count` tensors of `inputs` in fusion order.

    A mapping is read in sorted key order; when the layer knows its modality `names`, the keys must
    be exactly those.
    """
    if isinstance(inputs, Mapping):
        keys = sorted(inputs)
        if names is not None and keys != sorted(names):
            raise ValueError(f"inputs: expected the modalities {sorted(names)}, got {keys}")
        tensors = [inputs[key] for key in keys]
    elif isinstance(inputs, torch.Tensor) or not isinstance(inputs, Sequence):
        raise TypeError(
            f"inputs: expected a sequence of tensors or a dict of them, got {type(inputs).__name__}"
        )
    else:
        tensors = list(inputs)
    if len(tensors) != count:
        raise ValueError(f"inputs: expected {count} tensors (one per modality), got {len(tensors)}")
    return tensors


def check_feature_dims(inputs: ModalityInputs, tensors: Sequence[torch.Tensor], dims: Sequence[int]) -> None:
    """Raises a ValueError naming the first input whose last dim is not the layer's size for it.

    The fused ops check every argument themselves (in C++ on the compiled path) but can only name
    the op's arguments; the layers call this once an op has refused its arguments, so that the
    error names the offending modality instead, at no cost to calls that succeed."""
    labels = [f"inputs[{key!r}]" for key in sorted(inputs)] if isinstance(inputs, Mapping) else None
    for i, (x, dim) in enumerate(zip(tensors, dims)):
        if not isinstance(x, torch.Tensor):
            continue  # the op's own error names a non-tensor input
        if x.dim() == 0 or x.shape[-1] != dim:
            label = labels[i] if labels is not None else f"inputs[{i}]"
            raise ValueError(f"{label}: expected a tensor [*, {dim}], got shape {list(x.shape)}")
