"""Loading of the compiled extension and the choice of implementation per op and device.

`import mmfast` never fails because of the extension: when it is missing, was built for another
CPU baseline, or `MMFAST_BACKEND=reference` is set, every op runs its pure-PyTorch reference and
one warning says why.
"""

from __future__ import annotations

import os
import platform
import warnings

_BACKEND_ENV = "MMFAST_BACKEND"
_VALID_BACKENDS = ("auto", "reference", "triton")

_load_error: str | None = None
_extension_loaded = False


def _requested_backend() -> str:
    value = os.environ.get(_BACKEND_ENV, "auto").strip().lower() or "auto"
    if value not in _VALID_BACKENDS:
        warnings.warn(
            f"{_BACKEND_ENV}={value!r} is not one of {', '.join(_VALID_BACKENDS)}; using 'auto'",
            RuntimeWarning,
            stacklevel=3,
        )
        return "auto"
    return value


def _cpu_lacks_avx2() -> bool:
    if platform.machine() not in ("x86_64", "AMD64"):
        return False
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            flags = next((line for line in cpuinfo if line.startswith("flags")), "")
    except OSError:
        return False
    return bool(flags) and not {"avx2", "fma"} <= set(flags.split())


def _load_extension() -> None:
    global _extension_loaded, _load_error
    if _REQUESTED == "reference":
        _load_error = f"{_BACKEND_ENV}=reference"
        return
    from mmfast._version_check import torch_mismatch

    mismatch = torch_mismatch()
    if mismatch is not None:
        # Importing the extension would fail with an undefined-symbol error, or worse.
        _load_error = mismatch
    elif _cpu_lacks_avx2():
        # The extension is compiled for x86-64-v3 (AVX2); running it here would be an illegal
        # instruction, not an exception.
        _load_error = "this CPU lacks AVX2, which the compiled extension needs"
    else:
        try:
            from mmfast import _C  # noqa: F401  (registers the ops)

            _extension_loaded = True
            return
        except (ImportError, OSError) as error:
            _load_error = f"the compiled extension mmfast._C could not be loaded ({error})"
    if _REQUESTED == "triton":
        _load_error += " (MMFAST_BACKEND=triton registers the Triton kernels on the compiled ops)"
    warnings.warn(
        f"mmfast: {_load_error}; every op falls back to its pure-PyTorch reference "
        "(correct, but not fused). Reinstall with `pip install --no-build-isolation -e .` to build it.",
        RuntimeWarning,
        stacklevel=3,
    )


def extension_loaded() -> bool:
    """Whether the compiled ops are registered in this process."""
    return _extension_loaded


def requested_backend() -> str:
    """The backend asked for with MMFAST_BACKEND when mmfast was imported (read once: it decides
    what gets loaded, and ops consult it on every call)."""
    return _REQUESTED


def load_error() -> str | None:
    return _load_error


_REQUESTED = _requested_backend()
_load_extension()
