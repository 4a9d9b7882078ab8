"""Triton kernels of gated fusion and their autotune configs; the launchers, and what each kernel
computes, are in `mmfast.triton.gated_fusion`."""

from __future__ import annotations

import triton
import triton.language as tl

from mmfast.triton._common import config, configs_by_dot, configs_for_dot, dot_kind, pick

# fp32 elements per warp that the forward may keep in registers for its logit tile and the current
# group's accumulator (with 16-bit inputs; half as many with float32 inputs, whose operand tiles are
# twice as large). Checked against ptxas register reports for sm_80 and sm_90.
_ACCUMULATOR_ELEMENTS_PER_WARP = 4096

# The GPU configs per dot kind (`_common.dot_kind`). Every one was compiled ahead of time for sm_80
# and sm_90 at the launches of `mmfast.triton.gated_fusion.aot_cases` (`make triton-aot`) and
# spills nothing where the prunes let the autotuner pick it; IEEE float32 dots run on FMA, which
# spills the larger tiles, so float32 gets smaller ones.
_BIG_TILES = [
    config(8, 3, BLOCK_R=128, BLOCK_D=128, BLOCK_K=32),
    config(4, 4, BLOCK_R=128, BLOCK_D=64, BLOCK_K=32),
    config(4, 4, BLOCK_R=64, BLOCK_D=128, BLOCK_K=32),
]
_FORWARD_GPU_CONFIGS = {
    "16-bit": [
        *_BIG_TILES,
        config(4, 4, BLOCK_R=64, BLOCK_D=64, BLOCK_K=32),
        config(8, 3, BLOCK_R=64, BLOCK_D=32, BLOCK_K=64),
        config(8, 3, BLOCK_R=32, BLOCK_D=64, BLOCK_K=64),
        config(4, 4, BLOCK_R=32, BLOCK_D=32, BLOCK_K=64),
        config(4, 3, BLOCK_R=16, BLOCK_D=32, BLOCK_K=64),
    ],
    "tf32": [
        *_BIG_TILES,
        config(4, 4, BLOCK_R=64, BLOCK_D=64, BLOCK_K=32),
        config(8, 3, BLOCK_R=64, BLOCK_D=32, BLOCK_K=64),
        config(8, 3, BLOCK_R=32, BLOCK_D=64, BLOCK_K=64),
        config(4, 4, BLOCK_R=32, BLOCK_D=32, BLOCK_K=64),
        config(4, 3, BLOCK_R=16, BLOCK_D=64, BLOCK_K=64),
        config(4, 3, BLOCK_R=16, BLOCK_D=32, BLOCK_K=64),
    ],
    "fp32": [
        config(8, 3, BLOCK_R=64, BLOCK_D=64, BLOCK_K=16),
        config(4, 3, BLOCK_R=64, BLOCK_D=64, BLOCK_K=16),
        config(8, 3, BLOCK_R=64, BLOCK_D=32, BLOCK_K=16),
        config(4, 3, BLOCK_R=32, BLOCK_D=64, BLOCK_K=16),
        config(4, 4, BLOCK_R=32, BLOCK_D=32, BLOCK_K=64),
        config(8, 3, BLOCK_R=32, BLOCK_D=32, BLOCK_K=16),
        # BLOCK_R=16 BLOCK_D=64 BLOCK_K=32 spills 4-12 B on sm_90 with triton 3.8 (M == 3).
        config(4, 3, BLOCK_R=16, BLOCK_D=32, BLOCK_K=16),
    ],
}
_FORWARD_CONFIGS = configs_by_dot(_FORWARD_GPU_CONFIGS, config(4, 1, BLOCK_R=16, BLOCK_D=16, BLOCK_K=16))

_INPUT_GRAD_TILES = [
    config(8, 3, BLOCK_R=128, BLOCK_D=128, BLOCK_K=32),
    config(4, 4, BLOCK_R=64, BLOCK_D=128, BLOCK_K=32),
    config(4, 4, BLOCK_R=64, BLOCK_D=64, BLOCK_K=32),
    config(4, 3, BLOCK_R=16, BLOCK_D=64, BLOCK_K=64),
]
_INPUT_GRAD_MMA_TILES = [
    *_INPUT_GRAD_TILES,
    config(4, 4, BLOCK_R=128, BLOCK_D=64, BLOCK_K=32),
    config(4, 4, BLOCK_R=32, BLOCK_D=64, BLOCK_K=64),
]
_INPUT_GRAD_GPU_CONFIGS = {
    "16-bit": _INPUT_GRAD_MMA_TILES,
    "tf32": _INPUT_GRAD_MMA_TILES,
    "fp32": [
        *_INPUT_GRAD_TILES,
        config(4, 3, BLOCK_R=32, BLOCK_D=64, BLOCK_K=32),
        config(4, 3, BLOCK_R=32, BLOCK_D=32, BLOCK_K=32),
    ],
}
_INPUT_GRAD_CONFIGS = configs_by_dot(
    _INPUT_GRAD_GPU_CONFIGS, config(4, 1, BLOCK_R=16, BLOCK_D=16, BLOCK_K=16)
)

_WEIGHT_GRAD_GPU_CONFIGS = {
    "16-bit": [
        config(8, 3, BLOCK_N=128, BLOCK_D=128, BLOCK_R=32),
        config(4, 4, BLOCK_N=128, BLOCK_D=64, BLOCK_R=32),
        config(4, 4, BLOCK_N=64, BLOCK_D=128, BLOCK_R=32),
        config(4, 4, BLOCK_N=64, BLOCK_D=64, BLOCK_R=64),
        config(4, 3, BLOCK_N=32, BLOCK_D=64, BLOCK_R=32),
    ],
    "tf32": [
        config(8, 3, BLOCK_N=128, BLOCK_D=128, BLOCK_R=32),
        config(4, 4, BLOCK_N=128, BLOCK_D=64, BLOCK_R=32),
        config(4, 4, BLOCK_N=64, BLOCK_D=128, BLOCK_R=32),
        config(4, 4, BLOCK_N=64, BLOCK_D=64, BLOCK_R=64),
        config(4, 3, BLOCK_N=32, BLOCK_D=64, BLOCK_R=64),
    ],
    "fp32": [
        # BLOCK_N=128 BLOCK_D=128 BLOCK_R=32 with 8 warps spills on sm_90 with triton 3.8 (M == 3).
        config(4, 4, BLOCK_N=64, BLOCK_D=128, BLOCK_R=32),
        config(8, 3, BLOCK_N=128, BLOCK_D=64, BLOCK_R=16),
        config(4, 3, BLOCK_N=64, BLOCK_D=64, BLOCK_R=16),
        config(4, 3, BLOCK_N=32, BLOCK_D=64, BLOCK_R=32),
        config(4, 3, BLOCK_N=32, BLOCK_D=32, BLOCK_R=32),
    ],
}
_WEIGHT_GRAD_CONFIGS = configs_by_dot(
    _WEIGHT_GRAD_GPU_CONFIGS, config(4, 1, BLOCK_N=16, BLOCK_D=16, BLOCK_R=16)
)


def _prune_forward(configs, named_args, **kwargs):
    """The configs of the launch's dot kind whose logit tile and accumulator fit in registers for
    this many groups."""
    kind = dot_kind(named_args["W"].element_size(), kwargs["DOT_PRECISION"])
    configs = configs_for_dot(configs, _FORWARD_GPU_CONFIGS, kind)
    budget = _ACCUMULATOR_ELEMENTS_PER_WARP // (2 if named_args["W"].element_size() > 2 else 1)
    live = kwargs["GROUPS_PAD"] + 1
    fitting = [c for c in configs if live * c.kwargs["BLOCK_R"] * c.kwargs["BLOCK_D"] <= budget * c.num_warps]
    return fitting or [min(configs, key=lambda c: c.kwargs["BLOCK_R"] * c.kwargs["BLOCK_D"])]


def _prune_input_grad(configs, named_args, **kwargs):
    """The configs of the launch's dot kind."""
    kind = dot_kind(named_args["W"].element_size(), kwargs["DOT_PRECISION"])
    return configs_for_dot(configs, _INPUT_GRAD_GPU_CONFIGS, kind)


def _prune_weight_grad(configs, named_args, **kwargs):
    """The configs of the launch's dot kind."""
    kind = dot_kind(named_args["GRAD_LOGITS"].element_size(), kwargs["DOT_PRECISION"])
    return configs_for_dot(configs, _WEIGHT_GRAD_GPU_CONFIGS, kind)


@triton.autotune(
    configs=_FORWARD_CONFIGS,
    key=["D", "ROWS_BUCKET", "NUM_INPUTS"],
    prune_configs_by={"early_config_prune": _prune_forward},
)
@triton.jit
def gated_fusion_forward_kernel(
    XS,
    W,
    B,
    OUT,
    GATES,
    R,
    D,
    ROWS_BUCKET,
    NUM_INPUTS: tl.constexpr,
    NUM_GROUPS: tl.constexpr,
    GROUPS_PAD: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    tl.static_assert(BLOCK_R >= 16 and BLOCK_D >= 16 and BLOCK_K >= 16)
    rows = tl.program_id(0).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = tl.program_id(1).to(tl.int64) * BLOCK_D + tl.arange(0, BLOCK_D)
    row_ok = rows < R
    col_ok = cols < D
    k_range = tl.arange(0, BLOCK_K)
    width = NUM_INPUTS * D
    groups = tl.arange(0, GROUPS_PAD)[None, :, None]

    logits = tl.zeros([BLOCK_R, GROUPS_PAD, BLOCK_D], dtype=tl.float32)
    for group in range(NUM_GROUPS):
        # Rows of W (= columns of the logits) that this tile needs for this modality group.
        weight_rows = group * D + cols
        acc = tl.zeros([BLOCK_R, BLOCK_D], dtype=tl.float32)
        for segment in range(NUM_INPUTS):
            x_base = pick(XS, segment)
            for k_start in range(0, D, BLOCK_K):
                ks = k_start + k_range
                k_ok = ks < D
                x = tl.load(
                    x_base + rows[:, None] * D + ks[None, :],
                    mask=row_ok[:, None] & k_ok[None, :],
                    other=0.0,
                )
                w = tl.load(
                    W + weight_rows[None, :] * width + (segment * D + ks)[:, None],
                    mask=k_ok[:, None] & col_ok[None, :],
                    other=0.0,
                )
                acc = tl.dot(x, w, acc, input_precision=DOT_PRECISION)
        if HAS_BIAS:
            acc += tl.load(B + weight_rows, mask=col_ok, other=0.0).to(tl.float32)[None, :]
        logits = tl.where(groups == group, acc[:, None, :], logits)

    tile = rows[:, None] * D + cols[None, :]
    tile_ok = row_ok[:, None] & col_ok[None, :]
    if NUM_GROUPS == 1:
        gate = tl.sigmoid(tl.sum(logits, axis=1))
        first = tl.load(XS[0] + tile, mask=tile_ok, other=0.0).to(tl.float32)
        second = tl.load(XS[1] + tile, mask=tile_ok, other=0.0).to(tl.float32)
        out = gate * first + (1.0 - gate) * second
        tl.store(GATES + tile, gate, mask=tile_ok)
    else:
        group_ok = groups < NUM_GROUPS
        logits = tl.where(group_ok, logits, float("-inf"))
        exps = tl.exp(logits - tl.max(logits, axis=1)[:, None, :])
        weights = exps / tl.sum(exps, axis=1)[:, None, :]
        tl.store(
            GATES + rows[:, None, None] * width + groups * D + cols[None, None, :],
            weights,
            mask=row_ok[:, None, None] & group_ok & col_ok[None, None, :],
        )
        out = tl.zeros([BLOCK_R, BLOCK_D], dtype=tl.float32)
        for segment in range(NUM_INPUTS):
            weight = tl.sum(tl.where(groups == segment, weights, 0.0), axis=1)
            out += weight * tl.load(pick(XS, segment) + tile, mask=tile_ok, other=0.0).to(tl.float32)
    tl.store(OUT + tile, out, mask=tile_ok)


@triton.jit
def gated_fusion_logit_grad_kernel(
    GRAD_OUT,
    XS,
    GATES,
    GRAD_LOGITS,
    R,
    D,
    NUM_INPUTS: tl.constexpr,
    NUM_GROUPS: tl.constexpr,
    GROUPS_PAD: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    rows = tl.program_id(0).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = tl.program_id(1).to(tl.int64) * BLOCK_D + tl.arange(0, BLOCK_D)
    row_ok = rows < R
    col_ok = cols < D
    tile = rows[:, None] * D + cols[None, :]
    tile_ok = row_ok[:, None] & col_ok[None, :]
    grad = tl.load(GRAD_OUT + tile, mask=tile_ok, other=0.0).to(tl.float32)
    if NUM_GROUPS == 1:
        gate = tl.load(GATES + tile, mask=tile_ok, other=0.0).to(tl.float32)
        first = tl.load(XS[0] + tile, mask=tile_ok, other=0.0).to(tl.float32)
        second = tl.load(XS[1] + tile, mask=tile_ok, other=0.0).to(tl.float32)
        tl.store(GRAD_LOGITS + tile, grad * (first - second) * gate * (1.0 - gate), mask=tile_ok)
    else:
        groups = tl.arange(0, GROUPS_PAD)[None, :, None]
        offsets = rows[:, None, None] * (NUM_INPUTS * D) + groups * D + cols[None, None, :]
        ok = row_ok[:, None, None] & (groups < NUM_GROUPS) & col_ok[None, None, :]
        weights = tl.load(GATES + offsets, mask=ok, other=0.0).to(tl.float32)
        inputs = tl.zeros([BLOCK_R, GROUPS_PAD, BLOCK_D], dtype=tl.float32)
        for segment in range(NUM_INPUTS):
            x = tl.load(pick(XS, segment) + tile, mask=tile_ok, other=0.0).to(tl.float32)
            inputs = tl.where(groups == segment, x[:, None, :], inputs)
        # Softmax backward: dz_m = a_m * (dout * x_m - sum_k a_k * dout * x_k), and sum_k a_k x_k = out.
        out = tl.sum(weights * inputs, axis=1)
        grad_logits = weights * grad[:, None, :] * (inputs - out[:, None, :])
        tl.store(GRAD_LOGITS + offsets, grad_logits, mask=ok)


@triton.autotune(
    configs=_INPUT_GRAD_CONFIGS,
    key=["D", "ROWS_BUCKET", "NUM_INPUTS"],
    prune_configs_by={"early_config_prune": _prune_input_grad},
)
@triton.jit
def gated_fusion_input_grad_kernel(
    GRAD_LOGITS,
    W,
    GRAD_OUT,
    GATES,
    GRAD_XS,
    R,
    D,
    ROWS_BUCKET,
    NUM_INPUTS: tl.constexpr,
    NUM_GROUPS: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    tl.static_assert(BLOCK_R >= 16 and BLOCK_D >= 16 and BLOCK_K >= 16)
    rows = tl.program_id(0).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = tl.program_id(1).to(tl.int64) * BLOCK_D + tl.arange(0, BLOCK_D)
    segment = tl.program_id(2).to(tl.int64)
    row_ok = rows < R
    col_ok = cols < D
    logit_count = NUM_GROUPS * D
    width = NUM_INPUTS * D
    k_range = tl.arange(0, BLOCK_K).to(tl.int64)

    acc = tl.zeros([BLOCK_R, BLOCK_D], dtype=tl.float32)
    for k_start in range(0, logit_count, BLOCK_K):
        ks = k_start + k_range
        k_ok = ks < logit_count
        grad_logits = tl.load(
            GRAD_LOGITS + rows[:, None] * logit_count + ks[None, :],
            mask=row_ok[:, None] & k_ok[None, :],
            other=0.0,
        )
        w = tl.load(
            W + ks[:, None] * width + (segment * D + cols)[None, :],
            mask=k_ok[:, None] & col_ok[None, :],
            other=0.0,
        )
        acc = tl.dot(grad_logits, w, acc, input_precision=DOT_PRECISION)

    tile = rows[:, None] * D + cols[None, :]
    tile_ok = row_ok[:, None] & col_ok[None, :]
    grad = tl.load(GRAD_OUT + tile, mask=tile_ok, other=0.0).to(tl.float32)
    if NUM_GROUPS == 1:
        gate = tl.load(GATES + tile, mask=tile_ok, other=0.0).to(tl.float32)
        share = tl.where(segment == 0, gate, 1.0 - gate)
    else:
        share = tl.load(
            GATES + rows[:, None] * width + (segment * D + cols)[None, :], mask=tile_ok, other=0.0
        ).to(tl.float32)
    tl.store(pick(GRAD_XS, segment) + tile, acc + grad * share, mask=tile_ok)


@triton.autotune(
    configs=_WEIGHT_GRAD_CONFIGS,
    key=["D", "ROWS_BUCKET", "NUM_INPUTS", "NEED_WEIGHT"],
    prune_configs_by={"early_config_prune": _prune_weight_grad},
)
@triton.jit
def gated_fusion_weight_grad_kernel(
    GRAD_LOGITS,
    XS,
    GRAD_W,
    GRAD_B,
    R,
    D,
    ROWS_PER_SPLIT,
    SPLITS,
    ROWS_BUCKET,
    NUM_INPUTS: tl.constexpr,
    NUM_GROUPS: tl.constexpr,
    NEED_WEIGHT: tl.constexpr,
    NEED_BIAS: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_R: tl.constexpr,
):
    """Program (n tile, d tile, segment * SPLITS + split): rows of the split of dz.T @ x_segment.

    With SPLITS > 1 the partial sums go to float32 workspaces ``[SPLITS, ...]`` that the launcher
    adds up; with one split they are the gradients themselves."""
    tl.static_assert(BLOCK_N >= 16 and BLOCK_D >= 16 and BLOCK_R >= 16)
    ns = tl.program_id(0).to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)
    pid_d = tl.program_id(1).to(tl.int64)
    cols = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    pid_segment_split = tl.program_id(2).to(tl.int64)
    segment = pid_segment_split // SPLITS
    split = pid_segment_split % SPLITS
    n_ok = ns < NUM_GROUPS * D
    col_ok = cols < D
    logit_count = NUM_GROUPS * D
    width = NUM_INPUTS * D
    row_start = split * ROWS_PER_SPLIT
    row_end = tl.minimum(row_start + ROWS_PER_SPLIT, R)
    r_range = tl.arange(0, BLOCK_R)

    x_base = pick(XS, segment)
    acc = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    bias_acc = tl.zeros([BLOCK_N], dtype=tl.float32)
    for r_start in range(row_start, row_end, BLOCK_R):
        rs = r_start + r_range
        r_ok = rs < row_end
        grad_logits = tl.load(
            GRAD_LOGITS + rs[:, None] * logit_count + ns[None, :],
            mask=r_ok[:, None] & n_ok[None, :],
            other=0.0,
        )
        if NEED_WEIGHT:
            x = tl.load(
                x_base + rs[:, None] * D + cols[None, :],
                mask=r_ok[:, None] & col_ok[None, :],
                other=0.0,
            )
            acc = tl.dot(tl.trans(grad_logits), x, acc, input_precision=DOT_PRECISION)
        if NEED_BIAS:
            # Summed by every program (it is cheap next to the dot), stored by one per n tile.
            bias_acc += tl.sum(grad_logits.to(tl.float32), axis=0)
    if NEED_WEIGHT:
        tl.store(
            GRAD_W + split * logit_count * width + ns[:, None] * width + (segment * D + cols)[None, :],
            acc,
            mask=n_ok[:, None] & col_ok[None, :],
        )
    if NEED_BIAS:
        if (segment == 0) & (pid_d == 0):
            tl.store(GRAD_B + split * logit_count + ns, bias_acc, mask=n_ok)
