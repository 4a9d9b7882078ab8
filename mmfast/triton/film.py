"""Triton kernels for film (the definition is `mmfast.ops.film_reference`):
``features [B, C, *spatial] * (1 + gamma) + beta`` with ``gamma, beta = split(condition @ W.T + b)``.

Forward: the modulation ``[B, 2C]`` through ATen's GEMM (cuBLAS on CUDA; it is small: B x 2C x K),
then one kernel over the feature map viewed ``[B*C, S]``, each program a block of rows (channels of
samples) by a block of spatial positions, in float32. Backward: one kernel, each program a block of
rows looping over their spatial positions once: it stores the feature gradient ``g * (1 + gamma)``
and sums ``g * x`` and ``g`` (gamma's and beta's gradients, float32) in the same reads; then ATen's
GEMMs for the condition and weight gradients and a sum for the bias gradient. float64 (which the
kernels do not take) runs the same steps in PyTorch.
"""

from __future__ import annotations

import itertools

import torch
import triton

from mmfast.triton._common import device_guard
from mmfast.triton._film_kernels import film_backward_kernel, film_forward_kernel
from mmfast.triton._layout import empty_in_layout, in_layout, stored_channels_last

__all__ = ["backward", "forward"]

_TRITON_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
# Elements per program of the passes (rows x spatial positions).
_BLOCK_ELEMENTS = 4096


def _blocks(spatial: int) -> tuple[int, int]:
    """(rows, spatial positions) per program: the spatial block covers S up to 1024 positions."""
    block_s = min(triton.next_power_of_2(max(spatial, 1)), 1024)
    return max(1, _BLOCK_ELEMENTS // block_s), block_s


def _backward_blocks(spatial: int, channels_last: bool) -> tuple[int, int]:
    """The backward's blocks: at most 64 rows, whose two float32 sums each program keeps; at most
    32 over a channels-last map, whose 64-bit offsets (a runtime position stride) take more
    registers: at 64 rows x 64 positions the float32 kernel spills on sm_90 with triton 3.8."""
    block_rows, block_s = _blocks(spatial)
    return min(block_rows, 32 if channels_last else 64), block_s


def _strides(channels: int, spatial: int, channels_last: bool) -> tuple[int, int]:
    """(STRIDE_C, STRIDE_S) of the kernels: where channel c and position s of a sample are."""
    return (1, channels) if channels_last else (spatial, 1)


def _modulation(condition, weight, bias):
    return torch.addmm(bias, condition, weight.t()) if bias is not None else torch.mm(condition, weight.t())


def forward(
    features: torch.Tensor, condition: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(output, modulation [B, 2C])`` like ``mmfast::film_forward`` (its C++ composite has checked
    the arguments)."""
    modulation = _modulation(condition, weight, bias).contiguous()
    channels_last = stored_channels_last(features)
    x = in_layout(features, channels_last)
    batch, channels = x.shape[0], x.shape[1]
    rows = batch * channels
    spatial = x.numel() // rows if rows else 0
    if x.dtype not in _TRITON_DTYPES:
        gamma, beta = modulation.chunk(2, dim=1)
        shape = [batch, channels] + [1] * (x.dim() - 2)
        return x * (1 + gamma.reshape(shape)) + beta.reshape(shape), modulation
    out = empty_in_layout(x, channels_last)
    if rows == 0 or spatial == 0:
        return out, modulation
    block_rows, block_s = _blocks(spatial)
    with device_guard(x.device):
        film_forward_kernel[(triton.cdiv(rows, block_rows), triton.cdiv(spatial, block_s))](
            x,
            modulation,
            out,
            rows,
            channels,
            spatial,
            *_strides(channels, spatial, channels_last),
            BLOCK_ROWS=block_rows,
            BLOCK_S=block_s,
        )
    return out, modulation


def backward(
    grad_output: torch.Tensor,
    features: torch.Tensor,
    condition: torch.Tensor,
    weight: torch.Tensor,
    modulation: torch.Tensor,
    output_mask,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(grad_features, grad_condition, grad_weight, grad_bias)`` like ``mmfast::film_backward``
    (empty tensors for the gradients not asked for; ``features`` is read only when the condition,
    weight or bias needs a gradient, ``condition`` only for the weight's)."""
    need_features, need_condition, need_weight, need_bias = (bool(m) for m in output_mask)
    need_modulation = need_condition or need_weight or need_bias
    channels_last = stored_channels_last(grad_output)
    g = in_layout(grad_output, channels_last)
    batch, channels = g.shape[0], g.shape[1]
    rows = batch * channels
    spatial = g.numel() // rows if rows else 0
    modulation = modulation.contiguous()
    empty = g.new_empty([0])
    grad_features = empty_in_layout(g, channels_last) if need_features else empty
    grad_modulation = None
    if g.dtype not in _TRITON_DTYPES:
        shape = [batch, channels] + [1] * (g.dim() - 2)
        gamma = modulation[:, :channels].reshape(shape)
        if need_features:
            grad_features = g * (1 + gamma)
        if need_modulation:
            dims = list(range(2, g.dim()))
            sums = (lambda t: t.sum(dims)) if dims else (lambda t: t)
            grad_modulation = torch.cat([sums(g * features), sums(g)], dim=1)
    else:
        if need_modulation:
            grad_modulation = torch.zeros((batch, 2 * channels), dtype=torch.float32, device=g.device)
        if rows > 0 and spatial > 0 and (need_features or need_modulation):
            x = in_layout(features, channels_last) if need_modulation else g
            block_rows, block_s = _backward_blocks(spatial, channels_last)
            with device_guard(g.device):
                film_backward_kernel[(triton.cdiv(rows, block_rows),)](
                    g,
                    x,
                    modulation,
                    grad_features if need_features else g,
                    grad_modulation if need_modulation else modulation,
                    rows,
                    channels,
                    spatial,
                    *_strides(channels, spatial, channels_last),
                    NEED_FEATURES=need_features,
                    NEED_MODULATION=need_modulation,
                    BLOCK_ROWS=block_rows,
                    BLOCK_S=block_s,
                )
        elif need_features:
            grad_features.zero_()
        if need_modulation:
            grad_modulation = grad_modulation.to(g.dtype)
    return (
        grad_features,
        torch.mm(grad_modulation, weight) if need_condition else empty,
        torch.mm(grad_modulation.t(), condition) if need_weight else empty,
        grad_modulation.sum(0) if need_bias else empty,
    )


# ----- ahead-of-time compilation (`python -m mmfast.triton.aot`)

# (channels, spatial positions): the feature maps 64 x 8 x 8 and 128 x 16 x 16, at batch 512.
_AOT_SHAPES = ((64, 64), (128, 256))
_AOT_BATCH = 512


def aot_cases():
    """The launches of `forward` and `backward` (every gradient) for every dtype, as
    `mmfast.triton.aot` compiles them (no `tl.dot`: one case per dtype), for contiguous and
    channels-last maps."""
    from mmfast.triton import aot

    for (channels, spatial), channels_last in itertools.product(_AOT_SHAPES, (False, True)):
        rows = _AOT_BATCH * channels
        block_rows, block_s = _blocks(spatial)
        backward_rows, _ = _backward_blocks(spatial, channels_last)
        stride_c, stride_s = _strides(channels, spatial, channels_last)
        shape = f"B={_AOT_BATCH} C={channels} S={spatial}" + (" channels-last" if channels_last else "")
        for variant in aot.variants():
            if variant.precision != "ieee":
                continue
            p = aot.Ptr(variant.dtype)
            yield from aot.launch_cases(
                film_forward_kernel,
                dict(
                    X=p,
                    MOD=p,
                    OUT=p,
                    ROWS=rows,
                    C=channels,
                    S=spatial,
                    STRIDE_C=stride_c,
                    STRIDE_S=stride_s,
                    BLOCK_ROWS=block_rows,
                    BLOCK_S=block_s,
                ),
                label=shape,
                dtype=variant.name,
                num_warps=4,
            )
            yield from aot.launch_cases(
                film_backward_kernel,
                dict(
                    GRAD_OUT=p,
                    X=p,
                    MOD=p,
                    GRAD_X=p,
                    GRAD_MOD=aot.Ptr("float32"),
                    ROWS=rows,
                    C=channels,
                    S=spatial,
                    STRIDE_C=stride_c,
                    STRIDE_S=stride_s,
                    NEED_FEATURES=True,
                    NEED_MODULATION=True,
                    BLOCK_ROWS=backward_rows,
                    BLOCK_S=block_s,
                ),
                label=shape,
                dtype=variant.name,
                num_warps=4,
            )
