"""Triton kernels of the fused ops: compiled for CUDA tensors, or interpreted for CPU tensors when
``TRITON_INTERPRET=1`` is set.

Importing this package does not import triton. The kernel modules (``mmfast.triton.<op>``) do, and
triton decides between compiled and interpreted kernels when they are imported: set
``TRITON_INTERPRET`` before that. Each kernel module provides ``forward`` and ``backward`` in the
conventions of its op's ``_forward`` / ``_backward`` schemas; `mmfast.ops._registry` registers them
as the op's CUDA kernels (and, with ``MMFAST_BACKEND=triton``, its kernels on every device).
"""

from __future__ import annotations

import importlib.util
import os
import sys

import torch

__all__ = ["MAX_INPUTS", "availability", "is_available"]

# The most inputs the Triton kernels take: they take the modalities as a tuple of pointers and
# unroll their loops over it at compile time; the gated-fusion forward also keeps one
# [rows, groups, cols] logit tile in registers.
MAX_INPUTS = 8

_TRUE_VALUES = ("1", "true", "on", "yes", "y")


def _interpreting() -> bool:
    common = sys.modules.get("mmfast.triton._common")
    if common is not None:
        # The kernels are already built: what they are, not what the environment says now.
        return bool(common.INTERPRETED)
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in _TRUE_VALUES


def availability(device: torch.device | str | None = None) -> tuple[bool, str]:
    """Whether the Triton kernels can run (on ``device``, or on some device when None), and a
    description of how they run or why they cannot, for `mmfast.backend_info()`."""
    if importlib.util.find_spec("triton") is None:
        return False, "triton is not installed (pip install 'mmfast[triton]')"
    try:
        import triton
    except ImportError as error:  # a broken install: report it rather than fail
        return False, f"triton could not be imported ({error})"
    version = getattr(triton, "__version__", "?")
    device_type = None if device is None else torch.device(device).type
    if _interpreting():
        if device_type in (None, "cpu", "cuda"):
            return True, f"triton {version}, interpreter (TRITON_INTERPRET=1)"
        return False, f"triton's interpreter does not take {device_type} tensors"
    if device_type == "cpu":
        return False, "CPU tensors need TRITON_INTERPRET=1 (set before the kernels are imported)"
    if device_type not in (None, "cuda"):
        return False, f"no Triton kernels for {device_type} tensors"
    if not torch.cuda.is_available():
        return False, "no CUDA device (and TRITON_INTERPRET is not set)"
    return True, f"triton {version}, CUDA"


def is_available(device: torch.device | str | None = None) -> bool:
    """Whether the Triton kernels can run on ``device`` (or on some device when None)."""
    return availability(device)[0]
