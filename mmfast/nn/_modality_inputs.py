"""What the fusion layers share: their inputs (a sequence of tensors, or a mapping of modality
name -> tensor taken in the layer's modality order when its keys are the layer's names, otherwise in
sorted name order, as torchmultimodal does) and their refusal of TorchScript."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NoReturn

import torch

ModalityInputs = Sequence[torch.Tensor] | Mapping[str, torch.Tensor]

TORCHSCRIPT_UNSUPPORTED = "mmfast layers do not support TorchScript; use torch.export.export or torch.compile"


class NotScriptable:
    """Mixin for the layers: ``torch.jit.script`` of the layer, or of any module holding one, raises
    a RuntimeError that says TorchScript is unsupported and what to use instead.

    TorchScript cannot compile the layers' forwards (they take a list or a dict of any length and
    name bad inputs in their errors), and its own error points at a line of mmfast, not at the
    cause. ``torch.jit.script`` calls ``__prepare_scriptable__`` on every submodule before compiling
    anything, so this refusal comes first.
    """

    def __prepare_scriptable__(self) -> NoReturn:
        raise RuntimeError(f"{type(self).__name__}: {TORCHSCRIPT_UNSUPPORTED}")


def mapping_order(
    inputs: Mapping[str, torch.Tensor], names: Sequence[str] | None = None, names_required: bool = False
) -> list[str]:
    """The keys of a mapping input in fusion order.

    Keys that are exactly the layer's modality `names` are read in the layer's order (a layer built
    from a list of sizes names its modalities "0", "1", ..., "10", which sorted as strings would put
    "10" before "2"); other keys in sorted order, as torchmultimodal reads them. With
    `names_required`, any other set of keys is an error.
    """
    if names is not None and set(inputs) == set(names) and len(inputs) == len(names):
        return list(names)
    keys = sorted(inputs)
    if names_required:
        raise ValueError(f"inputs: expected the modalities {sorted(names or [])}, got {keys}")
    return keys


def ordered_inputs(
    inputs: ModalityInputs, count: int, names: Sequence[str] | None = None, names_required: bool = False
) -> list[torch.Tensor]:
    """The `count` tensors of `inputs` in fusion order (a mapping's order: :func:`mapping_order`)."""
    if isinstance(inputs, Mapping):
        tensors = [inputs[key] for key in mapping_order(inputs, names, names_required)]
    elif isinstance(inputs, torch.Tensor) or not isinstance(inputs, Sequence):
        raise TypeError(
            f"inputs: expected a sequence of tensors or a dict of them, got {type(inputs).__name__}"
        )
    else:
        tensors = list(inputs)
    if len(tensors) != count:
        raise ValueError(f"inputs: expected {count} tensors (one per modality), got {len(tensors)}")
    return tensors


def check_feature_dims(
    inputs: ModalityInputs,
    tensors: Sequence[torch.Tensor],
    dims: Sequence[int],
    names: Sequence[str] | None = None,
) -> None:
    """Raises a ValueError naming the first input whose last dim is not the layer's size for it.

    The fused ops check every argument themselves (in C++ on the compiled path) but can only name
    the op's arguments; the layers call this once an op has refused its arguments, so that the
    error names the offending modality instead, at no cost to calls that succeed."""
    labels = (
        [f"inputs[{key!r}]" for key in mapping_order(inputs, names)] if isinstance(inputs, Mapping) else None
    )
    for i, (x, dim) in enumerate(zip(tensors, dims)):
        if not isinstance(x, torch.Tensor):
            continue  # the op's own error names a non-tensor input
        if x.dim() == 0 or x.shape[-1] != dim:
            label = labels[i] if labels is not None else f"inputs[{i}]"
            raise ValueError(f"{label}: expected a tensor [*, {dim}], got shape {list(x.shape)}")
