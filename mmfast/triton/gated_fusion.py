"""Triton kernels for gated fusion (the definition is `mmfast.ops.gated_fusion_reference`).

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

from mmfast.triton._common import (
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
from mmfast.triton._gated_fusion_kernels import (
    gated_fusion_forward_kernel,
    gated_fusion_input_grad_kernel,
    gated_fusion_logit_grad_kernel,
    gated_fusion_weight_grad_kernel,
)

__all__ = ["backward", "forward", "gated_fusion_backward", "gated_fusion_forward"]


def _groups(num_inputs: int) -> int:
    """Number of softmax groups of logits: one sigmoid gate for two inputs, one group per input else."""
    return 1 if num_inputs == 2 else num_inputs


def _logit_grad_blocks(dim: int, groups_pad: int) -> tuple[int, int]:
    """(BLOCK_R, BLOCK_D) of the logit-gradient kernel (not autotuned: it is element-wise)."""
    block_d = min(64, triton.next_power_of_2(dim))
    return max(1, min(64, 4096 // (groups_pad * block_d))), block_d


def _weight_grad_tiles(count: int, dim: int, need_weight: bool) -> int:
    """Output tiles (at 64 x 64) of the weight-gradient reduction, which sizes its row splits."""
    logit_count = _groups(count) * dim
    return triton.cdiv(logit_count, 64) * (triton.cdiv(dim, 64) * count if need_weight else 1)


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
        gated_fusion_forward_kernel[grid](
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
        block_r, block_d = _logit_grad_blocks(dim, groups_pad)
        gated_fusion_logit_grad_kernel[(triton.cdiv(rows, block_r), triton.cdiv(dim, block_d))](
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

            gated_fusion_input_grad_kernel[input_grid](
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
            splits, rows_per_split = row_splits(rows, _weight_grad_tiles(count, dim, need_weight), device)
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

            gated_fusion_weight_grad_kernel[weight_grid](
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


# The op's kernels, registered with the dispatcher for mmfast::gated_fusion_forward / _backward
# (any leading dims; the input gradient as one [*, sum D] tensor; empty tensors for gradients not
# asked for).


def forward(
    inputs: Sequence[torch.Tensor], weight: torch.Tensor, bias: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(output [*, D], gates [rows, logits])`` like ``mmfast::gated_fusion_forward``."""
    leading, xs = as_rows(inputs)
    out, gates = gated_fusion_forward(xs, weight.contiguous(), None if bias is None else bias.contiguous())
    return out.view([*leading, out.shape[-1]]), gates


def backward(
    grad_output: torch.Tensor,
    inputs: Sequence[torch.Tensor],
    weight: torch.Tensor,
    gates: torch.Tensor,
    output_mask: Sequence[bool],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(grad_input [*, M*D], grad_weight, grad_bias)`` like ``mmfast::gated_fusion_backward``."""
    leading, xs = as_rows(inputs)
    grad2d = grad_output.reshape(-1, grad_output.shape[-1])
    grad_xs, grad_weight, grad_bias = gated_fusion_backward(
        grad2d, xs, weight.contiguous(), gates.contiguous(), tuple(bool(m) for m in output_mask)
    )
    empty = grad_output.new_empty([0])
    grad_input = torch.cat(grad_xs, dim=-1).view([*leading, -1]) if output_mask[0] else empty
    return (
        grad_input,
        grad_weight if output_mask[1] else empty,
        grad_bias if output_mask[2] else empty,
    )


# Ahead-of-time compilation (`python -m mmfast.triton.aot`): the launches above at a few shapes.
# Two inputs take the sigmoid path, three and eight the softmax over 4 and 8 padded groups (the
# forward's largest logit tile). The loops of the GEMM kernels of the backward over the inputs run
# at run time, so their code differs between the sigmoid and the softmax path only, and in whether
# the weight-gradient rows are split (M == 2 here) or not (M == 3, D == 768).
_AOT_SHAPES = ((2, 512), (3, 768), (8, 128))
_AOT_BACKWARD_SHAPES = _AOT_SHAPES[:2]
_AOT_ROWS = 8192


def aot_cases():
    """The launches of `gated_fusion_forward` and `gated_fusion_backward` (every gradient, with a
    bias) for every dtype, as `mmfast.triton.aot` compiles them."""
    from mmfast.triton import aot

    rows = _AOT_ROWS
    for count, dim in _AOT_SHAPES:
        groups = _groups(count)
        groups_pad = triton.next_power_of_2(groups)
        backward = (count, dim) in _AOT_BACKWARD_SHAPES
        tiles = _weight_grad_tiles(count, dim, True)
        splits, rows_per_split = row_splits(rows, tiles, None, multiprocessors=aot.MULTIPROCESSORS)
        for variant in aot.variants():
            p = aot.Ptr(variant.dtype)
            xs = (p,) * count
            cases = dict(label=f"M={count} D={dim} R={rows}", dtype=variant.name)
            common = dict(R=rows, D=dim, NUM_INPUTS=count, NUM_GROUPS=groups)
            dots = dict(common, DOT_PRECISION=variant.precision)
            forward = dict(XS=xs, W=p, B=p, OUT=p, GATES=p, ROWS_BUCKET=rows_bucket(rows))
            forward.update(GROUPS_PAD=groups_pad, HAS_BIAS=True)
            yield from aot.launch_cases(gated_fusion_forward_kernel, {**dots, **forward}, **cases)
            if variant.precision == "ieee":  # no tl.dot, tiles sized by the groups: every shape
                block_r, block_d = _logit_grad_blocks(dim, groups_pad)
                logits = dict(GRAD_OUT=p, XS=xs, GATES=p, GRAD_LOGITS=p, GROUPS_PAD=groups_pad)
                logits.update(BLOCK_R=block_r, BLOCK_D=block_d)
                yield from aot.launch_cases(
                    gated_fusion_logit_grad_kernel, {**common, **logits}, num_warps=4, **cases
                )
            if not backward:
                continue
            inputs = dict(GRAD_LOGITS=p, W=p, GRAD_OUT=p, GATES=p, GRAD_XS=xs, ROWS_BUCKET=rows_bucket(rows))
            yield from aot.launch_cases(gated_fusion_input_grad_kernel, {**dots, **inputs}, **cases)
            target = p if splits == 1 else aot.Ptr("float32")
            weights = dict(GRAD_LOGITS=p, XS=xs, GRAD_W=target, GRAD_B=target, ROWS_PER_SPLIT=rows_per_split)
            weights.update(
                SPLITS=splits, ROWS_BUCKET=rows_bucket(rows_per_split), NEED_WEIGHT=True, NEED_BIAS=True
            )
            yield from aot.launch_cases(gated_fusion_weight_grad_kernel, {**dots, **weights}, **cases)
