"""Memory of a training step on the CPU, counted exactly: what autograd holds after the forward, and
the peak of a forward + backward step. The demo compares the fused model with its reference twin by
these; ``bench/held_memory.py`` compares every op in a small training graph.

There is no allocator statistic to read on a CPU (``torch.cuda.max_memory_allocated`` has no CPU
twin), and the resident set size is an estimate blurred by the C library's caching. The profiler's
allocation events are exact: every allocation and free of the c10 CPU allocator (ATen's, the C++
kernels', oneDNN's scratchpads), with its address and time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

_MEASURED = "mmfast.train.memory.measured_step"


def saved_tensor_bytes(forward: Callable[[], Any], caller_holds: Iterable[torch.Tensor]) -> tuple[int, Any]:
    """Bytes of every storage autograd saves while `forward` runs, each counted once (a view and its
    base are one storage), other than the storages of `caller_holds` (the batch, the parameters:
    they exist anyway). Returns them with `forward`'s result; the saved tensors live as long as that
    result's graph."""
    existing = {t.untyped_storage().data_ptr() for t in caller_holds}
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in existing:
            storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        result = forward()
    return sum(storages.values()), result


def step_memory(
    step: Callable[[], None],
    parameters: Iterable[torch.Tensor],
    warmup_steps: int = 3,
) -> dict[str, int]:
    """Peak and kept bytes of one call of `step` (a forward + backward), after `warmup_steps` calls.

    The gradients of `parameters` are set to None before the measured call, as ``zero_grad()``
    does, so that it allocates them. Counted from the first warm-up call on: what the warm-up calls
    left allocated (first-use tuning results, scratch buffers reused from step to step, primitive
    caches) counts towards the peak, as it does in a training loop.

    Returns ``peak``, the most bytes allocated at any moment of the measured call, and ``kept``,
    the bytes still allocated after it other than the parameters' gradients.
    """
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile, record_function

    parameters = list(parameters)

    def zero_grad() -> None:
        for p in parameters:
            p.grad = None

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        for _ in range(warmup_steps):
            zero_grad()
            step()
        zero_grad()
        with record_function(_MEASURED):
            step()
    allocations, window = [], None
    pending = list(prof.profiler.kineto_results.experimental_event_tree())
    while pending:
        event = pending.pop()
        if event.tag == _EventType.Allocation:
            fields = event.extra_fields
            allocations.append((event.start_time_ns, fields.alloc_size, fields.ptr))
        elif event.name == _MEASURED:
            window = (event.start_time_ns, event.end_time_ns)
        pending.extend(event.children)
    if window is None:
        raise RuntimeError("step_memory: the profiler recorded no measured step")
    live: dict[int, int] = {}
    allocated = peak = 0
    for time_ns, size, ptr in sorted(allocations):
        if size > 0:
            live[ptr] = size
            allocated += size
        elif ptr in live:  # frees of blocks that existed before profiling are not ours to count
            allocated -= live.pop(ptr)
        if window[0] <= time_ns <= window[1]:
            peak = max(peak, allocated)
    gradients = sum(p.grad.untyped_storage().nbytes() for p in parameters if p.grad is not None)
    return {"peak": peak, "kept": allocated - gradients}
