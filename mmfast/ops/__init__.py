"""Fused ops. Each is a `torch.library` custom op with a pure-PyTorch reference that defines it."""

import importlib.util

from mmfast import _backend
from mmfast.ops import _dispatch
from mmfast.ops.activations import ACTIVATIONS, apply_activation
from mmfast.ops.attention_fusion import attention_fusion, attention_fusion_reference
from mmfast.ops.concat_linear import concat_linear, concat_linear_reference
from mmfast.ops.gated_fusion import gated_fusion, gated_fusion_reference

if _backend.extension_loaded() and importlib.util.find_spec("triton") is not None:
    # CUDA tensors reach the fusion ops' Triton kernels through the dispatcher; triton itself is
    # imported on the first such call.
    from mmfast.ops import _triton_cuda

    _triton_cuda.register()

_dispatch.record_kernels(("concat_linear", "gated_fusion", "attention_fusion"))

__all__ = [
    "ACTIVATIONS",
    "apply_activation",
    "attention_fusion",
    "attention_fusion_reference",
    "concat_linear",
    "concat_linear_reference",
    "gated_fusion",
    "gated_fusion_reference",
]
