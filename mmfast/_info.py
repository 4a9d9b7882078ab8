"""What implementation each op runs on each device, for `mmfast.backend_info()` and `mmfast info`."""

from __future__ import annotations

import torch

from mmfast import _backend

_FUSION_CPU = "cpp (ATen / oneDNN GEMMs, at::vec fused softmax and blend pass)"

# Op name -> what its compiled kernels are, per device type.
_COMPILED_KERNELS: dict[str, dict[str, str]] = {
    "concat_linear": {
        "cpu": "cpp (oneDNN / ATen GEMM, at::vec epilogue)",
        "cuda": "cuda (ATen GEMM, CUDA epilogue)",
    },
    "gated_fusion": {"cpu": _FUSION_CPU, "cuda": "triton"},
    "attention_fusion": {"cpu": _FUSION_CPU, "cuda": "triton"},
}
_TRITON_OPS = ("gated_fusion", "attention_fusion")


def _has_kernel(op: str, device: str) -> bool:
    key = {"cpu": "CPU", "cuda": "CUDA"}[device]
    return torch._C._dispatch_has_kernel_for_dispatch_key(f"mmfast::{op}_forward", key)


def _triton_row(device: str) -> str:
    from mmfast.triton import availability

    available, how = availability(device)
    return f"triton ({how})" if available else f"triton, unavailable: {how}"


def backend_info() -> dict[str, dict[str, str]]:
    """For each op, which implementation runs on ``cpu`` and ``cuda`` tensors.

    Values name the compiled implementation (``cpp``, ``cuda``, ``triton``), or ``"reference"`` (the
    pure-PyTorch fallback) with the reason; CUDA rows say when this machine has no CUDA device.
    """
    info: dict[str, dict[str, str]] = {}
    reason = _backend.load_error()
    triton_requested = _backend.requested_backend() == "triton"
    for op, kernels in _COMPILED_KERNELS.items():
        row: dict[str, str] = {}
        for device, kernel in kernels.items():
            if triton_requested and op in _TRITON_OPS:
                row[device] = _triton_row(device) + " (MMFAST_BACKEND=triton)"
            elif not _backend.extension_loaded():
                row[device] = f"reference ({reason})"
            elif _has_kernel(op, device):
                row[device] = _triton_row(device) if kernel == "triton" else kernel
            elif kernel == "triton":
                row[device] = "reference (triton is not installed: pip install 'mmfast[triton]')"
            else:
                row[device] = "reference (extension built without CUDA)"
            if device == "cuda" and not torch.cuda.is_available():
                row[device] += "; no CUDA device here"
        info[op] = row
    return info
