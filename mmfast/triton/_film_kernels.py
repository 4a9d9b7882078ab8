"""Triton kernels of film; the launchers, and what each kernel computes, are in `mmfast.triton.film`."""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def film_forward_kernel(
    X, MOD, OUT, ROWS, C, S, STRIDE_C, STRIDE_S, BLOCK_ROWS: tl.constexpr, BLOCK_S: tl.constexpr
):
    """Program (row block, spatial block) of the feature map viewed ``[B*C, S]``:
    ``out = x * (1 + gamma[b, c]) + beta[b, c]`` in float32, ``MOD [B, 2C]`` holding gamma then beta.
    Element (b, c, s) is at ``b*C*S + c*STRIDE_C + s*STRIDE_S`` in X and OUT (contiguous: STRIDE_C =
    S, STRIDE_S = 1; channels last: 1 and C)."""
    rows = tl.program_id(0).to(tl.int64) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
    cols = tl.program_id(1).to(tl.int64) * BLOCK_S + tl.arange(0, BLOCK_S)
    row_ok = rows < ROWS
    gamma_at = (rows // C) * (2 * C) + rows % C
    gamma = tl.load(MOD + gamma_at, mask=row_ok, other=0.0).to(tl.float32)
    beta = tl.load(MOD + gamma_at + C, mask=row_ok, other=0.0).to(tl.float32)
    tile = ((rows // C) * C * S + (rows % C) * STRIDE_C)[:, None] + cols[None, :] * STRIDE_S
    ok = row_ok[:, None] & (cols < S)[None, :]
    x = tl.load(X + tile, mask=ok, other=0.0).to(tl.float32)
    tl.store(OUT + tile, x * (1.0 + gamma)[:, None] + beta[:, None], mask=ok)


@triton.jit
def film_backward_kernel(
    GRAD_OUT,
    X,
    MOD,
    GRAD_X,
    GRAD_MOD,
    ROWS,
    C,
    S,
    STRIDE_C,
    STRIDE_S,
    NEED_FEATURES: tl.constexpr,
    NEED_MODULATION: tl.constexpr,
    BLOCK_ROWS: tl.constexpr,
    BLOCK_S: tl.constexpr,
):
    """Program (row block) of ``[B*C, S]``: one pass over its rows stores ``grad_x = g * (1 + gamma)``
    and sums ``g * x`` and ``g`` over the spatial dims into ``GRAD_MOD [B, 2C]`` (gamma's and beta's
    gradients, float32 sums). Element (b, c, s) of the maps is where `film_forward_kernel` says."""
    rows = tl.program_id(0).to(tl.int64) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
    row_ok = rows < ROWS
    gamma_at = (rows // C) * (2 * C) + rows % C
    scale = 1.0 + tl.load(MOD + gamma_at, mask=row_ok, other=0.0).to(tl.float32)
    products = tl.zeros([BLOCK_ROWS], dtype=tl.float32)
    grads = tl.zeros([BLOCK_ROWS], dtype=tl.float32)
    s_range = tl.arange(0, BLOCK_S)
    row_at = (rows // C) * C * S + (rows % C) * STRIDE_C
    for s_start in range(0, S, BLOCK_S):
        cols = s_start + s_range
        tile = row_at[:, None] + cols[None, :] * STRIDE_S
        ok = row_ok[:, None] & (cols < S)[None, :]
        g = tl.load(GRAD_OUT + tile, mask=ok, other=0.0).to(tl.float32)
        if NEED_FEATURES:
            tl.store(GRAD_X + tile, g * scale[:, None], mask=ok)
        if NEED_MODULATION:
            x = tl.load(X + tile, mask=ok, other=0.0).to(tl.float32)
            products += tl.sum(g * x, axis=1)
            grads += tl.sum(g, axis=1)
    if NEED_MODULATION:
        tl.store(GRAD_MOD + gamma_at, products, mask=row_ok)
        tl.store(GRAD_MOD + gamma_at + C, grads, mask=row_ok)
