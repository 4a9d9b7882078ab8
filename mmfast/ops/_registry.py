"""One descriptor per op: what it is, which kernels it has, its input limits, its reference and
its fake implementations. Dispatch (`mmfast.ops._dispatch`), `mmfast.backend_info()`, `mmfast info`
and the docs tests read these, instead of keeping their own lists of ops.

Each op module (``mmfast/ops/<op>.py``) builds its descriptor and calls :func:`register`;
``mmfast/ops/__init__.py`` imports the op modules and then calls :func:`install`, which registers
the fakes and the Triton kernels with the dispatcher. The op's schema, argument checks, autograd
formula and C++ kernels live in ``csrc/ops/<op>/``; the input limits the C++ checks enforce are
exported from there (``mmfast._C.input_limits``) and read here, never retyped.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch

from mmfast import _backend

# Device type -> dispatch key of the kernels registered for it.
DISPATCH_KEYS = {"cpu": "CPU", "cuda": "CUDA"}


@dataclass(frozen=True)
class OpDescriptor:
    """What mmfast knows about one fused op.

    Attributes:
        name: the op's name: ``torch.ops.mmfast.<name>`` is what users call, which forwards to
            ``mmfast::<name>_forward`` (the kernels and autograd formula) and whose gradients come
            from ``mmfast::<name>_backward``.
        summary: one line for `mmfast info` and the docs.
        reference: the pure-PyTorch definition of the op.
        compiled: device type -> a description of the op's C++ / CUDA C++ kernels, for the
            devices the extension has them for (when it was built for that device).
        triton: the module of the op's Triton kernels (``mmfast.triton.<op>``), or None. It
            provides ``forward`` and ``backward`` in the conventions of the op's ``_forward`` /
            ``_backward`` schemas and is registered as their CUDA kernel (and, with
            ``MMFAST_BACKEND=triton``, as their kernel on every device). It is imported on the
            first call, never at `import mmfast`: triton reads ``TRITON_INTERPRET`` then.
        min_inputs: the fewest inputs the op's definition takes (the reference's limit when the
            extension is not loaded; a test checks that the C++ checks agree).
        register_fakes: registers the fake (meta) implementations of ``<name>_forward`` and
            ``<name>_backward``; called once when the compiled extension is loaded.
    """

    name: str
    summary: str
    reference: Callable
    compiled: dict[str, str]
    register_fakes: Callable[[], None]
    min_inputs: int = 1
    triton: str | None = None

    @property
    def max_inputs(self) -> int | None:
        """The most inputs the compiled kernels take (exported by the C++ checks), or None when the
        extension is not loaded: the reference then takes any number."""
        limits = _compiled_limits().get(self.name)
        return None if limits is None else limits[1]

    def input_limits(self) -> tuple[int, int | None]:
        """``(min, max)`` inputs for a call in this process: the C++ checks' limits when the
        extension is loaded, else the definition's minimum and no maximum."""
        return _compiled_limits().get(self.name, (self.min_inputs, None))


_OPS: dict[str, OpDescriptor] = {}
# (op, device type) pairs whose kernels are the op's Triton kernels in this process.
_TRITON_KERNELS: set[tuple[str, str]] = set()
_library: torch.library.Library | None = None


def register(descriptor: OpDescriptor) -> OpDescriptor:
    """Adds an op's descriptor (once per name)."""
    if descriptor.name in _OPS:
        raise ValueError(f"op {descriptor.name!r} is registered twice")
    _OPS[descriptor.name] = descriptor
    return descriptor


def descriptors() -> tuple[OpDescriptor, ...]:
    """Every registered op, in registration order."""
    return tuple(_OPS.values())


def descriptor(name: str) -> OpDescriptor:
    """The descriptor of op ``name``."""
    return _OPS[name]


@functools.cache
def _compiled_limits() -> dict[str, tuple[int, int]]:
    if not _backend.extension_loaded():
        return {}
    from mmfast import _C

    return {name: (int(low), int(high)) for name, (low, high) in _C.input_limits.items()}


def runs_triton(op: str, device_type: str) -> bool:
    """Whether calls of ``op`` on ``device_type`` tensors run its Triton kernels in this process."""
    return (op, device_type) in _TRITON_KERNELS


def _lazy_kernel(module: str, function: str) -> Callable:
    def kernel(*args):
        return getattr(importlib.import_module(module), function)(*args)

    kernel.__name__ = f"{module}.{function}"
    return kernel


def _register_triton_kernels(descriptor: OpDescriptor, device_types: tuple[str, ...]) -> None:
    global _library
    if _library is None:
        _library = torch.library.Library("mmfast", "IMPL")
    for device_type in device_types:
        key = DISPATCH_KEYS[device_type]
        with warnings.catch_warnings():
            # MMFAST_BACKEND=triton replaces the C++ CPU kernels on purpose; PyTorch warns that a
            # kernel is overridden.
            warnings.filterwarnings("ignore", message=".*Overriding a previously registered kernel.*")
            for stage in ("forward", "backward", "forward_with_grads"):
                # forward_with_grads: the losses' forward that also returns the gradients, where
                # the extension defines it (its C++ CPU kernel would bypass the Triton kernels).
                if stage == "forward" or hasattr(torch.ops.mmfast, f"{descriptor.name}_{stage}"):
                    _library.impl(f"{descriptor.name}_{stage}", _lazy_kernel(descriptor.triton, stage), key)
        _TRITON_KERNELS.add((descriptor.name, device_type))


@functools.cache
def install() -> None:
    """Registers every op's fakes and Triton kernels with the dispatcher (once, at import of
    `mmfast.ops`). Without the compiled extension there are no op schemas: the references run."""
    if not _backend.extension_loaded():
        return
    triton_installed = importlib.util.find_spec("triton") is not None
    triton_everywhere = _backend.requested_backend() == "triton"
    for op in _OPS.values():
        if not hasattr(torch.ops.mmfast, f"{op.name}_forward"):
            continue  # an extension built before the op existed: its reference runs
        op.register_fakes()
        if op.triton is None or not triton_installed:
            continue
        if triton_everywhere:
            _register_triton_kernels(op, tuple(DISPATCH_KEYS))
        else:
            # Also in an extension built without CUDA: the Triton kernels need no CUDA C++.
            _register_triton_kernels(op, ("cuda",))
