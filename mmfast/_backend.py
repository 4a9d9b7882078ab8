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
_CAPABILITY_ENV = "MMFAST_CPU_CAPABILITY"
# Each build of the CPU kernels (csrc/engine/cpu_capability.h) and the /proc/cpuinfo flags it needs:
# ATen's AVX512 capability (AVX512F/BW/VL/DQ) and its AVX2 one.
_CAPABILITY_FLAGS = {
    "avx2": {"avx2", "fma"},
    "avx512": {"avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512dq"},
}

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


def _cpu_flags() -> set[str] | None:
    """The x86 CPU's feature flags from /proc/cpuinfo; None where they cannot be read."""
    if platform.machine() not in ("x86_64", "AMD64"):
        return None
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            flags = next((line for line in cpuinfo if line.startswith("flags")), "")
    except OSError:
        return None
    return set(flags.split(":", 1)[-1].split()) if flags else None


# The ISA extensions that decide which CPU kernels run fastest, as /proc/cpuinfo names them, and
# as the figures name them.
ISA_FLAGS = {"avx2": "AVX2", "avx512f": "AVX-512", "avx512_bf16": "AVX512-BF16", "amx_tile": "AMX"}


def cpu_description() -> dict[str, object]:
    """``{"model": ..., "isa": [...]}``: the CPU model as /proc/cpuinfo names it (with its family
    and model numbers, which tell generations apart where the name is only "AMD EPYC"), and which of
    AVX2, AVX-512, AVX512-BF16 and AMX it has. Every published figure names both."""
    model = platform.processor() or platform.machine()
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("model name", "cpu family", "model") and key not in fields:
                    fields[key] = value.strip()
                if not line.strip():
                    break  # the first processor's block is enough
    except OSError:
        pass
    if "model name" in fields:
        model = fields["model name"]
        if "cpu family" in fields and "model" in fields:
            model += f" (family {fields['cpu family']}, model {fields['model']})"
    flags = _cpu_flags() or set()
    return {"model": model, "isa": [name for flag, name in ISA_FLAGS.items() if flag in flags]}


def _cpu_lacks_avx2() -> bool:
    flags = _cpu_flags()
    return flags is not None and not _CAPABILITY_FLAGS["avx2"] <= flags


def _check_requested_capability() -> None:
    """MMFAST_CPU_CAPABILITY=avx2|avx512 forces a build of the CPU kernels (auto or unset: the
    library chooses, as ATen does for its own). A value that names no build, or one this CPU
    cannot run, is an error here, before anything is loaded."""
    value = os.environ.get(_CAPABILITY_ENV, "").strip().lower()
    if value in ("", "auto"):
        return
    if value not in _CAPABILITY_FLAGS:
        raise ValueError(
            f"{_CAPABILITY_ENV}={value!r} is not a CPU kernel build: expected one of "
            f"auto, {', '.join(_CAPABILITY_FLAGS)}"
        )
    flags = _cpu_flags()
    if flags is None:
        raise ValueError(
            f"{_CAPABILITY_ENV}={value!r}: the x86 kernel builds do not run on a {platform.machine()} CPU"
        )
    missing = sorted(_CAPABILITY_FLAGS[value] - flags)
    if missing:
        raise ValueError(
            f"{_CAPABILITY_ENV}={value!r}: this CPU lacks {', '.join(missing)}, which that build needs"
        )


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


def cpu_capability() -> dict[str, object] | None:
    """Which build of the CPU kernels runs: ``{"active": "AVX512", "built": ("AVX2", "AVX512"),
    "supported": (the built ones this CPU runs), "reason": how the active one was chosen}``; None
    when the compiled extension is not loaded. Set ``MMFAST_CPU_CAPABILITY=avx2`` (or ``avx512``)
    before importing mmfast to force one."""
    if not _extension_loaded:
        return None
    from mmfast import _C

    return _C.cpu_capability()


_check_requested_capability()
_REQUESTED = _requested_backend()
_load_extension()
