"""Triton kernels for concat_linear (the definition is `mmfast.ops.concat_linear_reference`):
``act(cat(x_1..x_M) @ W.T + b)`` without the concatenation.

Forward, one kernel: each program owns a ``[rows, outputs]`` tile; its K loop runs over the segments
in turn, reading each input through its own pointer and the matching columns of ``W`` (a K loop
across the segments of the never-built concatenation), accumulating in float32 whatever the input
dtype; the epilogue adds the bias, stores the pre-activation when the backward will need it (gelu,
gelu_tanh, silu) and applies the activation.

Backward, up to three kernels: ``G = dout * act'(saved)`` (element-wise, skipped for no
activation), ``dX = G @ W`` (one `tl.dot` GEMM; each input's gradient is its slice of the columns)
and ``dW[:, segment m] = G.T @ x_m`` per column tile of each segment, with the bias gradient
``sum_rows G`` summed by the same programs (a reduction over rows, split across programs when the
output tiles alone cannot fill the GPU).

Engines. Each call runs one of two engines for its stage (forward, backward):
- ``triton``: the kernels above;
- ``aten``: ATen's GEMMs (cuBLAS on CUDA) on the gathered inputs, the activation through PyTorch in
  the forward and through the element-wise kernel above in the backward; it also serves what the
  kernels do not take (float64, more than `MAX_INPUTS` non-empty inputs).
On CUDA the faster is chosen by timing both at the first call of a size class (rows rounded up to
a power of two, the inputs' widths, N, dtype, activation, bias) and remembered for the process, as
the CPU kernels' GEMM tuner does. ``MMFAST_CUDA_GEMM=triton|aten`` (read at each choice) or
`force_engine` fixes the engine; `choices` shows what was decided. In triton's interpreter (CPU
tensors, tests) the Triton kernels always run; under ``torch.use_deterministic_algorithms(True)``
the ``aten`` engine does (timed choices can differ between processes).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence

import torch
import triton

from mmfast.ops.activations import NEEDS_PREACTIVATION, apply_activation, check_activation
from mmfast.triton import MAX_INPUTS
from mmfast.triton._activation_kernels import activation_id
from mmfast.triton._common import INTERPRETED, device_guard, dot_precision, row_splits, rows_bucket
from mmfast.triton._concat_linear_kernels import (
    ACTIVATION_GRAD_BLOCK,
    concat_linear_activation_grad_kernel,
    concat_linear_forward_kernel,
    concat_linear_input_grad_kernel,
    concat_linear_weight_grad_kernel,
    weight_grad_column_block,
)

__all__ = ["ENGINES", "backward", "choices", "force_engine", "forward", "reset_choices"]

# The engines a call can run, the default candidate first.
ENGINES: tuple[str, ...] = ("aten", "triton")
_TRITON_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
ENGINE_VARIABLE = "MMFAST_CUDA_GEMM"

_choices: dict[tuple, str] = {}
_forced: str | None = None


def force_engine(name: str | None) -> contextlib.AbstractContextManager:
    """Runs ``name`` (one of `ENGINES`; None or "auto": the timed choice) for every call, in place of
    what ``MMFAST_CUDA_GEMM`` says, until the returned context manager exits (or for good when it
    is not used as one)."""
    global _forced
    if name is not None and name != "auto" and name not in ENGINES:
        raise ValueError(f"engine: expected one of {', '.join(ENGINES)} or 'auto', got {name!r}")
    previous, _forced = _forced, (None if name in (None, "auto") else name)

    @contextlib.contextmanager
    def restore() -> Iterator[None]:
        global _forced
        try:
            yield
        finally:
            _forced = previous

    return restore()


def choices() -> dict[tuple, str]:
    """The engine chosen per size class so far: ``(stage, rows bucket, widths, N, dtype, activation,
    variant) -> engine``."""
    return dict(_choices)


def reset_choices() -> None:
    """Forgets the timed choices (the next call of each size class times again)."""
    _choices.clear()


def _requested_engine() -> str | None:
    if _forced is not None:
        return _forced
    value = os.environ.get(ENGINE_VARIABLE, "").strip().lower()
    if value in ("", "auto"):
        return None
    if value not in ENGINES:
        raise ValueError(f"{ENGINE_VARIABLE}: expected one of {', '.join(ENGINES)} or 'auto', got {value!r}")
    return value


def _choose(key: tuple, device: torch.device, candidates: dict[str, callable]) -> str:
    """The engine for ``key``: forced, the only candidate, or the faster of the two timed once."""
    requested = _requested_engine()
    if requested is not None and requested in candidates:
        return requested
    if len(candidates) == 1:
        return next(iter(candidates))
    if INTERPRETED:
        return "triton"
    if torch.are_deterministic_algorithms_enabled():
        return ENGINES[0]
    if key in _choices:
        return _choices[key]
    if device.type != "cuda" or torch.cuda.is_current_stream_capturing():
        return "triton"  # no timing inside a CUDA graph capture; the choice waits for an eager call
    times = {name: triton.testing.do_bench(run, warmup=5, rep=20) for name, run in candidates.items()}
    _choices[key] = min(times, key=times.get)
    return _choices[key]


class _Segments:
    """The non-empty inputs as contiguous ``[rows, D_m]`` matrices, their widths and their column
    offsets in the concatenation (empty inputs contribute nothing: they are left out)."""

    def __init__(self, inputs: Sequence[torch.Tensor]):
        self.leading = list(inputs[0].shape[:-1])
        self.rows = 1
        for size in self.leading:
            self.rows *= size
        self.in_features = sum(x.shape[-1] for x in inputs)
        self.xs: list[torch.Tensor] = []
        self.widths: list[int] = []
        self.offsets: list[int] = []
        offset = 0
        for x in inputs:
            width = x.shape[-1]
            if width > 0:
                self.xs.append(x.reshape(self.rows, width).contiguous())
                self.widths.append(width)
                self.offsets.append(offset)
            offset += width

    @classmethod
    def unread(cls, rows: int, in_features: int) -> _Segments:
        """The shape of inputs the call does not read (a backward without weight gradient): one
        segment of ``in_features`` columns, no tensors."""
        segments = cls.__new__(cls)
        segments.leading, segments.rows, segments.in_features = [rows], rows, in_features
        segments.xs, segments.widths, segments.offsets = [], [in_features], [0]
        return segments

    def tile_starts(self, column_block: int) -> tuple[int, ...]:
        return _tile_starts(self.widths, column_block)


def _tile_starts(widths: Sequence[int], column_block: int) -> tuple[int, ...]:
    """First column tile of each segment, tiles of ``column_block`` columns, then the tile count."""
    starts, tiles = [], 0
    for width in widths:
        starts.append(tiles)
        tiles += triton.cdiv(width, column_block)
    return (*starts, tiles)


def _triton_runs(segments: _Segments, dtype: torch.dtype) -> bool:
    return dtype in _TRITON_DTYPES and 1 <= len(segments.widths) <= MAX_INPUTS


def _size_class(stage: str, segments: _Segments, weight: torch.Tensor, activation: str, variant) -> tuple:
    return (
        stage,
        rows_bucket(segments.rows),
        tuple(segments.widths),
        weight.shape[0],
        weight.dtype,
        activation,
        variant,
    )


# ----- forward


def _forward_aten(segments, weight, bias, activation, keep):
    x = segments.xs[0] if len(segments.xs) == 1 else torch.cat(segments.xs, dim=1)
    pre = torch.addmm(bias, x, weight.t()) if bias is not None else torch.mm(x, weight.t())
    out = apply_activation(pre, activation)
    return out, pre if keep else None


def _forward_triton(segments, weight, bias, activation, keep):
    rows, out_features = segments.rows, weight.shape[0]
    out = weight.new_empty((rows, out_features))
    pre = weight.new_empty((rows, out_features)) if keep else None

    def grid(meta):
        return (triton.cdiv(rows, meta["BLOCK_R"]), triton.cdiv(out_features, meta["BLOCK_N"]))

    with device_guard(out.device):
        concat_linear_forward_kernel[grid](
            tuple(segments.xs),
            tuple(segments.widths),
            tuple(segments.offsets),
            weight,
            bias,
            out,
            pre,
            rows,
            out_features,
            segments.in_features,
            rows_bucket(rows),
            NUM_INPUTS=len(segments.xs),
            HAS_BIAS=bias is not None,
            ACTIVATION=activation_id(activation),
            STORE_PRE=keep,
            DOT_PRECISION=dot_precision(weight.dtype),
        )
    return out, pre


def forward(
    inputs: Sequence[torch.Tensor],
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    activation: str,
    save_for_backward: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(output [*, N], saved)`` like ``mmfast::concat_linear_forward`` (its C++ composite has
    checked the arguments): ``saved`` is the pre-activation when ``save_for_backward`` and the
    activation's gradient reads it (gelu, gelu_tanh, silu), else empty."""
    check_activation(activation)
    segments = _Segments(inputs)
    weight = weight.contiguous()
    bias = None if bias is None else bias.contiguous()
    out_features = weight.shape[0]
    keep = save_for_backward and activation in NEEDS_PREACTIVATION
    shape = [*segments.leading, out_features]
    if segments.rows == 0 or out_features == 0:
        out = weight.new_empty(shape)
        return out, weight.new_empty(shape if keep else [0])
    candidates = {"aten": lambda: _forward_aten(segments, weight, bias, activation, keep)}
    if _triton_runs(segments, weight.dtype):
        candidates["triton"] = lambda: _forward_triton(segments, weight, bias, activation, keep)
    key = _size_class("forward", segments, weight, activation, (bias is not None, keep))
    out, pre = candidates[_choose(key, weight.device, candidates)]()
    return out.view(shape), pre.view(shape) if keep else weight.new_empty([0])


# ----- backward


def _activation_grad(grad2d: torch.Tensor, saved: torch.Tensor, activation: str) -> torch.Tensor:
    """``dout * act'(saved)``: the element-wise kernel, or PyTorch's autograd of the definition for
    float64 (which the kernels do not take)."""
    if activation == "none":
        return grad2d
    saved2d = saved.reshape(grad2d.shape).contiguous()
    if grad2d.dtype not in _TRITON_DTYPES:
        if activation in NEEDS_PREACTIVATION:
            pre = saved2d.detach().requires_grad_()
            with torch.enable_grad():
                return torch.autograd.grad(apply_activation(pre, activation), pre, grad2d)[0]
        # relu, sigmoid, tanh: the derivative in terms of the output y.
        derivative = {
            "relu": lambda y: (y > 0).to(y.dtype),
            "sigmoid": lambda y: y * (1 - y),
            "tanh": lambda y: 1 - y * y,
        }
        return grad2d * derivative[activation](saved2d)
    grad_pre = torch.empty_like(grad2d)
    count = grad2d.numel()
    with device_guard(grad2d.device):
        concat_linear_activation_grad_kernel[(triton.cdiv(count, ACTIVATION_GRAD_BLOCK),)](
            grad2d,
            saved2d,
            grad_pre,
            count,
            ACTIVATION=activation_id(activation),
            BLOCK=ACTIVATION_GRAD_BLOCK,
        )
    return grad_pre


def _backward_aten(grad_pre, segments, weight, needs):
    need_input, need_weight, need_bias = needs
    grad_input = torch.mm(grad_pre, weight) if need_input else None
    grad_weight = None
    if need_weight:
        grad_weight = weight.new_zeros(weight.shape)
        for x, width, offset in zip(segments.xs, segments.widths, segments.offsets, strict=True):
            grad_weight[:, offset : offset + width] = torch.mm(grad_pre.t(), x)
    grad_bias = grad_pre.sum(0) if need_bias else None
    return grad_input, grad_weight, grad_bias


def _column_block(widths: Sequence[int], dtype: torch.dtype) -> int:
    """The weight gradient's column tile: `weight_grad_column_block`'s; 16 in the interpreter, so
    that small test inputs span several tiles."""
    if INTERPRETED:
        return 16
    return weight_grad_column_block(widths, torch.empty((), dtype=dtype).element_size(), dot_precision(dtype))


def _weight_grad_tiles(out_features: int, column_tiles: int) -> int:
    """Output tiles of the weight-gradient kernel, counted at 64 x 64 as `row_splits` expects."""
    return triton.cdiv(out_features, 64) * column_tiles


def _backward_triton(grad_pre, segments, weight, needs):
    need_input, need_weight, need_bias = needs
    rows, (out_features, in_features) = grad_pre.shape[0], weight.shape
    dtype, device = weight.dtype, weight.device
    precision = dot_precision(dtype)
    grad_input = grad_weight = grad_bias = None
    with device_guard(device):
        if need_input:
            grad_input = weight.new_empty((rows, in_features))

            def input_grid(meta):
                return (triton.cdiv(rows, meta["BLOCK_R"]), triton.cdiv(in_features, meta["BLOCK_K"]))

            concat_linear_input_grad_kernel[input_grid](
                grad_pre,
                weight,
                grad_input,
                rows,
                out_features,
                in_features,
                rows_bucket(rows),
                DOT_PRECISION=precision,
            )
        if need_weight or need_bias:
            column_block = _column_block(segments.widths, dtype)
            tile_starts = segments.tile_starts(column_block)
            column_tiles = tile_starts[-1] if need_weight else 1
            splits, rows_per_split = row_splits(rows, _weight_grad_tiles(out_features, column_tiles), device)
            target_dtype = dtype if splits == 1 else torch.float32
            weight_target = (
                torch.zeros((splits, out_features, in_features), dtype=target_dtype, device=device)
                if need_weight
                else None
            )
            bias_target = (
                torch.empty((splits, out_features), dtype=target_dtype, device=device) if need_bias else None
            )

            def weight_grid(meta):
                return (triton.cdiv(out_features, meta["BLOCK_N"]), column_tiles, splits)

            # Without a weight gradient the inputs are not read (nor kept by autograd): any pointer.
            xs = tuple(segments.xs) if need_weight else (grad_pre,)
            concat_linear_weight_grad_kernel[weight_grid](
                grad_pre,
                xs,
                tuple(segments.widths),
                tuple(segments.offsets),
                tile_starts,
                weight_target,
                bias_target,
                rows,
                out_features,
                in_features,
                rows_per_split,
                splits,
                rows_bucket(rows_per_split),
                NUM_INPUTS=len(xs),
                NEED_WEIGHT=need_weight,
                NEED_BIAS=need_bias,
                DOT_PRECISION=precision,
                COLUMN_BLOCK=column_block,
            )
            if need_weight:
                grad_weight = weight_target[0] if splits == 1 else weight_target.sum(0).to(dtype)
            if need_bias:
                grad_bias = bias_target[0] if splits == 1 else bias_target.sum(0).to(dtype)
    return grad_input, grad_weight, grad_bias


def backward(
    grad_output: torch.Tensor,
    inputs: Sequence[torch.Tensor],
    weight: torch.Tensor,
    saved: torch.Tensor,
    activation: str,
    output_mask: Sequence[bool],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(grad_input [*, sum D_i], grad_weight, grad_bias)`` like ``mmfast::concat_linear_backward``
    (empty tensors for the gradients not asked for). ``inputs`` are read only for the weight
    gradient (autograd keeps them only then); ``saved`` is the pre-activation (gelu, gelu_tanh,
    silu) or the output (relu, sigmoid, tanh)."""
    check_activation(activation)
    need_input, need_weight, need_bias = (bool(m) for m in output_mask)
    weight = weight.contiguous()
    out_features, in_features = weight.shape
    leading = list(grad_output.shape[:-1])
    rows = 1
    for size in leading:
        rows *= size
    empty = grad_output.new_empty([0])
    if rows == 0 or out_features == 0:
        return (
            grad_output.new_zeros([*leading, in_features]) if need_input else empty,
            weight.new_zeros(weight.shape) if need_weight else empty,
            weight.new_zeros([out_features]) if need_bias else empty,
        )
    if not (need_input or need_weight or need_bias):
        return empty, empty, empty
    grad2d = grad_output.reshape(rows, out_features).contiguous()
    segments = _Segments(inputs) if need_weight else _Segments.unread(rows, in_features)
    grad_pre = _activation_grad(grad2d, saved, activation)
    needs = (need_input, need_weight, need_bias)
    candidates = {"aten": lambda: _backward_aten(grad_pre, segments, weight, needs)}
    if _triton_runs(segments, weight.dtype):
        candidates["triton"] = lambda: _backward_triton(grad_pre, segments, weight, needs)
    key = _size_class("backward", segments, weight, activation, needs)
    grad_input, grad_weight, grad_bias = candidates[_choose(key, weight.device, candidates)]()
    return (
        grad_input.view([*leading, in_features]) if need_input else empty,
        grad_weight if need_weight else empty,
        grad_bias if need_bias else empty,
    )


# ----- ahead-of-time compilation (`python -m mmfast.triton.aot`)

# (input widths, out_features, rows): the fused classifier head of the benchmarks, and narrow
# unaligned inputs at a small batch.
_AOT_SHAPES = (((768, 512, 128), 512, 1024), ((100, 28), 60, 64))
# The GEMM kernels compile once per activation: the ones with the most live registers in their
# epilogue (and none). The element-wise gradient kernel compiles for every activation.
_AOT_FORWARD_ACTIVATIONS = ("none", "gelu", "gelu_tanh")


def aot_cases():
    """The launches of `forward` and `backward` with the Triton engine (every gradient, with a bias)
    for every dtype, as `mmfast.triton.aot` compiles them."""
    from mmfast.ops.activations import ACTIVATIONS
    from mmfast.triton import aot

    for widths, out_features, rows in _AOT_SHAPES:
        in_features = sum(widths)
        offsets = tuple(sum(widths[:i]) for i in range(len(widths)))
        shape = f"widths={list(widths)} N={out_features} R={rows}"
        for variant in aot.variants():
            p = aot.Ptr(variant.dtype)
            column_block = weight_grad_column_block(widths, p.element_size(), variant.precision)
            tile_starts = _tile_starts(widths, column_block)
            splits, rows_per_split = row_splits(
                rows,
                _weight_grad_tiles(out_features, tile_starts[-1]),
                None,
                multiprocessors=aot.MULTIPROCESSORS,
            )
            cases = dict(label=shape, dtype=variant.name)
            for activation in _AOT_FORWARD_ACTIVATIONS:
                keep = activation in NEEDS_PREACTIVATION
                yield from aot.launch_cases(
                    concat_linear_forward_kernel,
                    dict(
                        XS=(p,) * len(widths),
                        WIDTHS=widths,
                        OFFSETS=offsets,
                        W=p,
                        B=p,
                        OUT=p,
                        PRE=p if keep else None,
                        R=rows,
                        N=out_features,
                        K_TOTAL=in_features,
                        ROWS_BUCKET=rows_bucket(rows),
                        NUM_INPUTS=len(widths),
                        HAS_BIAS=True,
                        ACTIVATION=activation_id(activation),
                        STORE_PRE=keep,
                        DOT_PRECISION=variant.precision,
                    ),
                    label=f"{shape} {activation}",
                    dtype=variant.name,
                )
            yield from aot.launch_cases(
                concat_linear_input_grad_kernel,
                dict(
                    GRAD_PRE=p,
                    W=p,
                    GRAD_INPUT=p,
                    R=rows,
                    N=out_features,
                    K_TOTAL=in_features,
                    ROWS_BUCKET=rows_bucket(rows),
                    DOT_PRECISION=variant.precision,
                ),
                **cases,
            )
            target = p if splits == 1 else aot.Ptr("float32")
            yield from aot.launch_cases(
                concat_linear_weight_grad_kernel,
                dict(
                    GRAD_PRE=p,
                    XS=(p,) * len(widths),
                    WIDTHS=widths,
                    OFFSETS=offsets,
                    TILE_STARTS=tile_starts,
                    GRAD_W=target,
                    GRAD_B=target,
                    R=rows,
                    N=out_features,
                    K_TOTAL=in_features,
                    ROWS_PER_SPLIT=rows_per_split,
                    SPLITS=splits,
                    ROWS_BUCKET=rows_bucket(rows_per_split),
                    NUM_INPUTS=len(widths),
                    NEED_WEIGHT=True,
                    NEED_BIAS=True,
                    DOT_PRECISION=variant.precision,
                    COLUMN_BLOCK=column_block,
                ),
                **cases,
            )
            if variant.precision == "ieee" and widths == _AOT_SHAPES[0][0]:  # no tl.dot in it
                for activation in ACTIVATIONS[1:]:
                    yield from aot.launch_cases(
                        concat_linear_activation_grad_kernel,
                        dict(
                            GRAD_OUT=p,
                            SAVED=p,
                            GRAD_PRE=p,
                            COUNT=rows * out_features,
                            ACTIVATION=activation_id(activation),
                            BLOCK=ACTIVATION_GRAD_BLOCK,
                        ),
                        label=f"{shape} {activation}",
                        dtype=variant.name,
                        num_warps=4,
                    )
