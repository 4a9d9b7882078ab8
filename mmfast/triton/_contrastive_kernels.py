"""Triton kernels shared by the contrastive losses (`mmfast.triton.clip_loss`,
`mmfast.triton.siglip_loss`), their autotune configs and the launch helpers both launchers use;
what each op launches is described in those modules.

Both kernels see the logits from one side: rows ``a`` of one feature matrix against every row
``b`` of the other, ``L[a, b] = scale * (A[a] . B[b]) + bias``, and the positive pair of row ``a``
at ``b == a + SHIFT``. The image side is ``(A, B) = (image, text)`` with ``SHIFT = label_offset``;
the text side is ``(text, image)`` with ``SHIFT = -label_offset``, so ``L.T`` is computed by the same
code (``text @ image.T``) and no kernel needs a column-parallel variant of its own.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from mmfast.triton._common import (
    check_tensor,
    config,
    configs_by_dot,
    configs_for_dot,
    device_guard,
    dot_kind,
    dot_precision,
    rows_bucket,
)

# GPU configs per dot kind (`_common.dot_kind`: 16-bit features, float32 with TF32 or IEEE dots,
# float64). Every one was compiled ahead of time for sm_80 and sm_90 at the launches of
# `aot_cases_of` below (`make triton-aot`: `triton.compile` for each GPU target, the registers and
# spills from ptxas) and spills nothing; IEEE float32 and float64 `tl.dot` run on FMA with wider
# operands, so their tiles are smaller. Shared memory stays under the A100's 163 KiB (the
# ``BLOCK_DO=1024`` config needs 130 KiB: the autotuner skips it on GPUs with less).
_FORWARD_GPU_CONFIGS = {
    "16-bit": [
        config(8, 4, BLOCK_M=128, BLOCK_N=128, BLOCK_K=32),
        config(8, 3, BLOCK_M=128, BLOCK_N=128, BLOCK_K=64),
        config(8, 3, BLOCK_M=128, BLOCK_N=64, BLOCK_K=32),
        config(8, 3, BLOCK_M=64, BLOCK_N=128, BLOCK_K=32),
        config(4, 4, BLOCK_M=64, BLOCK_N=64, BLOCK_K=64),
        config(4, 3, BLOCK_M=32, BLOCK_N=64, BLOCK_K=64),
    ],
    "tf32": [
        config(8, 3, BLOCK_M=128, BLOCK_N=64, BLOCK_K=32),
        config(8, 3, BLOCK_M=64, BLOCK_N=64, BLOCK_K=32),
        config(4, 3, BLOCK_M=64, BLOCK_N=64, BLOCK_K=16),
        config(4, 3, BLOCK_M=32, BLOCK_N=64, BLOCK_K=32),
        config(4, 3, BLOCK_M=32, BLOCK_N=32, BLOCK_K=32),
    ],
    "fp32": [
        config(8, 3, BLOCK_M=128, BLOCK_N=64, BLOCK_K=32),
        config(8, 3, BLOCK_M=128, BLOCK_N=64, BLOCK_K=16),
        config(4, 3, BLOCK_M=64, BLOCK_N=64, BLOCK_K=16),
        config(4, 3, BLOCK_M=32, BLOCK_N=32, BLOCK_K=32),
    ],
    "fp64": [
        config(4, 2, BLOCK_M=32, BLOCK_N=64, BLOCK_K=32),
        config(4, 2, BLOCK_M=32, BLOCK_N=32, BLOCK_K=32),
    ],
}

# BLOCK_DO is the width of the feature chunk whose gradient a program accumulates: each chunk
# recomputes its rows' logit tiles, so the widest chunks (up to the whole feature dim) avoid the
# recomputation at the price of shorter row blocks.
_GRAD_GPU_CONFIGS = {
    "16-bit": [
        config(8, 3, BLOCK_M=64, BLOCK_N=64, BLOCK_K=64, BLOCK_DO=64),
        config(4, 3, BLOCK_M=64, BLOCK_N=32, BLOCK_K=64, BLOCK_DO=64),
        config(8, 3, BLOCK_M=64, BLOCK_N=64, BLOCK_K=32, BLOCK_DO=128),
        config(4, 3, BLOCK_M=32, BLOCK_N=64, BLOCK_K=64, BLOCK_DO=128),
        config(8, 2, BLOCK_M=64, BLOCK_N=64, BLOCK_K=32, BLOCK_DO=256),
        config(8, 2, BLOCK_M=32, BLOCK_N=64, BLOCK_K=32, BLOCK_DO=512),
        config(8, 2, BLOCK_M=16, BLOCK_N=64, BLOCK_K=32, BLOCK_DO=1024),
    ],
    "tf32": [
        config(4, 2, BLOCK_M=32, BLOCK_N=32, BLOCK_K=32, BLOCK_DO=64),
        config(4, 2, BLOCK_M=64, BLOCK_N=32, BLOCK_K=32, BLOCK_DO=64),
        config(4, 2, BLOCK_M=32, BLOCK_N=32, BLOCK_K=32, BLOCK_DO=128),
        config(4, 2, BLOCK_M=16, BLOCK_N=64, BLOCK_K=32, BLOCK_DO=128),
        config(8, 2, BLOCK_M=32, BLOCK_N=64, BLOCK_K=32, BLOCK_DO=128),
    ],
    "fp32": [
        # BLOCK_M=32 BLOCK_N=32 BLOCK_K=32 BLOCK_DO=64 spills 8 B on sm_90 with triton 3.8.
        config(4, 2, BLOCK_M=32, BLOCK_N=32, BLOCK_K=32, BLOCK_DO=128),
        config(4, 2, BLOCK_M=16, BLOCK_N=64, BLOCK_K=32, BLOCK_DO=128),
    ],
    "fp64": [
        config(4, 2, BLOCK_M=32, BLOCK_N=32, BLOCK_K=32, BLOCK_DO=64),
        config(4, 2, BLOCK_M=16, BLOCK_N=32, BLOCK_K=32, BLOCK_DO=64),
    ],
}

_FORWARD_CONFIGS = configs_by_dot(_FORWARD_GPU_CONFIGS, config(4, 1, BLOCK_M=16, BLOCK_N=16, BLOCK_K=16))
_GRAD_CONFIGS = configs_by_dot(
    _GRAD_GPU_CONFIGS, config(4, 1, BLOCK_M=16, BLOCK_N=16, BLOCK_K=16, BLOCK_DO=16)
)


def _dot_kind(named_args, kwargs) -> str:
    return dot_kind(named_args["A"].element_size(), kwargs["DOT_PRECISION"])


# 16-bit forward tiles (BLOCK_M, BLOCK_N, BLOCK_K) that spill in one of the two losses, on sm_80 or
# sm_90 with triton 3.8 or 3.9: the sigmoid loss keeps more values live per logit than the
# softmax's online log-sum-exp, and ptxas spills its largest tiles.
_SPILLING_16BIT_TILES = {False: {(64, 128, 32)}, True: {(128, 128, 32), (128, 128, 64), (128, 64, 32)}}


def _prune_forward(configs, named_args, **kwargs):
    """The configs of the launch's dot kind, without the 16-bit tiles that spill in its loss."""
    kind = _dot_kind(named_args, kwargs)
    configs = configs_for_dot(configs, _FORWARD_GPU_CONFIGS, kind)
    if kind != "16-bit":
        return configs
    spilling = _SPILLING_16BIT_TILES[bool(kwargs["SIGMOID"])]
    kept = [
        c for c in configs if (c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.kwargs["BLOCK_K"]) not in spilling
    ]
    return kept or configs


def _prune_grad(configs, named_args, **kwargs):
    """The configs of the launch's dot kind whose feature chunk is not wider than the features
    (rounded up to a power of two); one per logit tile shape when no feature gradient is computed
    (``BLOCK_DO`` is unused then)."""
    sized = configs_for_dot(configs, _GRAD_GPU_CONFIGS, _dot_kind(named_args, kwargs))
    if not kwargs["NEED_GRAD"]:
        unique = {}
        for c in sized:
            unique.setdefault((c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.kwargs["BLOCK_K"]), c)
        return list(unique.values())
    widest = triton.next_power_of_2(max(int(named_args["D"]), 1))
    fitting = [c for c in sized if c.kwargs["BLOCK_DO"] <= widest]
    return fitting or [min(sized, key=lambda c: c.kwargs["BLOCK_DO"])]


@triton.jit
def _dot_tile(
    A,
    B,
    a_idx,
    b_idx,
    a_ok,
    b_ok,
    D,
    ACC_DTYPE: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """``A[a_idx] @ B[b_idx].T`` (``[BLOCK_M, BLOCK_N]``, in ``ACC_DTYPE``), a K loop over ``D``."""
    k_range = tl.arange(0, BLOCK_K).to(tl.int64)
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=ACC_DTYPE)
    for k_start in range(0, D, BLOCK_K):
        ks = k_start + k_range
        k_ok = ks < D
        a = tl.load(A + a_idx[:, None] * D + ks[None, :], mask=a_ok[:, None] & k_ok[None, :], other=0.0)
        b = tl.load(B + b_idx[None, :] * D + ks[:, None], mask=k_ok[:, None] & b_ok[None, :], other=0.0)
        acc = tl.dot(a, b, acc, input_precision=DOT_PRECISION)
    return acc


@triton.jit
def _softplus(x):
    """``log(1 + exp(x))`` without overflow, and accurate for very negative ``x`` (log1p written
    with Goldberg's correction: there is no portable `tl.log1p`)."""
    z = tl.exp(-tl.abs(x))
    u = 1.0 + z
    d = u - 1.0
    log1p = tl.where(d == 0.0, z, tl.log(u) * (z / tl.where(d == 0.0, 1.0, d)))
    return tl.maximum(x, 0.0) + log1p


@triton.autotune(
    configs=_FORWARD_CONFIGS,
    key=["D", "ROWS_BUCKET", "SIGMOID", "HAS_BIAS"],
    prune_configs_by={"early_config_prune": _prune_forward},
)
@triton.jit
def contrastive_forward_kernel(
    A,
    B,
    SCALE,
    BIAS,
    LSE,
    TERMS,
    NA,
    NB,
    D,
    SHIFT,
    ROWS_BUCKET,
    SIGMOID: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    ACC_DTYPE: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """Program ``pid``: rows ``a`` of one ``BLOCK_M`` block against all ``NB`` rows of ``B``, in
    ``BLOCK_N`` tiles.

    Softmax (``SIGMOID`` False): an online max / sum over the tiles gives ``LSE[a]`` (the row
    log-sum-exp), and ``TERMS[a] = LSE[a] - L[a, a + SHIFT]`` (the row's cross-entropy).
    Sigmoid: ``TERMS[a] = sum_b softplus(-y L[a, b])`` with ``y = +1`` at ``b == a + SHIFT`` and -1
    elsewhere (``LSE`` unused). Every row is written by exactly one program whatever the config,
    so the launcher's sum over ``TERMS`` is deterministic."""
    a_idx = tl.program_id(0).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    a_ok = a_idx < NA
    n_range = tl.arange(0, BLOCK_N).to(tl.int64)
    scale = tl.load(SCALE).to(ACC_DTYPE)
    if HAS_BIAS:
        bias = tl.load(BIAS).to(ACC_DTYPE)

    row_max = tl.full([BLOCK_M], float("-inf"), dtype=ACC_DTYPE)
    row_sum = tl.zeros([BLOCK_M], dtype=ACC_DTYPE)
    terms = tl.zeros([BLOCK_M], dtype=ACC_DTYPE)
    for n_start in range(0, NB, BLOCK_N):
        b_idx = n_start + n_range
        b_ok = b_idx < NB
        logits = scale * _dot_tile(
            A, B, a_idx, b_idx, a_ok, b_ok, D, ACC_DTYPE, DOT_PRECISION, BLOCK_M, BLOCK_N, BLOCK_K
        )
        if HAS_BIAS:
            logits += bias
        positive = (b_idx[None, :] - a_idx[:, None]) == SHIFT
        if SIGMOID:
            loss = _softplus(tl.where(positive, -logits, logits))
            terms += tl.sum(tl.where(b_ok[None, :], loss, 0.0), axis=1)
        else:
            logits = tl.where(b_ok[None, :], logits, float("-inf"))
            # Every tile has a valid column, so the new maximum is finite.
            new_max = tl.maximum(row_max, tl.max(logits, axis=1))
            row_sum = row_sum * tl.exp(row_max - new_max) + tl.sum(tl.exp(logits - new_max[:, None]), axis=1)
            row_max = new_max
            terms -= tl.sum(tl.where(positive, logits, 0.0), axis=1)
    if not SIGMOID:
        lse = row_max + tl.log(row_sum)
        tl.store(LSE + a_idx, lse, mask=a_ok)
        terms += lse
    tl.store(TERMS + a_idx, terms, mask=a_ok)


@triton.autotune(
    configs=_GRAD_CONFIGS,
    key=["D", "ROWS_BUCKET", "SIGMOID", "HAS_BIAS", "USE_LSE_A", "USE_LSE_B", "NEED_GRAD", "NEED_SCALARS"],
    prune_configs_by={"early_config_prune": _prune_grad},
)
@triton.jit
def contrastive_grad_kernel(
    A,
    B,
    SCALE,
    BIAS,
    GRAD_LOSS,
    LSE_A,
    LSE_B,
    GRAD_A,
    SCALE_PARTS,
    BIAS_PARTS,
    NA,
    NB,
    D,
    SHIFT,
    NORM,
    ROWS_BUCKET,
    SIGMOID: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    USE_LSE_A: tl.constexpr,
    USE_LSE_B: tl.constexpr,
    NEED_GRAD: tl.constexpr,
    NEED_SCALARS: tl.constexpr,
    ACC_DTYPE: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_DO: tl.constexpr,
):
    """Program ``(pid_a, pid_d)``: the gradient of rows ``a`` of ``A``, features
    ``[pid_d * BLOCK_DO, +BLOCK_DO)``, recomputing the logit tiles of those rows against every
    ``BLOCK_N`` tile of ``B``.

    ``dloss/dL = g * H / NORM`` with, in this side's orientation (``[a, b]``):
    softmax: ``H = w * (exp(L - LSE_A[a]) [USE_LSE_A] + exp(L - LSE_B[b]) [USE_LSE_B]) - [b == a + SHIFT]``
    (``w`` = 1/2 with both terms, else 1); sigmoid: ``H = -y * sigmoid(-y L)``.
    ``GRAD_A[a] = g * scale / NORM * H @ B`` (``H`` in the features' dtype for the `tl.dot`: it lies
    in [-1, 1], so 16-bit features lose no range), and the programs of the first feature chunk store
    the per-row partial sums ``SCALE_PARTS[a] = g / NORM * sum_b H * (A[a] . B[b])`` and
    ``BIAS_PARTS[a] = g / NORM * sum_b H``, which the launcher adds up (deterministically)."""
    pid_d = tl.program_id(1)
    a_idx = tl.program_id(0).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    a_ok = a_idx < NA
    n_range = tl.arange(0, BLOCK_N).to(tl.int64)
    d_idx = pid_d.to(tl.int64) * BLOCK_DO + tl.arange(0, BLOCK_DO)
    d_ok = d_idx < D
    scale = tl.load(SCALE).to(ACC_DTYPE)
    if HAS_BIAS:
        bias = tl.load(BIAS).to(ACC_DTYPE)
    if not SIGMOID:
        if USE_LSE_A:
            lse_a = tl.load(LSE_A + a_idx, mask=a_ok, other=0.0).to(ACC_DTYPE)

    acc = tl.zeros([BLOCK_M, BLOCK_DO], dtype=ACC_DTYPE)
    scale_part = tl.zeros([BLOCK_M], dtype=ACC_DTYPE)
    bias_part = tl.zeros([BLOCK_M], dtype=ACC_DTYPE)
    for n_start in range(0, NB, BLOCK_N):
        b_idx = n_start + n_range
        b_ok = b_idx < NB
        dots = _dot_tile(
            A, B, a_idx, b_idx, a_ok, b_ok, D, ACC_DTYPE, DOT_PRECISION, BLOCK_M, BLOCK_N, BLOCK_K
        )
        logits = scale * dots
        if HAS_BIAS:
            logits += bias
        positive = (b_idx[None, :] - a_idx[:, None]) == SHIFT
        if SIGMOID:
            h = tl.where(positive, -tl.sigmoid(-logits), tl.sigmoid(logits))
        else:
            h = tl.zeros([BLOCK_M, BLOCK_N], dtype=ACC_DTYPE)
            if USE_LSE_A:
                h += tl.exp(logits - lse_a[:, None])
            if USE_LSE_B:
                lse_b = tl.load(LSE_B + b_idx, mask=b_ok, other=0.0).to(ACC_DTYPE)
                h += tl.exp(logits - lse_b[None, :])
            if USE_LSE_A and USE_LSE_B:
                h *= 0.5
            h -= tl.where(positive, 1.0, 0.0)
        h = tl.where(a_ok[:, None] & b_ok[None, :], h, 0.0)
        if NEED_SCALARS:
            scale_part += tl.sum(h * dots, axis=1)
            bias_part += tl.sum(h, axis=1)
        if NEED_GRAD:
            b_chunk = tl.load(
                B + b_idx[:, None] * D + d_idx[None, :], mask=b_ok[:, None] & d_ok[None, :], other=0.0
            )
            acc = tl.dot(h.to(b_chunk.dtype), b_chunk, acc, input_precision=DOT_PRECISION)

    factor = tl.load(GRAD_LOSS).to(ACC_DTYPE) / NORM.to(ACC_DTYPE)
    if NEED_GRAD:
        tl.store(
            GRAD_A + a_idx[:, None] * D + d_idx[None, :],
            acc * (factor * scale),
            mask=a_ok[:, None] & d_ok[None, :],
        )
    if NEED_SCALARS:
        if pid_d == 0:
            tl.store(SCALE_PARTS + a_idx, scale_part * factor, mask=a_ok)
            tl.store(BIAS_PARTS + a_idx, bias_part * factor, mask=a_ok)


# Launch helpers shared by the two launchers (``mmfast.triton.clip_loss`` / ``siglip_loss``).

_FEATURE_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
_TL_DTYPES = {torch.float32: tl.float32, torch.float64: tl.float64}


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the losses compute in (and return): float32 for 16-bit features."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def check_features(image: torch.Tensor, text: torch.Tensor, square: bool, label_offset: int) -> None:
    """What the kernels index with: two contiguous ``[rows, D]`` matrices of one float dtype and
    device, at least one image row, and every image row's positive text inside ``text``."""
    if image.dtype not in _FEATURE_DTYPES:
        raise ValueError(f"image: expected float32, float64, float16 or bfloat16 features, got {image.dtype}")
    if image.dim() != 2 or image.shape[0] == 0:
        raise ValueError(f"image: expected a 2-D tensor [B, D] with B >= 1, got shape {tuple(image.shape)}")
    if text.dim() != 2 or text.shape[1] != image.shape[1]:
        raise ValueError(
            f"text: expected a 2-D tensor [B_t, {image.shape[1]}], got shape {tuple(text.shape)}"
        )
    check_tensor("image", image, image.dtype, image.device)
    check_tensor("text", text, image.dtype, image.device)
    rows, texts = image.shape[0], text.shape[0]
    if square and (texts != rows or label_offset != 0):
        raise ValueError(
            f"text: the symmetric loss takes {rows} texts and label_offset 0, got {texts} and {label_offset}"
        )
    if not 0 <= label_offset <= texts - rows:
        raise ValueError(
            f"label_offset: expected 0 to {texts - rows} for {rows} images and {texts} texts, "
            f"got {label_offset}"
        )


def check_scalar(name: str, value: torch.Tensor, device: torch.device) -> None:
    if value.dim() != 0 or not value.dtype.is_floating_point or value.device != device:
        raise ValueError(
            f"{name}: expected a 0-dim floating-point tensor on {device}, got shape {tuple(value.shape)}, "
            f"{value.dtype} on {value.device}"
        )


def launch_forward(
    a: torch.Tensor,
    b: torch.Tensor,
    scale: torch.Tensor,
    bias: torch.Tensor | None,
    shift: int,
    sigmoid: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(lse [NA], terms [NA])`` of rows ``a`` against ``b`` (see `contrastive_forward_kernel`),
    in the compute dtype; ``lse`` is left unwritten for the sigmoid loss."""
    dtype = compute_dtype(a.dtype)
    rows, dim = a.shape
    lse = a.new_empty((0 if sigmoid else rows,), dtype=dtype)
    terms = a.new_empty((rows,), dtype=dtype)

    def grid(meta):
        return (triton.cdiv(rows, meta["BLOCK_M"]),)

    with device_guard(a.device):
        contrastive_forward_kernel[grid](
            a,
            b,
            scale,
            bias,
            lse,
            terms,
            rows,
            b.shape[0],
            dim,
            shift,
            rows_bucket(rows),
            SIGMOID=sigmoid,
            HAS_BIAS=bias is not None,
            ACC_DTYPE=_TL_DTYPES[dtype],
            DOT_PRECISION=dot_precision(a.dtype),
        )
    return lse, terms


def launch_grad(
    grad_loss: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    scale: torch.Tensor,
    bias: torch.Tensor | None,
    lse_a: torch.Tensor | None,
    lse_b: torch.Tensor | None,
    shift: int,
    norm: int,
    sigmoid: bool,
    need_grad: bool,
    need_scalars: bool,
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """``(grad_a, scale_sum, bias_sum)`` of one side (see `contrastive_grad_kernel`): the gradient
    of ``a`` in its dtype (None unless ``need_grad``) and the 0-dim sums of the scale and bias
    gradients in the compute dtype (None unless ``need_scalars``)."""
    dtype = compute_dtype(a.dtype)
    rows, dim = a.shape
    grad_a = torch.empty_like(a, memory_format=torch.contiguous_format) if need_grad else None
    scale_parts = a.new_empty((rows,), dtype=dtype) if need_scalars else None
    bias_parts = a.new_empty((rows,), dtype=dtype) if need_scalars else None

    def grid(meta):
        chunks = max(1, triton.cdiv(dim, meta["BLOCK_DO"])) if need_grad else 1
        return (triton.cdiv(rows, meta["BLOCK_M"]), chunks)

    with device_guard(a.device):
        contrastive_grad_kernel[grid](
            a,
            b,
            scale,
            bias,
            grad_loss,
            lse_a,
            lse_b,
            grad_a,
            scale_parts,
            bias_parts,
            rows,
            b.shape[0],
            dim,
            shift,
            norm,
            rows_bucket(rows),
            SIGMOID=sigmoid,
            HAS_BIAS=bias is not None,
            USE_LSE_A=lse_a is not None,
            USE_LSE_B=lse_b is not None,
            NEED_GRAD=need_grad,
            NEED_SCALARS=need_scalars,
            ACC_DTYPE=_TL_DTYPES[dtype],
            DOT_PRECISION=dot_precision(a.dtype),
        )
    if not need_scalars:
        return grad_a, None, None
    return grad_a, scale_parts.sum(), bias_parts.sum()


# Ahead-of-time compilation (`python -m mmfast.triton.aot`): the launches of `launch_forward` and
# of `launch_grad` for the image side (with the scalar sums; the text side computes a subset of it).
# D=768 keeps every feature-chunk width of the gradient configs (they are pruned to D); the batch
# and D only set integer arguments, so one shape gives the code of all 16-divisible ones.
_AOT_ROWS = 4096
_AOT_DIM = 768


def aot_cases_of(sigmoid: bool, has_bias: bool, symmetric: bool):
    """The cases of one loss (`mmfast.triton.clip_loss` and `siglip_loss` call this) for every
    feature dtype; scale and bias in the compute dtype, as `mmfast.ops` passes them."""
    from mmfast.triton import aot

    rows, dim = _AOT_ROWS, _AOT_DIM
    shape = f"B={rows} D={dim}" + (" symmetric" if symmetric else "")
    for variant in aot.variants(("float32", "float16", "bfloat16", "float64")):
        dtype = compute_dtype(getattr(torch, variant.dtype))
        features = aot.Ptr(variant.dtype)
        compute = aot.Ptr(str(dtype).removeprefix("torch."))
        common = dict(
            A=features,
            B=features,
            SCALE=compute,
            BIAS=compute if has_bias else None,
            NA=rows,
            NB=rows,
            D=dim,
            SHIFT=0,
            ROWS_BUCKET=rows_bucket(rows),
            SIGMOID=sigmoid,
            HAS_BIAS=has_bias,
            ACC_DTYPE=_TL_DTYPES[dtype],
            DOT_PRECISION=variant.precision,
        )
        cases = dict(label=shape, dtype=variant.name)
        yield from aot.launch_cases(
            contrastive_forward_kernel, dict(common, LSE=compute, TERMS=compute), **cases
        )
        lse = None if sigmoid else compute
        yield from aot.launch_cases(
            contrastive_grad_kernel,
            dict(
                common,
                GRAD_LOSS=compute,
                LSE_A=lse,
                LSE_B=lse if symmetric else None,
                GRAD_A=features,
                SCALE_PARTS=compute,
                BIAS_PARTS=compute,
                NORM=rows,
                USE_LSE_A=lse is not None,
                USE_LSE_B=symmetric and lse is not None,
                NEED_GRAD=True,
                NEED_SCALARS=True,
            ),
            **cases,
        )
