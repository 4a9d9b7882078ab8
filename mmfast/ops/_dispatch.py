"""Which implementation an op call runs: the compiled kernels, the Triton kernels
(``MMFAST_BACKEND=triton``, fusion ops only) or the pure-PyTorch reference."""

from __future__ import annotations

import warnings

import torch

from mmfast import _backend

# Ops that have Triton kernels, which MMFAST_BACKEND=triton runs on any device.
TRITON_OPS = ("gated_fusion", "attention_fusion")

_warned: set[tuple[str, str]] = set()
# Answers of the dispatcher, which do not change once the ops are registered (torch.compile then
# traces a dict lookup rather than a call into the dispatcher).
_kernel_known: dict[tuple[str, str], bool] = {}


def has_compiled_kernel(op: str, device_type: str) -> bool:
    """Whether ``mmfast::<op>_forward`` has a kernel for ``device_type`` in this process."""
    known = _kernel_known.get((op, device_type))
    if known is None:
        key = {"cpu": "CPU", "cuda": "CUDA"}.get(device_type)
        known = (
            _backend.extension_loaded()
            and key is not None
            and torch._C._dispatch_has_kernel_for_dispatch_key(f"mmfast::{op}_forward", key)
        )
        _kernel_known[(op, device_type)] = known
    return known


def record_kernels(ops: tuple[str, ...]) -> None:
    """Asks the dispatcher once, at import, about every op and device type, so that calls (and
    torch.compile's tracing of them) only read the answers."""
    for op in ops:
        for device_type in ("cpu", "cuda"):
            has_compiled_kernel(op, device_type)


def implementation(op: str, device: torch.device) -> str:
    """``"triton"``, ``"compiled"`` or ``"reference"`` for a call of ``op`` on ``device``; warns once
    per op and device type when the compiled extension is loaded but has no kernel there."""
    if op in TRITON_OPS and _backend.requested_backend() == "triton":
        return "triton"
    if not _backend.extension_loaded():
        return "reference"
    if has_compiled_kernel(op, device.type):
        return "compiled"
    if (op, device.type) not in _warned:
        _warned.add((op, device.type))
        warnings.warn(
            f"mmfast.ops.{op}: no compiled kernel for {device.type} tensors in this build; using the "
            "pure-PyTorch reference",
            RuntimeWarning,
            stacklevel=3,
        )
    return "reference"
