"""CUDA kernels of the C++ fusion ops (``mmfast::gated_fusion_forward`` and friends): the Triton
kernels, registered with the dispatcher so that CUDA tensors reach them through the same op,
autograd formula and fake implementation as CPU tensors."""

from __future__ import annotations

import torch

from mmfast.ops import _triton_adapters as adapters

_library: torch.library.Library | None = None


def register() -> None:
    """Registers the CUDA kernels once (the compiled extension must be loaded)."""
    global _library
    if _library is not None:
        return
    library = torch.library.Library("mmfast", "IMPL")
    library.impl("gated_fusion_forward", adapters.gated_forward, "CUDA")
    library.impl("gated_fusion_backward", adapters.gated_backward, "CUDA")
    library.impl("attention_fusion_forward", adapters.attention_forward, "CUDA")
    library.impl("attention_fusion_backward", adapters.attention_backward, "CUDA")
    _library = library
