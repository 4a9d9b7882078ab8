"""Triton kernels for modality attention fusion (the definition is
`mmfast.ops.fusion_reference.attention_fusion_reference`).

Notation: inputs ``x_m [R, D_m]``, projections ``P_m [D_out, D_m]`` and ``p_m``, score weight
``S [M, sum D_m]`` and ``b``; ``w = softmax(cat(x) @ S.T + b)``, ``y_m = x_m @ P_m.T + p_m`` and
``out = sum_m w_m * y_m``.

Forward, one kernel: each program owns a ``[rows, D_out]`` output tile. It first computes the scores
of its rows with `tl.dot` (a K loop across the segments of the never-built concatenation, the M
scores padded to 16 columns) and their softmax, then accumulates ``sum_m w_m * (x_m @ P_m.T + p_m)``
segment by segment (one projection accumulator live at a time, scaled by ``w_m`` when its K loop
ends). It stores the output and the weights ``w [R, M]``, the only thing the backward needs besides
the inputs and the parameters.

Backward, four kernels, all GEMM parts with `tl.dot`:
1. ``G_m = dout @ P_m`` per ``[rows, columns of D_m]`` tile: stores ``w_m * G_m`` (the projection part
   of ``dx_m``) and this tile's share of ``dw_m = dout . y_m = sum_k x_m G_m + dout . p_m``.
2. ``ds = w * (dw - sum_m w_m dw_m)`` per row tile from those shares, then ``dx_m += ds @ S[:, m]``.
3. ``dP_m = (w_m dout).T @ x_m`` and ``dp_m = sum_rows w_m dout`` (reduction over rows, split across
   programs when needed).
4. ``dS = ds.T @ cat(x)`` and ``db = sum_rows ds``.
The column tiling of the ``D_m`` (``COLUMN_BLOCK``) is chosen by the launcher and shared by all four,
so the per-tile shares of kernel 1 have a fixed layout for kernel 2.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import triton
import triton.language as tl

from mmfast.triton._common import (
    INTERPRETED,
    check_dtype,
    check_input_count,
    check_rows,
    check_tensor,
    config,
    device_guard,
    dot_precision,
    pick,
    row_splits,
    rows_bucket,
    segment_of,
    select_configs,
)

__all__ = ["attention_fusion_forward", "attention_fusion_backward"]

# `tl.dot` needs at least 16 columns: the M scores are padded to this.
_MIN_SCORE_COLUMNS = 16

_FORWARD_CONFIGS = select_configs(
    [
        config(8, 3, BLOCK_R=128, BLOCK_O=64, BLOCK_K=32),
        config(8, 3, BLOCK_R=64, BLOCK_O=128, BLOCK_K=32),
        config(4, 4, BLOCK_R=64, BLOCK_O=64, BLOCK_K=32),
        config(4, 4, BLOCK_R=32, BLOCK_O=128, BLOCK_K=32),
        config(4, 3, BLOCK_R=16, BLOCK_O=128, BLOCK_K=32),
        config(4, 3, BLOCK_R=16, BLOCK_O=64, BLOCK_K=64),
    ],
    config(4, 1, BLOCK_R=16, BLOCK_O=16, BLOCK_K=16),
)

_INPUT_GRAD_CONFIGS = select_configs(
    [
        config(8, 3, BLOCK_R=128, BLOCK_O=32),
        config(4, 4, BLOCK_R=64, BLOCK_O=32),
        config(4, 3, BLOCK_R=64, BLOCK_O=64),
        config(4, 4, BLOCK_R=32, BLOCK_O=64),
        config(4, 3, BLOCK_R=16, BLOCK_O=64),
    ],
    config(4, 1, BLOCK_R=16, BLOCK_O=16),
)

_PROJ_WEIGHT_GRAD_CONFIGS = select_configs(
    [
        config(8, 3, BLOCK_O=128, BLOCK_R=32),
        config(8, 3, BLOCK_O=128, BLOCK_R=64),
        config(4, 4, BLOCK_O=64, BLOCK_R=32),
        config(4, 3, BLOCK_O=64, BLOCK_R=64),
    ],
    config(4, 1, BLOCK_O=16, BLOCK_R=16),
)

_SCORE_WEIGHT_GRAD_CONFIGS = select_configs(
    [
        config(4, 3, BLOCK_R=128),
        config(4, 3, BLOCK_R=64),
        config(4, 4, BLOCK_R=32),
    ],
    config(4, 1, BLOCK_R=16),
)

# Fixed (not autotuned) tiles of the score-gradient kernel, which is light.
_SCORE_GRAD_BLOCK_R = 16 if INTERPRETED else 64


def _prune_forward(configs, named_args, **kwargs):
    """Keep the configs whose two [rows, D_out] accumulators (output and current projection) fit in
    registers next to the operand tiles."""
    fitting = [c for c in configs if c.kwargs["BLOCK_R"] * c.kwargs["BLOCK_O"] <= 1024 * c.num_warps]
    return fitting or configs[-1:]


@triton.autotune(
    configs=_FORWARD_CONFIGS,
    key=["D_OUT", "D_TOTAL", "ROWS_BUCKET", "NUM_INPUTS", "HAS_PROJ_BIAS"],
    prune_configs_by={"early_config_prune": _prune_forward},
)
@triton.jit
def _attention_fusion_forward_kernel(
    XS,
    PWS,
    PBS,
    SW,
    SB,
    OUT,
    ATTN,
    DIMS,
    OFFSETS,
    R,
    D_OUT,
    D_TOTAL,
    ROWS_BUCKET,
    NUM_INPUTS: tl.constexpr,
    SCORES_PAD: tl.constexpr,
    HAS_PROJ_BIAS: tl.constexpr,
    HAS_SCORE_BIAS: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_O: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    tl.static_assert(BLOCK_R >= 16 and BLOCK_O >= 16 and BLOCK_K >= 16 and SCORES_PAD >= 16)
    rows = tl.program_id(0).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
    pid_o = tl.program_id(1).to(tl.int64)
    outs = pid_o * BLOCK_O + tl.arange(0, BLOCK_O)
    row_ok = rows < R
    out_ok = outs < D_OUT
    k_range = tl.arange(0, BLOCK_K)
    score_ids = tl.arange(0, SCORES_PAD)
    score_ok = score_ids < NUM_INPUTS

    # Scores of these rows: cat(x) @ S.T, segment by segment.
    scores = tl.zeros([BLOCK_R, SCORES_PAD], dtype=tl.float32)
    for segment in range(NUM_INPUTS):
        x_base = pick(XS, segment)
        dim = pick(DIMS, segment)
        s_base = SW + pick(OFFSETS, segment)
        for k_start in range(0, dim, BLOCK_K):
            ks = k_start + k_range
            k_ok = ks < dim
            x = tl.load(
                x_base + rows[:, None] * dim + ks[None, :], mask=row_ok[:, None] & k_ok[None, :], other=0.0
            )
            s = tl.load(
                s_base + score_ids[None, :] * D_TOTAL + ks[:, None],
                mask=k_ok[:, None] & score_ok[None, :],
                other=0.0,
            )
            scores = tl.dot(x, s, scores, input_precision=DOT_PRECISION)
    if HAS_SCORE_BIAS:
        scores += tl.load(SB + score_ids, mask=score_ok, other=0.0).to(tl.float32)[None, :]
    scores = tl.where(score_ok[None, :], scores, float("-inf"))
    exps = tl.exp(scores - tl.max(scores, axis=1)[:, None])
    weights = exps / tl.sum(exps, axis=1)[:, None]
    if pid_o == 0:
        tl.store(
            ATTN + rows[:, None] * NUM_INPUTS + score_ids[None, :],
            weights,
            mask=row_ok[:, None] & score_ok[None, :],
        )

    # sum_m w_m * (x_m @ P_m.T + p_m), one projection accumulator at a time.
    out = tl.zeros([BLOCK_R, BLOCK_O], dtype=tl.float32)
    for segment in range(NUM_INPUTS):
        x_base = pick(XS, segment)
        p_base = pick(PWS, segment)
        dim = pick(DIMS, segment)
        acc = tl.zeros([BLOCK_R, BLOCK_O], dtype=tl.float32)
        for k_start in range(0, dim, BLOCK_K):
            ks = k_start + k_range
            k_ok = ks < dim
            x = tl.load(
                x_base + rows[:, None] * dim + ks[None, :], mask=row_ok[:, None] & k_ok[None, :], other=0.0
            )
            p = tl.load(
                p_base + outs[None, :] * dim + ks[:, None], mask=k_ok[:, None] & out_ok[None, :], other=0.0
            )
            acc = tl.dot(x, p, acc, input_precision=DOT_PRECISION)
        if HAS_PROJ_BIAS:
            acc += tl.load(pick(PBS, segment) + outs, mask=out_ok, other=0.0).to(tl.float32)[None, :]
        weight = tl.sum(tl.where(score_ids[None, :] == segment, weights, 0.0), axis=1)
        out += weight[:, None] * acc
    tl.store(OUT + rows[:, None] * D_OUT + outs[None, :], out, mask=row_ok[:, None] & out_ok[None, :])


@triton.autotune(configs=_INPUT_GRAD_CONFIGS, key=["D_OUT", "D_TOTAL", "ROWS_BUCKET", "NUM_INPUTS"])
@triton.jit
def _attention_fusion_input_grad_kernel(
    GRAD_OUT,
    XS,
    PWS,
    PBS,
    ATTN,
    GRAD_XS,
    SHARES,
    DIMS,
    TILE_STARTS,
    R,
    D_OUT,
    D_TOTAL,
    TILES,
    ROWS_BUCKET,
    NUM_INPUTS: tl.constexpr,
    HAS_PROJ_BIAS: tl.constexpr,
    NEED_INPUTS: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    COLUMN_BLOCK: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_O: tl.constexpr,
):
    """Program (row tile, column tile t of the D_m): G = dout @ P_m[:, tile]; stores w_m * G into
    ``GRAD_XS[m]`` and ``SHARES[rows, t] = sum_k x_m * G`` (plus ``dout . p_m`` on the first tile)."""
    tl.static_assert(BLOCK_R >= 16 and BLOCK_O >= 16 and COLUMN_BLOCK >= 16)
    rows = tl.program_id(0).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
    tile = tl.program_id(1).to(tl.int64)
    segment = segment_of(tile, TILE_STARTS)
    first_tile = pick(TILE_STARTS, segment)
    dim = pick(DIMS, segment)
    p_base = pick(PWS, segment)
    row_ok = rows < R
    o_range = tl.arange(0, BLOCK_O).to(tl.int64)
    ks = (tile - first_tile) * COLUMN_BLOCK + tl.arange(0, COLUMN_BLOCK)
    k_ok = ks < dim

    acc = tl.zeros([BLOCK_R, COLUMN_BLOCK], dtype=tl.float32)
    for o_start in range(0, D_OUT, BLOCK_O):
        os = o_start + o_range
        o_ok = os < D_OUT
        grad = tl.load(
            GRAD_OUT + rows[:, None] * D_OUT + os[None, :], mask=row_ok[:, None] & o_ok[None, :], other=0.0
        )
        p = tl.load(p_base + os[:, None] * dim + ks[None, :], mask=o_ok[:, None] & k_ok[None, :], other=0.0)
        acc = tl.dot(grad, p, acc, input_precision=DOT_PRECISION)
    x = tl.load(
        pick(XS, segment) + rows[:, None] * dim + ks[None, :], mask=row_ok[:, None] & k_ok[None, :], other=0.0
    ).to(tl.float32)
    share = tl.sum(x * acc, axis=1)
    if HAS_PROJ_BIAS:
        if tile == first_tile:
            b_base = pick(PBS, segment)
            for o_start in range(0, D_OUT, BLOCK_O):
                os = o_start + o_range
                o_ok = os < D_OUT
                grad = tl.load(
                    GRAD_OUT + rows[:, None] * D_OUT + os[None, :],
                    mask=row_ok[:, None] & o_ok[None, :],
                    other=0.0,
                ).to(tl.float32)
                bias = tl.load(b_base + os, mask=o_ok, other=0.0).to(tl.float32)
                share += tl.sum(grad * bias[None, :], axis=1)
    tl.store(SHARES + rows * TILES + tile, share, mask=row_ok)
    if NEED_INPUTS:
        weight = tl.load(ATTN + rows * NUM_INPUTS + segment, mask=row_ok, other=0.0).to(tl.float32)
        tl.store(
            pick(GRAD_XS, segment) + rows[:, None] * dim + ks[None, :],
            weight[:, None] * acc,
            mask=row_ok[:, None] & k_ok[None, :],
        )


@triton.jit
def _attention_fusion_score_grad_kernel(
    ATTN,
    SHARES,
    SW,
    GRAD_XS,
    GRAD_SCORES,
    DIMS,
    OFFSETS,
    TILE_STARTS,
    R,
    D_TOTAL,
    TILES,
    NUM_INPUTS: tl.constexpr,
    SCORES_PAD: tl.constexpr,
    NEED_INPUTS: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    COLUMN_BLOCK: tl.constexpr,
    BLOCK_R: tl.constexpr,
):
    """Program (row tile, column tile t): ds of the rows from the shares of kernel 1 (tile 0 stores
    it) and, with NEED_INPUTS, ``GRAD_XS[m][:, tile] += ds @ S[:, tile]``."""
    tl.static_assert(BLOCK_R >= 16 and COLUMN_BLOCK >= 16 and SCORES_PAD >= 16)
    rows = tl.program_id(0).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
    tile = tl.program_id(1).to(tl.int64)
    row_ok = rows < R
    score_ids = tl.arange(0, SCORES_PAD)
    score_ok = score_ids < NUM_INPUTS

    # dw_m = dout . y_m, summed over the column tiles of segment m.
    dw = tl.zeros([BLOCK_R, SCORES_PAD], dtype=tl.float32)
    for segment in range(NUM_INPUTS):
        first = pick(TILE_STARTS, segment)
        total = tl.zeros([BLOCK_R], dtype=tl.float32)
        for t in range(first, first + tl.cdiv(pick(DIMS, segment), COLUMN_BLOCK)):
            total += tl.load(SHARES + rows * TILES + t, mask=row_ok, other=0.0)
        dw = tl.where(score_ids[None, :] == segment, total[:, None], dw)
    weights = tl.load(
        ATTN + rows[:, None] * NUM_INPUTS + score_ids[None, :],
        mask=row_ok[:, None] & score_ok[None, :],
        other=0.0,
    ).to(tl.float32)
    grad_scores = weights * (dw - tl.sum(weights * dw, axis=1)[:, None])
    if tile == 0:
        tl.store(
            GRAD_SCORES + rows[:, None] * NUM_INPUTS + score_ids[None, :],
            grad_scores,
            mask=row_ok[:, None] & score_ok[None, :],
        )

    if NEED_INPUTS:
        segment = segment_of(tile, TILE_STARTS)
        dim = pick(DIMS, segment)
        offset = pick(OFFSETS, segment)
        ks = (tile - pick(TILE_STARTS, segment)) * COLUMN_BLOCK + tl.arange(0, COLUMN_BLOCK)
        k_ok = ks < dim
        s = tl.load(
            SW + score_ids[:, None] * D_TOTAL + (offset + ks)[None, :],
            mask=score_ok[:, None] & k_ok[None, :],
            other=0.0,
        )
        extra = tl.dot(grad_scores.to(s.dtype), s, input_precision=DOT_PRECISION)
        pointers = pick(GRAD_XS, segment) + rows[:, None] * dim + ks[None, :]
        tile_ok = row_ok[:, None] & k_ok[None, :]
        partial = tl.load(pointers, mask=tile_ok, other=0.0).to(tl.float32)
        tl.store(pointers, partial + extra, mask=tile_ok)


@triton.autotune(
    configs=_PROJ_WEIGHT_GRAD_CONFIGS, key=["D_OUT", "D_TOTAL", "ROWS_BUCKET", "NUM_INPUTS", "NEED_WEIGHT"]
)
@triton.jit
def _attention_fusion_proj_grad_kernel(
    GRAD_OUT,
    XS,
    ATTN,
    GRAD_PW,
    GRAD_PB,
    DIMS,
    TILE_STARTS,
    R,
    D_OUT,
    D_TOTAL,
    ROWS_PER_SPLIT,
    ROWS_BUCKET,
    NUM_INPUTS: tl.constexpr,
    NEED_WEIGHT: tl.constexpr,
    NEED_BIAS: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    COLUMN_BLOCK: tl.constexpr,
    BLOCK_O: tl.constexpr,
    BLOCK_R: tl.constexpr,
):
    """Program (output tile, column tile t, split): dP_m[outs, tile] = (w_m dout).T @ x_m over the
    split's rows; the first tile of each segment also sums dp_m. Without NEED_WEIGHT the second grid
    axis is the segment. Partial sums go to ``[splits, ...]`` buffers, one per segment (float32 when
    split)."""
    tl.static_assert(BLOCK_O >= 16 and BLOCK_R >= 16 and COLUMN_BLOCK >= 16)
    outs = tl.program_id(0).to(tl.int64) * BLOCK_O + tl.arange(0, BLOCK_O)
    tile = tl.program_id(1).to(tl.int64)
    split = tl.program_id(2).to(tl.int64)
    if NEED_WEIGHT:
        segment = segment_of(tile, TILE_STARTS)
        first_tile = pick(TILE_STARTS, segment)
    else:
        segment = tile
        first_tile = tile
    dim = pick(DIMS, segment)
    x_base = pick(XS, segment)
    out_ok = outs < D_OUT
    ks = (tile - first_tile) * COLUMN_BLOCK + tl.arange(0, COLUMN_BLOCK)
    k_ok = ks < dim
    row_start = split * ROWS_PER_SPLIT
    row_end = tl.minimum(row_start + ROWS_PER_SPLIT, R)
    r_range = tl.arange(0, BLOCK_R)

    acc = tl.zeros([BLOCK_O, COLUMN_BLOCK], dtype=tl.float32)
    bias_acc = tl.zeros([BLOCK_O], dtype=tl.float32)
    for r_start in range(row_start, row_end, BLOCK_R):
        rs = r_start + r_range
        r_ok = rs < row_end
        grad = tl.load(
            GRAD_OUT + rs[:, None] * D_OUT + outs[None, :], mask=r_ok[:, None] & out_ok[None, :], other=0.0
        ).to(tl.float32)
        weight = tl.load(ATTN + rs * NUM_INPUTS + segment, mask=r_ok, other=0.0).to(tl.float32)
        scaled = grad * weight[:, None]
        if NEED_WEIGHT:
            x = tl.load(
                x_base + rs[:, None] * dim + ks[None, :], mask=r_ok[:, None] & k_ok[None, :], other=0.0
            )
            acc = tl.dot(tl.trans(scaled.to(x.dtype)), x, acc, input_precision=DOT_PRECISION)
        if NEED_BIAS:
            bias_acc += tl.sum(scaled, axis=0)
    if NEED_WEIGHT:
        tl.store(
            pick(GRAD_PW, segment) + split * D_OUT * dim + outs[:, None] * dim + ks[None, :],
            acc,
            mask=out_ok[:, None] & k_ok[None, :],
        )
    if NEED_BIAS:
        if tile == first_tile:
            tl.store(pick(GRAD_PB, segment) + split * D_OUT + outs, bias_acc, mask=out_ok)


@triton.autotune(
    configs=_SCORE_WEIGHT_GRAD_CONFIGS, key=["D_TOTAL", "ROWS_BUCKET", "NUM_INPUTS", "NEED_WEIGHT"]
)
@triton.jit
def _attention_fusion_score_weight_grad_kernel(
    GRAD_SCORES,
    XS,
    GRAD_SW,
    GRAD_SB,
    DIMS,
    OFFSETS,
    TILE_STARTS,
    R,
    D_TOTAL,
    ROWS_PER_SPLIT,
    ROWS_BUCKET,
    NUM_INPUTS: tl.constexpr,
    SCORES_PAD: tl.constexpr,
    NEED_WEIGHT: tl.constexpr,
    NEED_BIAS: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    COLUMN_BLOCK: tl.constexpr,
    BLOCK_R: tl.constexpr,
):
    """Program (column tile t, split): dS[:, tile] = ds.T @ x_m over the split's rows; tile 0 also
    sums db. Without NEED_WEIGHT there is one column tile."""
    tl.static_assert(BLOCK_R >= 16 and COLUMN_BLOCK >= 16 and SCORES_PAD >= 16)
    tile = tl.program_id(0).to(tl.int64)
    split = tl.program_id(1).to(tl.int64)
    segment = segment_of(tile, TILE_STARTS)
    dim = pick(DIMS, segment)
    x_base = pick(XS, segment)
    ks = (tile - pick(TILE_STARTS, segment)) * COLUMN_BLOCK + tl.arange(0, COLUMN_BLOCK)
    k_ok = ks < dim
    row_start = split * ROWS_PER_SPLIT
    row_end = tl.minimum(row_start + ROWS_PER_SPLIT, R)
    r_range = tl.arange(0, BLOCK_R)
    score_ids = tl.arange(0, SCORES_PAD)
    score_ok = score_ids < NUM_INPUTS

    acc = tl.zeros([SCORES_PAD, COLUMN_BLOCK], dtype=tl.float32)
    bias_acc = tl.zeros([SCORES_PAD], dtype=tl.float32)
    for r_start in range(row_start, row_end, BLOCK_R):
        rs = r_start + r_range
        r_ok = rs < row_end
        grad_scores = tl.load(
            GRAD_SCORES + rs[:, None] * NUM_INPUTS + score_ids[None, :],
            mask=r_ok[:, None] & score_ok[None, :],
            other=0.0,
        )
        if NEED_WEIGHT:
            x = tl.load(
                x_base + rs[:, None] * dim + ks[None, :], mask=r_ok[:, None] & k_ok[None, :], other=0.0
            )
            acc = tl.dot(tl.trans(grad_scores.to(x.dtype)), x, acc, input_precision=DOT_PRECISION)
        if NEED_BIAS:
            bias_acc += tl.sum(grad_scores, axis=0)
    if NEED_WEIGHT:
        tl.store(
            GRAD_SW
            + split * NUM_INPUTS * D_TOTAL
            + score_ids[:, None] * D_TOTAL
            + (pick(OFFSETS, segment) + ks)[None, :],
            acc,
            mask=score_ok[:, None] & k_ok[None, :],
        )
    if NEED_BIAS:
        if tile == 0:
            tl.store(GRAD_SB + split * NUM_INPUTS + score_ids, bias_acc, mask=score_ok)


class _Segments:
    """Shapes of the M segments: their dims, offsets in the concatenation and column tiles."""

    def __init__(self, dims: Sequence[int], column_block: int) -> None:
        self.dims = tuple(int(d) for d in dims)
        offsets, tile_starts = [], []
        offset = tiles = 0
        for dim in self.dims:
            offsets.append(offset)
            tile_starts.append(tiles)
            offset += dim
            tiles += triton.cdiv(dim, column_block)
        self.offsets = tuple(offsets)
        self.tile_starts = tuple(tile_starts)
        self.total = offset
        self.tiles = tiles
        self.column_block = column_block


def _sum_splits(partials: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The gradient from its ``[splits, ...]`` buffer: the buffer itself with one split, else the
    float32 partial sums added up."""
    return partials[0] if partials.shape[0] == 1 else partials.sum(0).to(dtype)


def _column_block(dims: Sequence[int]) -> int:
    """Width of the column tiles of the D_m in the backward kernels."""
    if INTERPRETED:
        return 16
    return max(16, min(64, triton.next_power_of_2(max(dims))))


def _check_args(
    xs: Sequence[torch.Tensor],
    proj_weights: Sequence[torch.Tensor],
    proj_biases: Sequence[torch.Tensor] | None,
    score_weight: torch.Tensor,
    score_bias: torch.Tensor | None,
) -> tuple[int, int]:
    """Validates the arguments; returns (R, D_out)."""
    check_input_count(len(xs), minimum=1)
    first = xs[0]
    check_dtype(first.dtype)
    if first.dim() != 2:
        raise ValueError(f"xs[0]: expected a 2-D tensor [R, D_0], got shape {tuple(first.shape)}")
    rows = first.shape[0]
    dtype, device = first.dtype, first.device
    check_rows("xs", xs, rows, dtype, device)
    count = len(xs)
    if len(proj_weights) != count:
        raise ValueError(f"proj_weights: expected {count} tensors (one per input), got {len(proj_weights)}")
    if proj_weights[0].dim() != 2:
        raise ValueError(
            f"proj_weights[0]: expected a 2-D tensor [D_out, D_0], got {tuple(proj_weights[0].shape)}"
        )
    out_dim = proj_weights[0].shape[0]
    for index, (x, weight) in enumerate(zip(xs, proj_weights)):
        check_tensor(f"proj_weights[{index}]", weight, dtype, device, shape=(out_dim, x.shape[1]))
    if proj_biases is not None:
        if len(proj_biases) != count:
            raise ValueError(f"proj_biases: expected {count} tensors (one per input), got {len(proj_biases)}")
        for index, bias in enumerate(proj_biases):
            check_tensor(f"proj_biases[{index}]", bias, dtype, device, shape=(out_dim,))
    total = sum(x.shape[1] for x in xs)
    check_tensor("score_weight", score_weight, dtype, device, shape=(count, total))
    if score_bias is not None:
        check_tensor("score_bias", score_bias, dtype, device, shape=(count,))
    return rows, out_dim


def _scores_pad(count: int) -> int:
    return max(_MIN_SCORE_COLUMNS, triton.next_power_of_2(count))


def attention_fusion_forward(
    xs: Sequence[torch.Tensor],
    proj_weights: Sequence[torch.Tensor],
    proj_biases: Sequence[torch.Tensor] | None,
    score_weight: torch.Tensor,
    score_bias: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fused modality attention fusion of M = 1..8 row-major inputs ``[R, D_m]``.

    Args:
        xs: the inputs, contiguous ``[R, D_m]``, one dtype (float32, float16 or bfloat16) and device.
        proj_weights: ``P_m [D_out, D_m]``.
        proj_biases: ``p_m [D_out]`` each, or None.
        score_weight: ``[M, sum D_m]``.
        score_bias: ``[M]`` or None.

    Returns:
        ``(out [R, D_out], attn [R, M])`` in the input dtype; ``attn`` is the softmax over modalities,
        which `attention_fusion_backward` takes.
    """
    xs, proj_weights = list(xs), list(proj_weights)
    proj_biases = None if proj_biases is None else list(proj_biases)
    rows, out_dim = _check_args(xs, proj_weights, proj_biases, score_weight, score_bias)
    count = len(xs)
    segments = _Segments([x.shape[1] for x in xs], column_block=16)
    out = xs[0].new_empty((rows, out_dim))
    attn = xs[0].new_empty((rows, count))
    if rows == 0:
        return out, attn

    def grid(meta):
        return (triton.cdiv(rows, meta["BLOCK_R"]), triton.cdiv(max(out_dim, 1), meta["BLOCK_O"]))

    with device_guard(out.device):
        _attention_fusion_forward_kernel[grid](
            tuple(xs),
            tuple(proj_weights),
            None if proj_biases is None else tuple(proj_biases),
            score_weight,
            score_bias,
            out,
            attn,
            segments.dims,
            segments.offsets,
            rows,
            out_dim,
            segments.total,
            rows_bucket(rows),
            NUM_INPUTS=count,
            SCORES_PAD=_scores_pad(count),
            HAS_PROJ_BIAS=proj_biases is not None,
            HAS_SCORE_BIAS=score_bias is not None,
            DOT_PRECISION=dot_precision(out.dtype),
        )
    return out, attn


def attention_fusion_backward(
    grad_out: torch.Tensor,
    xs: Sequence[torch.Tensor],
    proj_weights: Sequence[torch.Tensor],
    proj_biases: Sequence[torch.Tensor] | None,
    score_weight: torch.Tensor,
    attn: torch.Tensor,
    needs_grad: tuple[bool, bool, bool, bool, bool],
) -> tuple[
    list[torch.Tensor] | None,
    list[torch.Tensor] | None,
    list[torch.Tensor] | None,
    torch.Tensor | None,
    torch.Tensor | None,
]:
    """Gradients of `attention_fusion_forward`.

    Args:
        grad_out: ``[R, D_out]``, the gradient of ``out``.
        xs, proj_weights, proj_biases, score_weight: as given to the forward.
        attn: the second output of the forward.
        needs_grad: which of (xs, proj_weights, proj_biases, score_weight, score_bias) need a
            gradient; the others (and the projection biases when they are None) come back as None.

    Returns:
        ``(grad_xs, grad_proj_weights, grad_proj_biases, grad_score_weight, grad_score_bias)``, the
        first three as lists with one tensor per input.
    """
    xs, proj_weights = list(xs), list(proj_weights)
    proj_biases = None if proj_biases is None else list(proj_biases)
    need_inputs, need_proj_weight, need_proj_bias, need_score_weight, need_score_bias = needs_grad
    need_proj_bias = need_proj_bias and proj_biases is not None
    rows, out_dim = _check_args(xs, proj_weights, proj_biases, score_weight, None)
    count = len(xs)
    dtype, device = xs[0].dtype, xs[0].device
    grad_out = grad_out.contiguous()
    check_tensor("grad_out", grad_out, dtype, device, shape=(rows, out_dim))
    check_tensor("attn", attn, dtype, device, shape=(rows, count))
    segments = _Segments([x.shape[1] for x in xs], _column_block([x.shape[1] for x in xs]))
    need_score_grad = need_inputs or need_score_weight or need_score_bias
    precision = dot_precision(dtype)
    scores_pad = _scores_pad(count)
    column_block = segments.column_block
    tensors = tuple(xs)

    grad_xs = grad_proj_weights = grad_proj_biases = grad_score_weight = grad_score_bias = None
    if rows == 0:
        return _zero_grads(xs, proj_weights, score_weight, out_dim, needs_grad)

    with device_guard(device):
        if need_score_grad:
            grad_xs = [torch.empty_like(x) for x in xs] if need_inputs else None
            shares = torch.empty((rows, segments.tiles), dtype=torch.float32, device=device)
            grad_scores = torch.empty((rows, count), dtype=torch.float32, device=device)

            def input_grid(meta):
                return (triton.cdiv(rows, meta["BLOCK_R"]), segments.tiles)

            _attention_fusion_input_grad_kernel[input_grid](
                grad_out,
                tensors,
                tuple(proj_weights),
                None if proj_biases is None else tuple(proj_biases),
                attn,
                None if grad_xs is None else tuple(grad_xs),
                shares,
                segments.dims,
                segments.tile_starts,
                rows,
                out_dim,
                segments.total,
                segments.tiles,
                rows_bucket(rows),
                NUM_INPUTS=count,
                HAS_PROJ_BIAS=proj_biases is not None,
                NEED_INPUTS=need_inputs,
                DOT_PRECISION=precision,
                COLUMN_BLOCK=column_block,
            )
            score_grid = (triton.cdiv(rows, _SCORE_GRAD_BLOCK_R), segments.tiles if need_inputs else 1)
            _attention_fusion_score_grad_kernel[score_grid](
                attn,
                shares,
                score_weight,
                None if grad_xs is None else tuple(grad_xs),
                grad_scores,
                segments.dims,
                segments.offsets,
                segments.tile_starts,
                rows,
                segments.total,
                segments.tiles,
                NUM_INPUTS=count,
                SCORES_PAD=scores_pad,
                NEED_INPUTS=need_inputs,
                DOT_PRECISION=precision,
                COLUMN_BLOCK=column_block,
                BLOCK_R=_SCORE_GRAD_BLOCK_R,
                num_warps=4,
            )

        if need_proj_weight or need_proj_bias:
            tiles = segments.tiles if need_proj_weight else count
            splits, rows_per_split = row_splits(rows, triton.cdiv(out_dim, 64) * tiles, device)
            target_dtype = dtype if splits == 1 else torch.float32
            # One buffer per modality: the gradients must not share storage (custom ops may not
            # return aliasing tensors).
            weight_targets = (
                tuple(
                    torch.empty((splits, out_dim, d), dtype=target_dtype, device=device)
                    for d in segments.dims
                )
                if need_proj_weight
                else None
            )
            bias_targets = (
                tuple(torch.empty((splits, out_dim), dtype=target_dtype, device=device) for _ in xs)
                if need_proj_bias
                else None
            )

            def proj_grid(meta):
                return (triton.cdiv(out_dim, meta["BLOCK_O"]), tiles, splits)

            _attention_fusion_proj_grad_kernel[proj_grid](
                grad_out,
                tensors,
                attn,
                weight_targets,
                bias_targets,
                segments.dims,
                segments.tile_starts,
                rows,
                out_dim,
                segments.total,
                rows_per_split,
                rows_bucket(rows_per_split),
                NUM_INPUTS=count,
                NEED_WEIGHT=need_proj_weight,
                NEED_BIAS=need_proj_bias,
                DOT_PRECISION=precision,
                COLUMN_BLOCK=column_block,
            )
            if need_proj_weight:
                grad_proj_weights = [_sum_splits(target, dtype) for target in weight_targets]
            if need_proj_bias:
                grad_proj_biases = [_sum_splits(target, dtype) for target in bias_targets]

        if need_score_weight or need_score_bias:
            tiles = segments.tiles if need_score_weight else 1
            splits, rows_per_split = row_splits(rows, tiles, device)
            target_dtype = dtype if splits == 1 else torch.float32
            weight_target = (
                torch.empty((splits, count, segments.total), dtype=target_dtype, device=device)
                if need_score_weight
                else None
            )
            bias_target = (
                torch.empty((splits, count), dtype=target_dtype, device=device) if need_score_bias else None
            )
            _attention_fusion_score_weight_grad_kernel[lambda meta: (tiles, splits)](
                grad_scores,
                tensors,
                weight_target,
                bias_target,
                segments.dims,
                segments.offsets,
                segments.tile_starts,
                rows,
                segments.total,
                rows_per_split,
                rows_bucket(rows_per_split),
                NUM_INPUTS=count,
                SCORES_PAD=scores_pad,
                NEED_WEIGHT=need_score_weight,
                NEED_BIAS=need_score_bias,
                DOT_PRECISION=precision,
                COLUMN_BLOCK=column_block,
            )
            if need_score_weight:
                grad_score_weight = _sum_splits(weight_target, dtype)
            if need_score_bias:
                grad_score_bias = _sum_splits(bias_target, dtype)
    return grad_xs, grad_proj_weights, grad_proj_biases, grad_score_weight, grad_score_bias


def _zero_grads(xs, proj_weights, score_weight, out_dim, needs_grad):
    """Gradients for zero rows: the inputs are empty and every parameter gradient is zero."""
    need_inputs, need_proj_weight, need_proj_bias, need_score_weight, need_score_bias = needs_grad
    return (
        [torch.zeros_like(x) for x in xs] if need_inputs else None,
        [torch.zeros_like(p) for p in proj_weights] if need_proj_weight else None,
        [score_weight.new_zeros(out_dim) for _ in xs] if need_proj_bias else None,
        torch.zeros_like(score_weight) if need_score_weight else None,
        score_weight.new_zeros(len(xs)) if need_score_bias else None,
    )
