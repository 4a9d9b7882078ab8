"""Triton kernels for gated fusion (the definition is `mmfast.ops.fusion_reference.gated_fusion_reference`).

Forward, one kernel: each program owns a ``[rows, features]`` tile of the output. It computes the
gate logits of that tile for every modality group with `tl.dot`, reading the M inputs through their
own pointers (a K loop across the segments of the never-built concatenation), then applies the
sigmoid (M == 2) or the per-feature softmax over modalities (M > 2) and blends the inputs while the
logits are still in registers. It stores the output and the gates (sigmoid gate ``[R, D]`` or softmax
weights ``[R, M*D]``, in the input dtype): they are all the backward needs besides the inputs.

Backward, three kernels: the logit gradient ``dz`` (element-wise, from the gates and the inputs),
the input gradients ``dz @ W[:, segment] + dout * gate`` (one `tl.dot` GEMM per segment, the gate
term in the epilogue) and the weight and bias gradients ``dz.T @ x_segment`` / ``dz.sum(0)`` (a
`tl.dot` reduction over rows, split across programs when the output tiles alone cannot fill the GPU).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import triton
import triton.language as tl

from mmfast.triton._common import (
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
    select_configs,
)

__all__ = ["gated_fusion_forward", "gated_fusion_backward"]

# fp32 elements per warp that the forward may keep in registers for its logit tile and the current
# group's accumulator (with 16-bit inputs; half as many with float32 inputs, whose operand tiles are
# twice as large). Checked against ptxas register reports for sm_80 and sm_90.
_ACCUMULATOR_ELEMENTS_PER_WARP = 4096

_FORWARD_CONFIGS = select_configs(
    [
        config(8, 3, BLOCK_R=128, BLOCK_D=128, BLOCK_K=32),
        config(4, 4, BLOCK_R=128, BLOCK_D=64, BLOCK_K=32),
        config(4, 4, BLOCK_R=64, BLOCK_D=128, BLOCK_K=32),
        config(4, 4, BLOCK_R=64, BLOCK_D=64, BLOCK_K=32),
        config(8, 3, BLOCK_R=64, BLOCK_D=32, BLOCK_K=64),
        config(8, 3, BLOCK_R=32, BLOCK_D=64, BLOCK_K=64),
        config(4, 4, BLOCK_R=32, BLOCK_D=32, BLOCK_K=64),
        config(4, 3, BLOCK_R=16, BLOCK_D=64, BLOCK_K=64),
        config(4, 3, BLOCK_R=16, BLOCK_D=32, BLOCK_K=64),
    ],
    config(4, 1, BLOCK_R=16, BLOCK_D=16, BLOCK_K=16),
)

_INPUT_GRAD_CONFIGS = select_configs(
    [
        config(8, 3, BLOCK_R=128, BLOCK_D=128, BLOCK_K=32),
        config(4, 4, BLOCK_R=128, BLOCK_D=64, BLOCK_K=32),
        config(4, 4, BLOCK_R=64, BLOCK_D=128, BLOCK_K=32),
        config(4, 4, BLOCK_R=64, BLOCK_D=64, BLOCK_K=32),
        config(4, 4, BLOCK_R=32, BLOCK_D=64, BLOCK_K=64),
        config(4, 3, BLOCK_R=16, BLOCK_D=64, BLOCK_K=64),
    ],
    config(4, 1, BLOCK_R=16, BLOCK_D=16, BLOCK_K=16),
)

_WEIGHT_GRAD_CONFIGS = select_configs(
    [
        config(8, 3, BLOCK_N=128, BLOCK_D=128, BLOCK_R=32),
        config(4, 4, BLOCK_N=128, BLOCK_D=64, BLOCK_R=32),
        config(4, 4, BLOCK_N=64, BLOCK_D=128, BLOCK_R=32),
        config(4, 4, BLOCK_N=64, BLOCK_D=64, BLOCK_R=64),
        config(4, 3, BLOCK_N=32, BLOCK_D=64, BLOCK_R=64),
    ],
    config(4, 1, BLOCK_N=16, BLOCK_D=16, BLOCK_R=16),
)


def _prune_forward(configs, named_args, **kwargs):
    """Keep the configs whose logit tile and accumulator fit in registers for this many groups."""
    budget = _ACCUMULATOR_ELEMENTS_PER_WARP // (2 if named_args["W"].element_size() > 2 else 1)
    live = kwargs["GROUPS_PAD"] + 1
    fitting = [c for c in configs if live * c.kwargs["BLOCK_R"] * c.kwargs["BLOCK_D"] <= budget * c.num_warps]
    return fitting or [min(configs, key=lambda c: c.kwargs["BLOCK_R"] * c.kwargs["BLOCK_D"])]


@triton.autotune(
    configs=_FORWARD_CONFIGS,
    key=["D", "ROWS_BUCKET", "NUM_INPUTS"],
    prune_configs_by={"early_config_prune": _prune_forward},
)
@triton.jit
def _gated_fusion_forward_kernel(
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
def _gated_fusion_logit_grad_kernel(
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


@triton.autotune(configs=_INPUT_GRAD_CONFIGS, key=["D", "ROWS_BUCKET", "NUM_INPUTS"])
@triton.jit
def _gated_fusion_input_grad_kernel(
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


@triton.autotune(configs=_WEIGHT_GRAD_CONFIGS, key=["D", "ROWS_BUCKET", "NUM_INPUTS", "NEED_WEIGHT"])
@triton.jit
def _gated_fusion_weight_grad_kernel(
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


def _groups(num_inputs: int) -> int:
    """Number of softmax groups of logits: one sigmoid gate for two inputs, one group per input else."""
    return 1 if num_inputs == 2 else num_inputs


def _check_inputs(xs: Sequence[torch.Tensor], weight: torch.Tensor) -> tuple[int, int, int]:
    """Validates the inputs and the weight; returns (M, R, D)."""
    check_input_count(len(xs), minimum=2)
    first = xs[0]
    check_dtype(first.dtype)
    if first.dim() != 2:
        raise ValueError(f"xs[0]: expected a 2-D tensor [R, D], got shape {tuple(first.shape)}")
    rows, dim = first.shape
    check_rows("xs", xs, rows, first.dtype, first.device, cols=dim)
    count = len(xs)
    check_tensor("weight", weight, first.dtype, first.device, shape=(_groups(count) * dim, count * dim))
    return count, rows, dim


def gated_fusion_forward(
    xs: Sequence[torch.Tensor], weight: torch.Tensor, bias: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fused gated fusion of M = 2..8 row-major inputs ``[R, D]``.

    Args:
        xs: the inputs, contiguous ``[R, D]``, one dtype (float32, float16 or bfloat16) and device.
        weight: ``[D, 2D]`` for M == 2, ``[M*D, M*D]`` for M > 2.
        bias: ``[D]`` / ``[M*D]`` or None.

    Returns:
        ``(out [R, D], gates)``: the gates are the sigmoid gate ``[R, D]`` (M == 2) or the softmax
        weights ``[R, M*D]`` (M > 2, modality-major like the logits), in the input dtype; pass them
        to `gated_fusion_backward`.
    """
    xs = list(xs)
    count, rows, dim = _check_inputs(xs, weight)
    groups = _groups(count)
    if bias is not None:
        check_tensor("bias", bias, xs[0].dtype, xs[0].device, shape=(groups * dim,))
    out = xs[0].new_empty((rows, dim))
    gates = xs[0].new_empty((rows, groups * dim))
    if rows == 0 or dim == 0:
        return out, gates

    def grid(meta):
        return (triton.cdiv(rows, meta["BLOCK_R"]), triton.cdiv(dim, meta["BLOCK_D"]))

    with device_guard(out.device):
        _gated_fusion_forward_kernel[grid](
            tuple(xs),
            weight,
            bias,
            out,
            gates,
            rows,
            dim,
            rows_bucket(rows),
            NUM_INPUTS=count,
            NUM_GROUPS=groups,
            GROUPS_PAD=triton.next_power_of_2(groups),
            HAS_BIAS=bias is not None,
            DOT_PRECISION=dot_precision(out.dtype),
        )
    return out, gates


def gated_fusion_backward(
    grad_out: torch.Tensor,
    xs: Sequence[torch.Tensor],
    weight: torch.Tensor,
    gates: torch.Tensor,
    needs_grad: tuple[bool, bool, bool],
) -> tuple[list[torch.Tensor] | None, torch.Tensor | None, torch.Tensor | None]:
    """Gradients of `gated_fusion_forward` with respect to (xs, weight, bias).

    Args:
        grad_out: ``[R, D]``, the gradient of ``out``.
        xs, weight: as given to the forward.
        gates: the second output of the forward.
        needs_grad: which of (xs, weight, bias) need a gradient; the others come back as None.

    Returns:
        ``(grad_xs, grad_weight, grad_bias)``; ``grad_xs`` is a list of ``[R, D]`` tensors.
    """
    xs = list(xs)
    need_inputs, need_weight, need_bias = needs_grad
    count, rows, dim = _check_inputs(xs, weight)
    groups = _groups(count)
    dtype, device = xs[0].dtype, xs[0].device
    grad_out = grad_out.contiguous()
    check_tensor("grad_out", grad_out, dtype, device, shape=(rows, dim))
    check_tensor("gates", gates, dtype, device, shape=(rows, groups * dim))
    logit_count = groups * dim

    grad_xs = grad_weight = grad_bias = None
    if rows == 0 or dim == 0:
        if need_inputs:
            grad_xs = [torch.zeros_like(x) for x in xs]
        if need_weight:
            grad_weight = torch.zeros_like(weight)
        if need_bias:
            grad_bias = weight.new_zeros(logit_count)
        return grad_xs, grad_weight, grad_bias
    if not (need_inputs or need_weight or need_bias):
        return None, None, None

    precision = dot_precision(dtype)
    with device_guard(device):
        grad_logits = xs[0].new_empty((rows, logit_count))
        groups_pad = triton.next_power_of_2(groups)
        block_d = min(64, triton.next_power_of_2(dim))
        block_r = max(1, min(64, 4096 // (groups_pad * block_d)))
        _gated_fusion_logit_grad_kernel[(triton.cdiv(rows, block_r), triton.cdiv(dim, block_d))](
            grad_out,
            tuple(xs),
            gates,
            grad_logits,
            rows,
            dim,
            NUM_INPUTS=count,
            NUM_GROUPS=groups,
            GROUPS_PAD=groups_pad,
            BLOCK_R=block_r,
            BLOCK_D=block_d,
            num_warps=4,
        )

        if need_inputs:
            # Separate tensors: the gradients must not share storage (custom ops may not return
            # aliasing tensors).
            grad_xs = [torch.empty_like(x) for x in xs]

            def input_grid(meta):
                return (triton.cdiv(rows, meta["BLOCK_R"]), triton.cdiv(dim, meta["BLOCK_D"]), count)

            _gated_fusion_input_grad_kernel[input_grid](
                grad_logits,
                weight,
                grad_out,
                gates,
                tuple(grad_xs),
                rows,
                dim,
                rows_bucket(rows),
                NUM_INPUTS=count,
                NUM_GROUPS=groups,
                DOT_PRECISION=precision,
            )

        if need_weight or need_bias:
            segments = count if need_weight else 1
            output_tiles = triton.cdiv(logit_count, 64) * (
                triton.cdiv(dim, 64) * segments if need_weight else 1
            )
            splits, rows_per_split = row_splits(rows, output_tiles, device)
            target_dtype = dtype if splits == 1 else torch.float32
            weight_target = (
                torch.empty((splits, logit_count, count * dim), dtype=target_dtype, device=device)
                if need_weight
                else None
            )
            bias_target = (
                torch.empty((splits, logit_count), dtype=target_dtype, device=device) if need_bias else None
            )

            def weight_grid(meta):
                col_tiles = triton.cdiv(dim, meta["BLOCK_D"]) if need_weight else 1
                return (triton.cdiv(logit_count, meta["BLOCK_N"]), col_tiles, segments * splits)

            _gated_fusion_weight_grad_kernel[weight_grid](
                grad_logits,
                tuple(xs),
                weight_target,
                bias_target,
                rows,
                dim,
                rows_per_split,
                splits,
                rows_bucket(rows_per_split),
                NUM_INPUTS=count,
                NUM_GROUPS=groups,
                NEED_WEIGHT=need_weight,
                NEED_BIAS=need_bias,
                DOT_PRECISION=precision,
            )
            if need_weight:
                grad_weight = weight_target[0] if splits == 1 else weight_target.sum(0).to(dtype)
            if need_bias:
                grad_bias = bias_target[0] if splits == 1 else bias_target.sum(0).to(dtype)
    return grad_xs, grad_weight, grad_bias
