"""Which implementation an op call runs: the op's registered kernels (``"compiled"``: C++, CUDA
C++ or Triton, whichever the dispatcher holds for the device, see `mmfast.ops._registry`) or the
pure-PyTorch reference."""

from __future__ import annotations

import warnings

import torch

from mmfast import _backend
from mmfast.ops._registry import DISPATCH_KEYS

_warned: set[tuple[str, str]] = set()
# Answers of the dispatcher, which do not change once the ops are registered (torch.compile then
# traces a dict lookup rather than a call into the dispatcher).
_kernel_known: dict[tuple[str, str], bool] = {}


def has_kernel(op: str, device_type: str) -> bool:
    """Whether ``mmfast::<op>_forward`` has a kernel for ``device_type`` in this process."""
    known = _kernel_known.get((op, device_type))
    if known is None:
        key = DISPATCH_KEYS.get(device_type)
        known = (
            _backend.extension_loaded()
            and key is not None
            and hasattr(torch.ops.mmfast, f"{op}_forward")  # absent from a build older than the op
            and torch._C._dispatch_has_kernel_for_dispatch_key(f"mmfast::{op}_forward", key)
        )
        _kernel_known[(op, device_type)] = known
    return known


def record_kernels(ops: tuple[str, ...]) -> None:
    """Asks the dispatcher once, at import, about every op and device type, so that calls (and
    torch.compile's tracing of them) only read the answers."""
    for op in ops:
        for device_type in DISPATCH_KEYS:
            has_kernel(op, device_type)


def implementation(op: str, device: torch.device) -> str:
    """``"compiled"`` or ``"reference"`` for a call of ``op`` on ``device``; warns once per op and
    device type when the compiled extension is loaded but has no kernel there."""
    if not _backend.extension_loaded():
        return "reference"
    if has_kernel(op, device.type):
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
