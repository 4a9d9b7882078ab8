"""Fused ops. Each is a `torch.library` custom op with a pure-PyTorch reference that defines it.

Each op module registers its descriptor (`mmfast.ops._registry`); importing them all here, then
`install()`, registers the fakes and Triton kernels with the dispatcher.
"""

from mmfast.ops import _dispatch, _registry
from mmfast.ops.activations import ACTIVATIONS, apply_activation
from mmfast.ops.attention_fusion import attention_fusion, attention_fusion_reference
from mmfast.ops.clip_loss import clip_loss, clip_loss_reference
from mmfast.ops.concat_linear import concat_linear, concat_linear_reference
from mmfast.ops.film import film, film_reference
from mmfast.ops.gated_fusion import gated_fusion, gated_fusion_reference
from mmfast.ops.siglip_loss import siglip_loss, siglip_loss_reference

_registry.install()
_dispatch.record_kernels(tuple(op.name for op in _registry.descriptors()))


def input_limits(op: str) -> tuple[int, int | None]:
    """``(fewest, most)`` inputs ``mmfast.ops.<op>`` takes in this process (most None: no limit,
    as for the pure-PyTorch reference when the compiled extension is not loaded)."""
    return _registry.descriptor(op).input_limits()


__all__ = [
    "ACTIVATIONS",
    "apply_activation",
    "attention_fusion",
    "attention_fusion_reference",
    "clip_loss",
    "clip_loss_reference",
    "concat_linear",
    "concat_linear_reference",
    "film",
    "film_reference",
    "gated_fusion",
    "gated_fusion_reference",
    "input_limits",
    "siglip_loss",
    "siglip_loss_reference",
]
