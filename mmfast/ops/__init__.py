"""Fused ops. Each is a `torch.library` custom op with a pure-PyTorch reference that defines it."""

from mmfast.ops.activations import ACTIVATIONS, apply_activation
from mmfast.ops.concat_linear import concat_linear, concat_linear_reference

__all__ = ["ACTIVATIONS", "apply_activation", "concat_linear", "concat_linear_reference"]
