"""What implementation each op runs on each device, for `mmfast.backend_info()` and `mmfast info`,
read from the op descriptors (`mmfast.ops._registry`)."""

from __future__ import annotations

import torch

from mmfast import _backend


def _triton_row(device: str) -> str:
    from mmfast.triton import availability

    available, how = availability(device)
    return f"triton ({how})" if available else f"triton, unavailable: {how}"


def _row(op, device: str) -> str:
    from mmfast.ops import _dispatch, _registry

    if not _backend.extension_loaded():
        return f"reference ({_backend.load_error()})"
    if _registry.runs_triton(op.name, device):
        row = _triton_row(device)
        return row + " (MMFAST_BACKEND=triton)" if device == "cpu" else row
    if _dispatch.has_kernel(op.name, device):
        return op.compiled[device]
    if op.triton is not None and device == "cuda":
        return "reference (triton is not installed: pip install 'mmfast[triton]')"
    return f"reference (no {device} kernel in this build)" if device != "cuda" else (
        "reference (extension built without CUDA)"
    )


def backend_info() -> dict[str, dict[str, str]]:
    """For each op, which implementation runs on ``cpu`` and ``cuda`` tensors.

    Values name the compiled implementation (``cpp``, ``cuda``, ``triton``), or ``"reference"`` (the
    pure-PyTorch fallback) with the reason; CUDA rows say when this machine has no CUDA device.
    """
    from mmfast.ops import _registry

    info: dict[str, dict[str, str]] = {}
    for op in _registry.descriptors():
        row = {device: _row(op, device) for device in _registry.DISPATCH_KEYS}
        if not torch.cuda.is_available():
            row["cuda"] += "; no CUDA device here"
        info[op.name] = row
    return info


def op_table() -> list[dict[str, object]]:
    """One row per op for `mmfast info` and the docs: name, summary, input limits in this
    process, and whether it has Triton kernels (and how many inputs those take)."""
    from mmfast.ops import _registry
    from mmfast.triton import MAX_INPUTS

    rows = []
    for op in _registry.descriptors():
        low, high = op.input_limits()
        rows.append(
            {
                "op": op.name,
                "summary": op.summary,
                "inputs": f"{low} to {high}" if high is not None else f"at least {low}",
                "triton_inputs": f"{op.min_inputs} to {MAX_INPUTS}" if op.triton else None,
            }
        )
    return rows
