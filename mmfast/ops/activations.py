"""The activations mmfast's fused ops accept, as pure-PyTorch functions.

The fused kernels implement the same math in `kernels/activation.h`; these definitions are the
references they are tested against.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

ACTIVATIONS: tuple[str, ...] = ("none", "relu", "gelu", "gelu_tanh", "silu", "sigmoid", "tanh")

_FUNCTIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "none": lambda x: x,
    "relu": F.relu,
    "gelu": F.gelu,
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "silu": F.silu,
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
}

# Activations whose gradient the backward reads off the pre-activation (the others use the output).
NEEDS_PREACTIVATION: frozenset[str] = frozenset({"gelu", "gelu_tanh", "silu"})


def check_activation(activation: object, argument: str = "activation") -> str:
    """Returns `activation` if it is a known name, else raises a ValueError naming the argument."""
    if not isinstance(activation, str) or activation not in _FUNCTIONS:
        raise ValueError(
            f"{argument}: unknown activation {activation!r}; expected one of "
            + ", ".join(repr(a) for a in ACTIVATIONS)
        )
    return activation


def apply_activation(x: torch.Tensor, activation: str) -> torch.Tensor:
    """act(x) for one of ACTIVATIONS."""
    return _FUNCTIONS[check_activation(activation)](x)
