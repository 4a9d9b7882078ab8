"""The CPU GEMM tuner of the compiled ops, in-process.

Every GEMM the CPU kernels run (a *site*, named ``"<op>.<gemm>"``, e.g. ``"concat_linear.forward"``)
offers several engines: ATen's GEMM, oneDNN's with fused post-ops, mmfast's own pass for a few rows,
and so on (:func:`engines`). At the first call of a size class (m, n and k exact up to 16, then
rounded up to a power of two) each engine the site offers is timed and the fastest is remembered
for the process. This module reads and sets that state:

* :func:`engines` lists every engine name;
* :func:`force` makes every site run one engine where it offers it (the plain ATen path where it
  does not), untimed; ``with force("onednn"): ...`` restores the previous state on leaving;
* :func:`choices` lists the choices remembered so far, with each candidate's best time;
* :func:`reset` forgets them, so that the next calls time their candidates again;
* :func:`scratch_bytes` and :func:`release_scratch` count and free the engine's scratch buffers.

Where a GEMM reads several input segments as one matrix, the engine gathers them into a scratch
buffer that each thread keeps from call to call, the size of the largest concatenation that
thread has gathered: allocated afresh each call, the fused layers' forward ran 1.1-1.6x slower at
batch 64 on a 2-core AMD EPYC Zen 5 (page faults on fresh memory). One buffer serves every fused layer, so a
model pays it once, not once per layer as eager code's ``torch.cat`` results are;
:func:`release_scratch` gives it back (after a large-batch evaluation, say).

The environment sets the initial state: ``MMFAST_CPU_GEMM=<engine>`` forces an engine from the first
GEMM on (an unknown value makes every GEMM raise a ValueError naming the valid ones, until
:func:`force` replaces it), and ``MMFAST_CPU_GEMM_VERBOSE=1`` prints each choice to stderr. Under
``torch.use_deterministic_algorithms(True)`` every site runs the plain ATen path, neither timed nor
remembered. All of this is shared by the threads of the process.

Every function raises RuntimeError when the compiled extension is not loaded (the ops then run
their pure-PyTorch references, which have no GEMM engines).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import TracebackType

import torch

from mmfast import _backend

__all__ = ["GemmChoice", "choices", "engines", "force", "forced", "release_scratch", "reset", "scratch_bytes"]

_DTYPES = {
    "Float": torch.float32,
    "Double": torch.float64,
    "BFloat16": torch.bfloat16,
    "Half": torch.float16,
}


def _extension():
    if not _backend.extension_loaded():
        raise RuntimeError(
            "mmfast.ops.cpu_gemm needs the compiled extension, which is not loaded "
            f"({_backend.load_error()}): the ops run their pure-PyTorch references, without GEMM engines"
        )
    from mmfast import _C

    return _C


@dataclass(frozen=True)
class GemmChoice:
    """One remembered choice of the tuner."""

    site: str
    """The GEMM site, ``"<op>.<gemm>"``, e.g. ``"concat_linear.forward"``."""
    m: int
    """Size class of the rows (exact up to 16, then the next power of two)."""
    n: int
    """Size class of the output columns."""
    k: int
    """Size class of the reduction."""
    dtype: torch.dtype
    variant: int
    """Site-specific part of the key (fused activation, bias present, number of inputs, ...)."""
    engine: str
    """The engine chosen: one of :func:`engines`."""
    shape: tuple[int, int, int]
    """The exact (m, n, k) of the call that was timed."""
    best_seconds: dict[str, float] = field(default_factory=dict)
    """Each candidate the site offered and could run, in its order: best time in seconds."""


def engines() -> tuple[str, ...]:
    """Every CPU GEMM engine name any site offers, in the C++ table's order (csrc/engine/gemm.h)."""
    return tuple(_extension().cpu_gemm_engines())


def forced() -> str | None:
    """The engine forced on every site, or None when the tuner chooses.

    Raises ValueError while an unknown ``MMFAST_CPU_GEMM`` value is in force."""
    return _extension().cpu_gemm_forced()


class _Forcing:
    """Returned by :func:`force`: already in effect; as a context manager it restores the previous
    state on leaving."""

    def __init__(self, name: str | None) -> None:
        self.engine = name
        self.previous = _extension().cpu_gemm_force(name)

    def restore(self) -> None:
        """Puts back the engine forced before (or none)."""
        _extension().cpu_gemm_force(self.previous)

    def __enter__(self) -> _Forcing:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.restore()

    def __repr__(self) -> str:
        return f"cpu_gemm.force({self.engine!r})"


def force(name: str | None) -> _Forcing:
    """Makes every GEMM site run engine ``name`` where it offers it, the plain ATen path where it
    does not (and oneDNN's engine only for dtypes oneDNN runs), untimed and not remembered;
    ``None`` or ``"auto"`` lets the tuner choose again. Takes effect at once, for every thread, and
    replaces what ``MMFAST_CPU_GEMM`` asked for.

    Used as ``with force("segment_gemv"): ...`` it restores the previous state on leaving (none
    forced if an unknown ``MMFAST_CPU_GEMM`` value was in force). Raises ValueError, changing
    nothing, for a name not in :func:`engines`."""
    return _Forcing(name)


def choices() -> list[GemmChoice]:
    """The choices the tuner has remembered, oldest first (forced and deterministic-mode calls make
    none)."""
    return [
        GemmChoice(
            site=entry["site"],
            m=entry["m"],
            n=entry["n"],
            k=entry["k"],
            dtype=_DTYPES.get(entry["dtype"], entry["dtype"]),
            variant=entry["variant"],
            engine=entry["engine"],
            shape=tuple(entry["shape"]),
            best_seconds=dict(entry["best_seconds"]),
        )
        for entry in _extension().cpu_gemm_choices()
    ]


def reset() -> None:
    """Forgets every remembered choice: the next call of each size class times its candidates again.
    A forced engine stays forced."""
    _extension().cpu_gemm_reset()


def scratch_bytes() -> int:
    """Bytes the engine's scratch buffers hold now, every thread's together (the gathered
    concatenations of the fused layers' GEMMs, kept for reuse by the next call)."""
    return int(_extension().cpu_scratch_bytes())


def release_scratch() -> int:
    """Frees every thread's scratch buffers and returns the bytes released; the next fused call
    allocates what it needs again. Safe while ops run: a buffer in use is freed when its op is done."""
    return int(_extension().cpu_scratch_release())
