"""Triton kernels for modality attention fusion (the definition is
`mmfast.ops.attention_fusion_reference`).

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

from mmfast.triton._attention_fusion_kernels import (
    MIN_SCORE_COLUMNS,
    SCORE_GRAD_BLOCK_R,
    attention_fusion_forward_kernel,
    attention_fusion_input_grad_kernel,
    attention_fusion_proj_grad_kernel,
    attention_fusion_score_grad_kernel,
    attention_fusion_score_weight_grad_kernel,
)
from mmfast.triton._common import (
    INTERPRETED,
    as_rows,
    check_dtype,
    check_input_count,
    check_rows,
    check_tensor,
    device_guard,
    dot_precision,
    row_splits,
    rows_bucket,
)

__all__ = ["backward", "forward", "attention_fusion_backward", "attention_fusion_forward"]


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
    return max(MIN_SCORE_COLUMNS, triton.next_power_of_2(count))


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
        attention_fusion_forward_kernel[grid](
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

            attention_fusion_input_grad_kernel[input_grid](
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
            score_grid = (triton.cdiv(rows, SCORE_GRAD_BLOCK_R), segments.tiles if need_inputs else 1)
            attention_fusion_score_grad_kernel[score_grid](
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
                BLOCK_R=SCORE_GRAD_BLOCK_R,
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

            attention_fusion_proj_grad_kernel[proj_grid](
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
            attention_fusion_score_weight_grad_kernel[lambda meta: (tiles, splits)](
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


# The op's kernels, registered with the dispatcher for mmfast::attention_fusion_forward / _backward
# (any leading dims; the input gradient as one [*, sum D] tensor; empty tensors for gradients not
# asked for).


def forward(
    inputs: Sequence[torch.Tensor],
    proj_weights: Sequence[torch.Tensor],
    proj_biases: Sequence[torch.Tensor],
    score_weight: torch.Tensor,
    score_bias: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(output [*, D_out], weights [*, M])`` like ``mmfast::attention_fusion_forward``."""
    leading, xs = as_rows(inputs)
    out, weights = attention_fusion_forward(
        xs,
        [p.contiguous() for p in proj_weights],
        [b.contiguous() for b in proj_biases] if proj_biases else None,
        score_weight.contiguous(),
        None if score_bias is None else score_bias.contiguous(),
    )
    return out.view([*leading, out.shape[-1]]), weights.view([*leading, len(xs)])


def backward(
    grad_output: torch.Tensor,
    grad_weights: torch.Tensor | None,
    inputs: Sequence[torch.Tensor],
    proj_weights: Sequence[torch.Tensor],
    proj_biases: Sequence[torch.Tensor],
    score_weight: torch.Tensor,
    weights: torch.Tensor,
    output_mask: Sequence[bool],
) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor], torch.Tensor, torch.Tensor]:
    """The gradients like ``mmfast::attention_fusion_backward``.

    The kernels take the output's gradient only; a gradient reaching the weights output directly
    (``grad_weights``) adds ``w * (g - sum_m w_m g_m)`` to the score gradient, applied here with
    three small GEMMs.
    """
    leading, xs = as_rows(inputs)
    count = len(xs)
    w2d = weights.reshape(-1, count).contiguous()
    need = tuple(bool(m) for m in output_mask)
    grad_xs, grad_projs, grad_proj_biases, grad_score, grad_score_bias = attention_fusion_backward(
        grad_output.reshape(-1, grad_output.shape[-1]),
        xs,
        [p.contiguous() for p in proj_weights],
        [b.contiguous() for b in proj_biases] if proj_biases else None,
        score_weight.contiguous(),
        w2d,
        need,
    )
    empty = grad_output.new_empty([0])
    grad_input = torch.cat(grad_xs, dim=-1) if need[0] else empty
    if grad_weights is not None and (need[0] or need[3] or need[4]):
        g = grad_weights.reshape(-1, count).to(w2d.dtype)
        extra = w2d * (g - (w2d * g).sum(-1, keepdim=True))
        if need[0]:
            grad_input = grad_input + extra @ score_weight
        if need[3]:
            grad_score = grad_score + extra.t() @ torch.cat(xs, dim=-1)
        if need[4]:
            grad_score_bias = grad_score_bias + extra.sum(0)
    return (
        grad_input.view([*leading, -1]) if need[0] else empty,
        list(grad_projs) if need[1] else [],
        list(grad_proj_biases) if need[2] and proj_biases else [],
        grad_score if need[3] else empty,
        grad_score_bias if need[4] else empty,
    )


# Ahead-of-time compilation (`python -m mmfast.triton.aot`): the launches above at a few shapes,
# three modalities of different widths (the README's image + text + audio) and two equal ones. The
# backward kernels loop over the modalities at run time and tile the columns by the widest (64
# columns for both shapes), so the first shape gives their code.
_AOT_SHAPES = (((768, 512, 128), 256), ((128, 128), 128))
_AOT_BACKWARD_SHAPES = _AOT_SHAPES[:1]
_AOT_ROWS = 8192


def aot_cases():
    """The launches of `attention_fusion_forward` and `attention_fusion_backward` (every gradient,
    with biases) for every dtype, as `mmfast.triton.aot` compiles them."""
    from mmfast.triton import aot

    rows = _AOT_ROWS
    mps = aot.MULTIPROCESSORS
    for dims, out_dim in _AOT_SHAPES:
        count = len(dims)
        pad = _scores_pad(count)
        first = _Segments(dims, column_block=16)
        seg = _Segments(dims, _column_block(dims))
        proj_splits, proj_rows = row_splits(
            rows, triton.cdiv(out_dim, 64) * seg.tiles, None, multiprocessors=mps
        )
        score_splits, score_rows = row_splits(rows, seg.tiles, None, multiprocessors=mps)
        for variant in aot.variants():
            p, f32 = aot.Ptr(variant.dtype), aot.Ptr("float32")
            xs = (p,) * count
            cases = dict(label=f"{'+'.join(map(str, dims))}->{out_dim} R={rows}", dtype=variant.name)
            common = dict(R=rows, NUM_INPUTS=count, DOT_PRECISION=variant.precision)
            forward = dict(
                XS=xs, PWS=xs, PBS=xs, SW=p, SB=p, OUT=p, ATTN=p, DIMS=first.dims, OFFSETS=first.offsets
            )
            forward.update(D_OUT=out_dim, D_TOTAL=first.total, ROWS_BUCKET=rows_bucket(rows), SCORES_PAD=pad)
            forward.update(HAS_PROJ_BIAS=True, HAS_SCORE_BIAS=True)
            yield from aot.launch_cases(attention_fusion_forward_kernel, {**common, **forward}, **cases)
            if (dims, out_dim) not in _AOT_BACKWARD_SHAPES:
                continue
            common.update(
                DIMS=seg.dims, TILE_STARTS=seg.tile_starts, D_TOTAL=seg.total, COLUMN_BLOCK=seg.column_block
            )
            inputs = dict(GRAD_OUT=p, XS=xs, PWS=xs, PBS=xs, ATTN=p, GRAD_XS=xs, SHARES=f32, D_OUT=out_dim)
            inputs.update(
                TILES=seg.tiles, ROWS_BUCKET=rows_bucket(rows), HAS_PROJ_BIAS=True, NEED_INPUTS=True
            )
            yield from aot.launch_cases(attention_fusion_input_grad_kernel, {**common, **inputs}, **cases)
            scores = dict(ATTN=p, SHARES=f32, SW=p, GRAD_XS=xs, GRAD_SCORES=f32, OFFSETS=seg.offsets)
            scores.update(TILES=seg.tiles, SCORES_PAD=pad, NEED_INPUTS=True, BLOCK_R=SCORE_GRAD_BLOCK_R)
            yield from aot.launch_cases(
                attention_fusion_score_grad_kernel, {**common, **scores}, num_warps=4, **cases
            )
            target = p if proj_splits == 1 else f32
            proj = dict(GRAD_OUT=p, XS=xs, ATTN=p, GRAD_PW=(target,) * count, GRAD_PB=(target,) * count)
            proj.update(D_OUT=out_dim, ROWS_PER_SPLIT=proj_rows, ROWS_BUCKET=rows_bucket(proj_rows))
            proj.update(NEED_WEIGHT=True, NEED_BIAS=True)
            yield from aot.launch_cases(attention_fusion_proj_grad_kernel, {**common, **proj}, **cases)
            target = p if score_splits == 1 else f32
            score_weight = dict(GRAD_SCORES=f32, XS=xs, GRAD_SW=target, GRAD_SB=target, OFFSETS=seg.offsets)
            score_weight.update(
                ROWS_PER_SPLIT=score_rows, ROWS_BUCKET=rows_bucket(score_rows), SCORES_PAD=pad
            )
            score_weight.update(NEED_WEIGHT=True, NEED_BIAS=True)
            yield from aot.launch_cases(
                attention_fusion_score_weight_grad_kernel, {**common, **score_weight}, **cases
            )
