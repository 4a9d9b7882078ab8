"""What the Triton launchers share: interpreter detection, autotune config lists, dot precision,
row splits of the weight-gradient reductions and argument checks.

This module imports triton; import it only after `mmfast.triton.is_available()` said yes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch
import triton
import triton.language as tl

from mmfast.triton import MAX_INPUTS

# Smallest tile side that `tl.dot` accepts on NVIDIA GPUs. The interpreter accepts smaller ones,
# so the configs check it themselves.
MIN_DOT_BLOCK = 16

# Reductions over rows (weight and bias gradients) are split across programs when the output tile
# grid alone cannot fill the GPU; each split handles at least this many rows.
_MIN_ROWS_PER_SPLIT = 256


def interpreting() -> bool:
    """Whether `@triton.jit` builds interpreted kernels now (``TRITON_INTERPRET=1`` when they decorate)."""
    return bool(triton.knobs.runtime.interpret)


# Decided once, when the kernel modules (which import this one first) decorate their kernels.
INTERPRETED = interpreting()


def select_configs(
    gpu_configs: list[triton.Config], interpreter_config: triton.Config
) -> list[triton.Config]:
    """The autotune list: the GPU configs, or the single interpreter config (the interpreter fails
    when the autotuner benchmarks several)."""
    configs = [interpreter_config] if INTERPRETED else gpu_configs
    for config in configs:
        for name, value in config.kwargs.items():
            if name.startswith("BLOCK_") and value < MIN_DOT_BLOCK:
                raise ValueError(f"autotune config {config}: {name}={value} is below {MIN_DOT_BLOCK}")
    return configs


def config(num_warps: int, num_stages: int, **blocks: int) -> triton.Config:
    return triton.Config(blocks, num_warps=num_warps, num_stages=num_stages)


# The kinds of `tl.dot` a kernel runs, which need different tiles to stay in registers: 16-bit
# operands on tensor cores, float32 with TF32 dots (tensor cores, float32 operand tiles), float32
# with IEEE dots and float64 (FMA, with the widest register footprint).
DOT_KINDS = ("16-bit", "tf32", "fp32", "fp64")


def dot_kind(element_size: int, precision: str) -> str:
    """The `DOT_KINDS` entry of operands of ``element_size`` bytes with ``DOT_PRECISION`` ``precision``."""
    if element_size <= 2:
        return "16-bit"
    if element_size >= 8:
        return "fp64"
    return "tf32" if precision == "tf32" else "fp32"


def config_key(c: triton.Config) -> tuple:
    """What tells two configs apart: their tiles, warps and stages."""
    return (tuple(sorted(c.kwargs.items())), c.num_warps, c.num_stages)


def unique_configs(groups: dict[str, list[triton.Config]]) -> list[triton.Config]:
    """Every config of ``groups`` (dot kind -> configs) once, in order."""
    unique: dict[tuple, triton.Config] = {}
    for kind, group in groups.items():
        if kind not in DOT_KINDS:
            raise ValueError(f"unknown dot kind {kind!r}; expected one of {DOT_KINDS}")
        for c in group:
            unique.setdefault(config_key(c), c)
    return list(unique.values())


def configs_by_dot(
    groups: dict[str, list[triton.Config]], interpreter_config: triton.Config
) -> list[triton.Config]:
    """The autotune list of a kernel whose configs depend on its `dot_kind`: `unique_configs` of
    ``groups``, or the interpreter config (`select_configs`). The kernel's prune keeps those of the
    launch's kind (`configs_for_dot`)."""
    return select_configs(unique_configs(groups), interpreter_config)


def configs_for_dot(
    configs: Sequence[triton.Config], groups: dict[str, list[triton.Config]], kind: str
) -> list[triton.Config]:
    """The configs of the autotune list ``configs`` that ``groups`` has for dot kind ``kind`` (all of
    them when it has none, as for the interpreter's single config)."""
    wanted = {config_key(c) for c in groups.get(kind, ())}
    return [c for c in configs if config_key(c) in wanted] or list(configs)


def dot_precision(dtype: torch.dtype) -> str:
    """`tl.dot` precision for float32 operands, following PyTorch's matmul setting (TF32 only when
    `torch.set_float32_matmul_precision` allows it), so fused and eager results agree."""
    if dtype == torch.float32 and not INTERPRETED and torch.get_float32_matmul_precision() != "highest":
        return "tf32"
    return "ieee"


def device_guard(device: torch.device) -> contextlib.AbstractContextManager:
    """Makes ``device`` current for the launch: Triton launches on the current CUDA device."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def rows_bucket(rows: int) -> int:
    """Autotune key for the row count: powers of two, so a changing batch does not retune each time."""
    return min(triton.next_power_of_2(max(rows, 1)), 1 << 16)


def row_splits(
    rows: int, output_tiles: int, device: torch.device | None, multiprocessors: int | None = None
) -> tuple[int, int]:
    """(number of splits, rows per split) for a reduction over ``rows`` whose output has
    ``output_tiles`` tiles (counted at 64 x 64), on ``device`` or, when given, on a GPU with
    ``multiprocessors`` SMs (the ahead-of-time cases, `mmfast.triton.aot`)."""
    if rows <= 0:
        return 1, max(rows, 1)
    if INTERPRETED and multiprocessors is None:
        # Small on purpose: the tests cover both the direct and the split path.
        wanted = 2 if rows >= 32 else 1
    else:
        if multiprocessors is None:
            multiprocessors = torch.cuda.get_device_properties(device).multi_processor_count
        programs = 2 * multiprocessors
        wanted = min(triton.cdiv(programs, max(output_tiles, 1)), triton.cdiv(rows, _MIN_ROWS_PER_SPLIT))
    splits = max(1, wanted)
    rows_per_split = triton.cdiv(rows, splits)
    return triton.cdiv(rows, rows_per_split), rows_per_split


def check_rows(
    name: str, tensors: Sequence[torch.Tensor], rows: int, dtype: torch.dtype, device, cols: int | None = None
) -> None:
    """Every tensor is 2-D, ``[rows, cols]`` (any cols when None), contiguous, of ``dtype`` on ``device``."""
    for index, tensor in enumerate(tensors):
        label = f"{name}[{index}]"
        if tensor.dim() != 2 or tensor.shape[0] != rows:
            raise ValueError(
                f"{label}: expected a 2-D tensor with {rows} rows, got shape {tuple(tensor.shape)}"
            )
        if cols is not None and tensor.shape[1] != cols:
            raise ValueError(f"{label}: expected {cols} features like {name}[0], got {tensor.shape[1]}")
        check_tensor(label, tensor, dtype, device)


def check_tensor(name: str, tensor: torch.Tensor, dtype: torch.dtype, device, shape=None) -> None:
    if shape is not None and tuple(tensor.shape) != tuple(shape):
        raise ValueError(f"{name}: expected shape {tuple(shape)}, got {tuple(tensor.shape)}")
    if tensor.dtype != dtype:
        raise ValueError(f"{name}: expected dtype {dtype}, got {tensor.dtype}")
    if tensor.device != device:
        raise ValueError(f"{name}: expected device {device}, got {tensor.device}")
    if not tensor.is_contiguous():
        raise ValueError(f"{name}: expected a contiguous tensor (the caller makes inputs contiguous)")


def check_input_count(count: int, minimum: int) -> None:
    if not minimum <= count <= MAX_INPUTS:
        raise ValueError(f"xs: the Triton kernels take {minimum} to {MAX_INPUTS} inputs, got {count}")


def check_dtype(dtype: torch.dtype) -> None:
    if dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(f"xs: expected float32, float16 or bfloat16 tensors, got {dtype}")


def as_rows(inputs: Sequence[torch.Tensor]) -> tuple[list[int], list[torch.Tensor]]:
    """The leading dims of ``inputs [*, D_m]`` and the inputs as contiguous ``[rows, D_m]``
    matrices: the op schemas take any leading dims, the kernels row-major matrices."""
    leading = list(inputs[0].shape[:-1])
    return leading, [x.reshape(-1, x.shape[-1]).contiguous() for x in inputs]


@triton.jit
def pick(values, index):
    """``values[index]`` for a tuple of kernel arguments (pointers or ints) and a run-time index.

    Compiles to a chain of selects, so loops over the modalities stay run-time loops: one copy of
    the loop body whatever M is, instead of M unrolled copies that would compete for registers."""
    picked = values[0]
    for i in tl.static_range(1, len(values)):
        picked = tl.where(index == i, values[i], picked)
    return picked


@triton.jit
def segment_of(tile, tile_starts):
    """Index of the segment whose column tiles (starting at the increasing ``tile_starts``) hold ``tile``."""
    segment = tile * 0
    for i in tl.static_range(1, len(tile_starts)):
        segment += (tile >= tile_starts[i]).to(segment.dtype)
    return segment
