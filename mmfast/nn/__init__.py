"""Drop-in layers built on mmfast's fused ops."""

from mmfast.nn.concat_linear import ConcatLinear

__all__ = ["ConcatLinear"]
