"""What implementation each op runs on each device, for `mmfast.backend_info()` and `mmfast info`."""

from __future__ import annotations

import torch

from mmfast import _backend

# Op name -> what its compiled kernels are, per device type.
_COMPILED_KERNELS: dict[str, dict[str, str]] = {
    "concat_linear": {
        "cpu": "cpp (oneDNN / ATen GEMM, at::vec epilogue)",
        "cuda": "cuda (ATen GEMM, CUDA epilogue)",
    },
}


def backend_info() -> dict[str, dict[str, str]]:
    """For each op, which implementation runs on ``cpu`` and ``cuda`` tensors.

    Values are the compiled implementation, ``"reference"`` (the pure-PyTorch fallback, with the
    reason), or ``"unavailable"`` for CUDA on a machine without it.
    """
    info: dict[str, dict[str, str]] = {}
    reason = _backend.load_error()
    for op, kernels in _COMPILED_KERNELS.items():
        row: dict[str, str] = {}
        for device, kernel in kernels.items():
            if not _backend.extension_loaded():
                row[device] = f"reference ({reason})"
            elif device == "cpu" or _backend.extension_has_cuda():
                row[device] = kernel
            else:
                row[device] = "reference (extension built without CUDA)"
            if device == "cuda" and not torch.cuda.is_available():
                row[device] += "; no CUDA device here"
        info[op] = row
    return info
