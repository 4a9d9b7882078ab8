"""Triton kernels of concat_linear and their autotune configs; the launchers, and what each kernel
computes, are in `mmfast.triton.concat_linear`."""

from __future__ import annotations

import triton
import triton.language as tl

from mmfast.triton._activation_kernels import activation_backward, activation_forward
from mmfast.triton._common import config, pick, segment_of, select_configs

# GEMM tiles in the usual range for sm_80 / sm_90 (128 x 128 down to 32 x 64 outputs, 32- or
# 64-deep K steps), plus narrow-row ones for batch sizes of a few dozen rows.
_FORWARD_CONFIGS = select_configs(
    [
        config(8, 3, BLOCK_R=128, BLOCK_N=128, BLOCK_K=32),
        config(4, 4, BLOCK_R=128, BLOCK_N=64, BLOCK_K=32),
        config(4, 4, BLOCK_R=64, BLOCK_N=128, BLOCK_K=32),
        config(4, 4, BLOCK_R=64, BLOCK_N=64, BLOCK_K=64),
        config(4, 4, BLOCK_R=32, BLOCK_N=64, BLOCK_K=64),
        config(4, 4, BLOCK_R=16, BLOCK_N=128, BLOCK_K=64),
        config(4, 3, BLOCK_R=16, BLOCK_N=64, BLOCK_K=64),
    ],
    config(4, 1, BLOCK_R=16, BLOCK_N=16, BLOCK_K=16),
)

_INPUT_GRAD_CONFIGS = select_configs(
    [
        config(8, 3, BLOCK_R=128, BLOCK_K=128, BLOCK_N=32),
        config(4, 4, BLOCK_R=128, BLOCK_K=64, BLOCK_N=32),
        config(4, 4, BLOCK_R=64, BLOCK_K=128, BLOCK_N=32),
        config(4, 4, BLOCK_R=64, BLOCK_K=64, BLOCK_N=64),
        config(4, 4, BLOCK_R=32, BLOCK_K=64, BLOCK_N=64),
        config(4, 3, BLOCK_R=16, BLOCK_K=64, BLOCK_N=64),
    ],
    config(4, 1, BLOCK_R=16, BLOCK_K=16, BLOCK_N=16),
)

# The weight gradient's K tile (COLUMN_BLOCK, `weight_grad_column_block`) is fixed by the launcher,
# which maps tiles to segments; these tune the output rows (N) and the depth of the reduction.
_WEIGHT_GRAD_CONFIGS = select_configs(
    [
        config(8, 3, BLOCK_N=128, BLOCK_R=32),
        config(4, 4, BLOCK_N=64, BLOCK_R=32),
        config(4, 4, BLOCK_N=64, BLOCK_R=64),
        config(4, 3, BLOCK_N=32, BLOCK_R=64),
    ],
    config(4, 1, BLOCK_N=16, BLOCK_R=16),
)


# What ptxas reported for these lists (`python -m mmfast.triton.aot`, sm_80 and sm_90, in
# bench/TRITON_AOT.md) decides the pruning below: two kinds of launches spill with some tiles.
# - float32 with IEEE dots (PyTorch's default matmul precision) runs `tl.dot` on FMA units, whose
#   operands live in registers: large or deep tiles spill.
# - widths, offsets or K not multiples of 16 elements make every load scalar, one 64-bit address
#   per element: only small tiles fit.
def _float32_ieee(named_args, kwargs) -> bool:
    return named_args["GRAD_PRE" if "GRAD_PRE" in named_args else "W"].element_size() == 4 and (
        kwargs["DOT_PRECISION"] == "ieee"
    )


def _unaligned(named_args, *dims: str) -> bool:
    values = [*named_args.get("WIDTHS", ()), *named_args.get("OFFSETS", ()), *(named_args[d] for d in dims)]
    return any(value % 16 for value in values)


def _keep(configs, wanted):
    """The configs ``wanted`` (a predicate) keeps, or the smallest one when it keeps none."""
    kept = [c for c in configs if wanted(c.kwargs, c.num_warps, c.num_stages)]
    return kept or [min(configs, key=lambda c: _tile_elements(c.kwargs))]


def _tile_elements(blocks) -> int:
    size = 1
    for name, value in blocks.items():
        if name != "BLOCK_K":
            size *= value
    return size


def _prune_forward(configs, named_args, **kwargs):
    if _common_interpreted():
        return configs
    if _unaligned(named_args, "K_TOTAL"):
        # 32 x 64 output tiles for 16-bit inputs, 16 x 64 for float32 (TF32 spills at 32 x 64 too).
        limit = 1024 if named_args["W"].element_size() == 4 else 2048
        return _keep(configs, lambda b, w, s: b["BLOCK_K"] == 64 and b["BLOCK_N"] <= 64
                     and b["BLOCK_R"] * b["BLOCK_N"] <= limit)  # fmt: skip
    if _float32_ieee(named_args, kwargs):
        # At most 128 x 64 outputs with 32-deep K steps, or 16 x 64 with 64-deep ones.
        return _keep(
            configs, lambda b, w, s: b["BLOCK_R"] * b["BLOCK_N"] <= (8192 if b["BLOCK_K"] == 32 else 1024)
        )
    return configs


def _prune_input_grad(configs, named_args, **kwargs):
    if _common_interpreted() or not _float32_ieee(named_args, kwargs):
        return configs
    # 64 x 128 with 32-deep N steps, or 16 x 64.
    return _keep(
        configs,
        lambda b, w, s: (b["BLOCK_R"], b["BLOCK_K"]) == (64, 128) or b["BLOCK_R"] * b["BLOCK_K"] <= 1024,
    )


def _prune_weight_grad(configs, named_args, **kwargs):
    if _common_interpreted():
        return configs
    if not _float32_ieee(named_args, kwargs):
        if _unaligned(named_args, "K_TOTAL"):
            # 32-row reduction steps: triton 3.8 spills 16-bit 32 x 64-row steps on sm_90.
            return _keep(configs, lambda b, w, s: b["BLOCK_R"] == 32)
        return configs
    # 128 x 32 outputs over 8 warps, 32-row reduction steps (the columns: `weight_grad_column_block`).
    return _keep(configs, lambda b, w, s: b["BLOCK_R"] == 32 and w == 8)


def _common_interpreted() -> bool:
    from mmfast.triton._common import INTERPRETED

    return INTERPRETED


def weight_grad_column_block(widths, element_size: int, dot_precision: str) -> int:
    """The weight gradient's column tile (fixed by the launcher, which maps tiles to segments): 64
    columns, 32 for narrow inputs (each segment's last tile is partly masked) and for float32 with
    IEEE dots (64 spills there)."""
    if min(widths) < 64 or (element_size == 4 and dot_precision == "ieee"):
        return 32
    return 64


# Elements per program of the activation-gradient pass.
ACTIVATION_GRAD_BLOCK = 1024


@triton.autotune(
    configs=_FORWARD_CONFIGS,
    key=["N", "K_TOTAL", "ROWS_BUCKET", "NUM_INPUTS", "ACTIVATION", "STORE_PRE"],
    prune_configs_by={"early_config_prune": _prune_forward},
)
@triton.jit
def concat_linear_forward_kernel(
    XS,
    WIDTHS,
    OFFSETS,
    W,
    B,
    OUT,
    PRE,
    R,
    N,
    K_TOTAL,
    ROWS_BUCKET,
    NUM_INPUTS: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    ACTIVATION: tl.constexpr,
    STORE_PRE: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """Program (row tile, output tile): the K loop runs over every segment in turn, reading
    ``XS[m]`` and the columns ``OFFSETS[m] ..`` of ``W`` (never a concatenation); the epilogue adds
    the bias, stores the pre-activation when asked and applies the activation."""
    tl.static_assert(BLOCK_R >= 16 and BLOCK_N >= 16 and BLOCK_K >= 16)
    rows = tl.program_id(0).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = tl.program_id(1).to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < R
    col_ok = cols < N
    k_range = tl.arange(0, BLOCK_K)

    acc = tl.zeros([BLOCK_R, BLOCK_N], dtype=tl.float32)
    for segment in range(NUM_INPUTS):
        x_base = pick(XS, segment)
        width = pick(WIDTHS, segment)
        offset = pick(OFFSETS, segment)
        for k_start in range(0, width, BLOCK_K):
            ks = k_start + k_range
            k_ok = ks < width
            x = tl.load(
                x_base + rows[:, None] * width + ks[None, :], mask=row_ok[:, None] & k_ok[None, :], other=0.0
            )
            w = tl.load(
                W + cols[None, :] * K_TOTAL + (offset + ks)[:, None],
                mask=k_ok[:, None] & col_ok[None, :],
                other=0.0,
            )
            acc = tl.dot(x, w, acc, input_precision=DOT_PRECISION)
    if HAS_BIAS:
        acc += tl.load(B + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
    tile = rows[:, None] * N + cols[None, :]
    tile_ok = row_ok[:, None] & col_ok[None, :]
    if STORE_PRE:
        tl.store(PRE + tile, acc, mask=tile_ok)
    tl.store(OUT + tile, activation_forward(acc, ACTIVATION), mask=tile_ok)


@triton.jit
def concat_linear_activation_grad_kernel(
    GRAD_OUT, SAVED, GRAD_PRE, COUNT, ACTIVATION: tl.constexpr, BLOCK: tl.constexpr
):
    """``GRAD_PRE = GRAD_OUT * act'(SAVED)``, element-wise (float32 math, stored in the input dtype)."""
    offsets = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    ok = offsets < COUNT
    grad = tl.load(GRAD_OUT + offsets, mask=ok, other=0.0).to(tl.float32)
    saved = tl.load(SAVED + offsets, mask=ok, other=0.0).to(tl.float32)
    tl.store(GRAD_PRE + offsets, activation_backward(grad, saved, ACTIVATION), mask=ok)


@triton.autotune(
    configs=_INPUT_GRAD_CONFIGS,
    key=["N", "K_TOTAL", "ROWS_BUCKET"],
    prune_configs_by={"early_config_prune": _prune_input_grad},
)
@triton.jit
def concat_linear_input_grad_kernel(
    GRAD_PRE,
    W,
    GRAD_INPUT,
    R,
    N,
    K_TOTAL,
    ROWS_BUCKET,
    DOT_PRECISION: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    """Program (row tile, input-column tile): ``GRAD_INPUT = GRAD_PRE @ W``, the gradient of every
    segment at its columns of one ``[R, K_TOTAL]`` result (the op returns it whole; autograd hands
    each input its slice)."""
    tl.static_assert(BLOCK_R >= 16 and BLOCK_K >= 16 and BLOCK_N >= 16)
    rows = tl.program_id(0).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
    ks = tl.program_id(1).to(tl.int64) * BLOCK_K + tl.arange(0, BLOCK_K)
    row_ok = rows < R
    k_ok = ks < K_TOTAL
    n_range = tl.arange(0, BLOCK_N)

    acc = tl.zeros([BLOCK_R, BLOCK_K], dtype=tl.float32)
    for n_start in range(0, N, BLOCK_N):
        ns = n_start + n_range
        n_ok = ns < N
        grad = tl.load(
            GRAD_PRE + rows[:, None] * N + ns[None, :], mask=row_ok[:, None] & n_ok[None, :], other=0.0
        )
        w = tl.load(W + ns[:, None] * K_TOTAL + ks[None, :], mask=n_ok[:, None] & k_ok[None, :], other=0.0)
        acc = tl.dot(grad, w, acc, input_precision=DOT_PRECISION)
    tl.store(GRAD_INPUT + rows[:, None] * K_TOTAL + ks[None, :], acc, mask=row_ok[:, None] & k_ok[None, :])


@triton.autotune(
    configs=_WEIGHT_GRAD_CONFIGS,
    key=["N", "K_TOTAL", "ROWS_BUCKET", "NUM_INPUTS", "NEED_WEIGHT"],
    prune_configs_by={"early_config_prune": _prune_weight_grad},
)
@triton.jit
def concat_linear_weight_grad_kernel(
    GRAD_PRE,
    XS,
    WIDTHS,
    OFFSETS,
    TILE_STARTS,
    GRAD_W,
    GRAD_B,
    R,
    N,
    K_TOTAL,
    ROWS_PER_SPLIT,
    SPLITS,
    ROWS_BUCKET,
    NUM_INPUTS: tl.constexpr,
    NEED_WEIGHT: tl.constexpr,
    NEED_BIAS: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    COLUMN_BLOCK: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_R: tl.constexpr,
):
    """Program (output tile, column tile t, split): ``GRAD_PRE[rows].T @ XS[m][rows, tile]`` for the
    segment m whose column tiles (``TILE_STARTS``) hold t, stored at that segment's columns of the
    weight gradient; the programs of the first column tile also sum the bias gradient.

    With SPLITS > 1 the partial sums go to float32 workspaces ``[SPLITS, ...]`` that the launcher
    adds up; with one split they are the gradients themselves."""
    tl.static_assert(BLOCK_N >= 16 and BLOCK_R >= 16 and COLUMN_BLOCK >= 16)
    ns = tl.program_id(0).to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)
    tile = tl.program_id(1).to(tl.int64)
    split = tl.program_id(2).to(tl.int64)
    n_ok = ns < N
    segment = segment_of(tile, TILE_STARTS)
    width = pick(WIDTHS, segment)
    ks = (tile - pick(TILE_STARTS, segment)) * COLUMN_BLOCK + tl.arange(0, COLUMN_BLOCK)
    k_ok = ks < width
    x_base = pick(XS, segment)
    row_start = split * ROWS_PER_SPLIT
    row_end = tl.minimum(row_start + ROWS_PER_SPLIT, R)
    r_range = tl.arange(0, BLOCK_R)

    acc = tl.zeros([BLOCK_N, COLUMN_BLOCK], dtype=tl.float32)
    bias_acc = tl.zeros([BLOCK_N], dtype=tl.float32)
    for r_start in range(row_start, row_end, BLOCK_R):
        rs = r_start + r_range
        r_ok = rs < row_end
        grad = tl.load(
            GRAD_PRE + rs[:, None] * N + ns[None, :], mask=r_ok[:, None] & n_ok[None, :], other=0.0
        )
        if NEED_WEIGHT:
            x = tl.load(
                x_base + rs[:, None] * width + ks[None, :], mask=r_ok[:, None] & k_ok[None, :], other=0.0
            )
            acc = tl.dot(tl.trans(grad), x, acc, input_precision=DOT_PRECISION)
        if NEED_BIAS:
            # Summed by every program (cheap next to the dot), stored by those of the first tile.
            bias_acc += tl.sum(grad.to(tl.float32), axis=0)
    if NEED_WEIGHT:
        columns = pick(OFFSETS, segment) + ks
        tl.store(
            GRAD_W + split * N * K_TOTAL + ns[:, None] * K_TOTAL + columns[None, :],
            acc,
            mask=n_ok[:, None] & k_ok[None, :],
        )
    if NEED_BIAS:
        if tile == 0:
            tl.store(GRAD_B + split * N + ns, bias_acc, mask=n_ok)
