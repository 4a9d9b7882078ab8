"""`ConcatLinear`: a drop-in for ``act(nn.Linear(sum(in_features), out)(torch.cat(xs, -1)))``."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from mmfast.ops import concat_linear
from mmfast.ops.activations import check_activation


class ConcatLinear(nn.Module):
    """Linear layer over the concatenation of several feature tensors, with a fused activation.

    Computes ``act(cat(xs, -1) @ weight.T + bias)`` without materialising the concatenation.
    Parameters are named and shaped like :class:`torch.nn.Linear`'s (``weight`` of shape
    ``[out_features, sum(in_features)]``, ``bias`` of shape ``[out_features]``) and initialised
    the same way, so state dicts move between the two unchanged.

    Args:
        in_features: feature size of each input, in the order they are passed to ``forward``.
        out_features: size of the output features.
        bias: whether to learn an additive bias.
        activation: one of ``none, relu, gelu, gelu_tanh, silu, sigmoid, tanh``.
        device: device of the parameters.
        dtype: dtype of the parameters.

    Example:
        >>> layer = ConcatLinear([768, 512, 128], 512, activation="gelu")
        >>> y = layer(image_features, text_features, audio_features)  # [*, 512]
    """

    def __init__(
        self,
        in_features: Sequence[int],
        out_features: int,
        bias: bool = True,
        activation: str = "none",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        sizes = [int(d) for d in in_features]
        if not sizes or any(d < 0 for d in sizes) or sum(sizes) == 0:
            raise ValueError(f"in_features: expected non-negative sizes with a positive sum, got {sizes}")
        if out_features <= 0:
            raise ValueError(f"out_features: expected a positive size, got {out_features}")
        self.in_features: tuple[int, ...] = tuple(sizes)
        self.out_features = int(out_features)
        self.activation = check_activation(activation)
        factory = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.empty(out_features, sum(sizes), **factory))
        if bias:
            self.bias = nn.Parameter(torch.empty(out_features, **factory))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The initialisation of :class:`torch.nn.Linear` over ``sum(in_features)`` inputs."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.weight.shape[1]) if self.weight.shape[1] > 0 else 0
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, *inputs: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        """``forward(x1, x2, ...)`` or ``forward([x1, x2, ...])``; returns ``[*, out_features]``."""
        if len(inputs) == 1 and not isinstance(inputs[0], torch.Tensor):
            inputs = tuple(inputs[0])
        if len(inputs) != len(self.in_features):
            raise ValueError(f"inputs: expected {len(self.in_features)} tensors, got {len(inputs)}")
        for i, (x, size) in enumerate(zip(inputs, self.in_features)):
            if not isinstance(x, torch.Tensor):
                raise TypeError(f"inputs[{i}]: expected a tensor, got {type(x).__name__}")
            if x.dim() == 0 or x.shape[-1] != size:
                raise ValueError(f"inputs[{i}]: expected last dim {size}, got shape {list(x.shape)}")
        return concat_linear(inputs, self.weight, self.bias, self.activation)

    @classmethod
    def from_linear(
        cls, linear: nn.Linear, in_features: Sequence[int], activation: str = "none"
    ) -> ConcatLinear:
        """A ConcatLinear sharing nothing with ``linear`` but equal to it: same weights, device, dtype."""
        if sum(in_features) != linear.in_features:
            raise ValueError(
                f"in_features: sizes sum to {sum(in_features)} but the linear layer "
                f"takes {linear.in_features}"
            )
        layer = cls(
            in_features,
            linear.out_features,
            bias=linear.bias is not None,
            activation=activation,
            device=linear.weight.device,
            dtype=linear.weight.dtype,
        )
        layer.load_state_dict(linear.state_dict())
        return layer

    def extra_repr(self) -> str:
        return (
            f"in_features={list(self.in_features)}, out_features={self.out_features}, "
            f"bias={self.bias is not None}, activation={self.activation!r}"
        )
