"""Triton kernels of modality attention fusion and their autotune configs; the launchers, and what
each kernel computes, are in `mmfast.triton.attention_fusion`."""

from __future__ import annotations

import triton
import triton.language as tl

from mmfast.triton._common import (
    INTERPRETED,
    config,
    configs_by_dot,
    configs_for_dot,
    dot_kind,
    pick,
    segment_of,
    select_configs,
)

# `tl.dot` needs at least 16 columns: the M scores are padded to this.
MIN_SCORE_COLUMNS = 16

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

# The backward's GPU configs per dot kind (`_common.dot_kind`). Every one was compiled ahead of time
# for sm_80 and sm_90 at the launches of `mmfast.triton.attention_fusion.aot_cases` (`make
# triton-aot`) and spills nothing; IEEE float32 dots run on FMA, which spills the larger tiles.
_INPUT_GRAD_TILES = [
    config(8, 3, BLOCK_R=128, BLOCK_O=32),
    config(4, 4, BLOCK_R=64, BLOCK_O=32),
    config(4, 3, BLOCK_R=16, BLOCK_O=64),
]
_INPUT_GRAD_MMA_TILES = [
    *_INPUT_GRAD_TILES,
    config(4, 3, BLOCK_R=64, BLOCK_O=64),
    config(4, 4, BLOCK_R=32, BLOCK_O=64),
]
_INPUT_GRAD_GPU_CONFIGS = {
    "16-bit": [*_INPUT_GRAD_TILES, config(4, 4, BLOCK_R=32, BLOCK_O=64)],  # 64 x 64: spills on sm_80 (3.8)
    "tf32": _INPUT_GRAD_MMA_TILES,
    "fp32": [*_INPUT_GRAD_TILES, config(4, 3, BLOCK_R=32, BLOCK_O=32), config(4, 3, BLOCK_R=64, BLOCK_O=16)],
}
_INPUT_GRAD_CONFIGS = configs_by_dot(_INPUT_GRAD_GPU_CONFIGS, config(4, 1, BLOCK_R=16, BLOCK_O=16))

_PROJ_GRAD_TILES = [
    config(8, 3, BLOCK_O=128, BLOCK_R=32),
    config(8, 3, BLOCK_O=128, BLOCK_R=64),
    config(4, 4, BLOCK_O=64, BLOCK_R=32),
    config(4, 3, BLOCK_O=64, BLOCK_R=64),
]
_PROJ_WEIGHT_GRAD_GPU_CONFIGS = {
    "16-bit": _PROJ_GRAD_TILES,
    "tf32": _PROJ_GRAD_TILES,
    "fp32": [
        config(8, 3, BLOCK_O=128, BLOCK_R=16),
        config(8, 3, BLOCK_O=64, BLOCK_R=32),
        config(8, 3, BLOCK_O=64, BLOCK_R=16),
        config(4, 3, BLOCK_O=64, BLOCK_R=16),
        config(4, 3, BLOCK_O=32, BLOCK_R=32),
        config(4, 3, BLOCK_O=32, BLOCK_R=16),
    ],
}
_PROJ_WEIGHT_GRAD_CONFIGS = configs_by_dot(
    _PROJ_WEIGHT_GRAD_GPU_CONFIGS, config(4, 1, BLOCK_O=16, BLOCK_R=16)
)

_SCORE_WEIGHT_GRAD_GPU_CONFIGS = {
    "16-bit": [config(4, 3, BLOCK_R=128), config(4, 3, BLOCK_R=64), config(4, 4, BLOCK_R=32)],
    "tf32": [config(4, 3, BLOCK_R=64), config(4, 4, BLOCK_R=32)],
    "fp32": [config(4, 3, BLOCK_R=128), config(4, 3, BLOCK_R=64), config(4, 4, BLOCK_R=32)],
}
_SCORE_WEIGHT_GRAD_CONFIGS = configs_by_dot(_SCORE_WEIGHT_GRAD_GPU_CONFIGS, config(4, 1, BLOCK_R=16))


def _prune_input_grad(configs, named_args, **kwargs):
    """The configs of the launch's dot kind."""
    kind = dot_kind(named_args["GRAD_OUT"].element_size(), kwargs["DOT_PRECISION"])
    return configs_for_dot(configs, _INPUT_GRAD_GPU_CONFIGS, kind)


def _prune_proj_grad(configs, named_args, **kwargs):
    """The configs of the launch's dot kind."""
    kind = dot_kind(named_args["GRAD_OUT"].element_size(), kwargs["DOT_PRECISION"])
    return configs_for_dot(configs, _PROJ_WEIGHT_GRAD_GPU_CONFIGS, kind)


def _prune_score_weight_grad(configs, named_args, **kwargs):
    """The configs of the launch's dot kind (of the inputs: the score gradient is float32)."""
    kind = dot_kind(named_args["XS"][0].element_size(), kwargs["DOT_PRECISION"])
    return configs_for_dot(configs, _SCORE_WEIGHT_GRAD_GPU_CONFIGS, kind)


# Fixed (not autotuned) tiles of the score-gradient kernel, which is light.
SCORE_GRAD_BLOCK_R = 16 if INTERPRETED else 64


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
def attention_fusion_forward_kernel(
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


@triton.autotune(
    configs=_INPUT_GRAD_CONFIGS,
    key=["D_OUT", "D_TOTAL", "ROWS_BUCKET", "NUM_INPUTS"],
    prune_configs_by={"early_config_prune": _prune_input_grad},
)
@triton.jit
def attention_fusion_input_grad_kernel(
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
def attention_fusion_score_grad_kernel(
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
    configs=_PROJ_WEIGHT_GRAD_CONFIGS,
    key=["D_OUT", "D_TOTAL", "ROWS_BUCKET", "NUM_INPUTS", "NEED_WEIGHT"],
    prune_configs_by={"early_config_prune": _prune_proj_grad},
)
@triton.jit
def attention_fusion_proj_grad_kernel(
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
    configs=_SCORE_WEIGHT_GRAD_CONFIGS,
    key=["D_TOTAL", "ROWS_BUCKET", "NUM_INPUTS", "NEED_WEIGHT"],
    prune_configs_by={"early_config_prune": _prune_score_weight_grad},
)
@triton.jit
def attention_fusion_score_weight_grad_kernel(
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
