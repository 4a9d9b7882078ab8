"""Every tolerance the op tests compare with, named for why it is what it is, and the comparisons
that use them.

Tests take their tolerances from here instead of writing ``rtol=``/``atol=`` by hand; a comparison
without one uses ``torch.testing.assert_close``'s own per-dtype defaults. Values are never loosened
to make a test pass: a new case that needs more gets a name and a reason of its own.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

# Bit-identical: the same kernels on the same values in the same order (a forced engine against
# the computation it is made of, a deterministic path against ATen's own GEMM).
EXACT = {"rtol": 0.0, "atol": 0.0}

# A fused op's output against its reference in the same dtype (assert_matches_reference). The
# kernels sum the GEMMs' products in another order than the reference (blocked, split by input
# segment, or in float32 for half types), so the error grows with the reduction length; the
# float32 atol covers reductions of ~1400 unit-scale terms (the largest shapes tested).
FORWARD: dict[torch.dtype, dict[str, float]] = {
    torch.float64: {"rtol": 1e-10, "atol": 1e-10},
    torch.float32: {"rtol": 1e-5, "atol": 1e-4},
    torch.float16: {"rtol": 2e-3, "atol": 2e-3},
}
TOLERANCES = FORWARD  # the former name

# Gradients against the reference's in the same dtype (assert_grads_match): the weight gradients
# reduce over every row as well, one more reduction in another order than the forward's.
GRAD: dict[torch.dtype, dict[str, float]] = {
    torch.float64: {"rtol": 1e-10, "atol": 1e-10},
    torch.float32: {"rtol": 1e-4, "atol": 1e-4},
    torch.float16: {"rtol": 5e-3, "atol": 5e-3},
}

# Half-precision distance checks (as in Liger-Kernel): the fused result's error against a float64
# evaluation may exceed twice the reference's own error in that dtype by this fraction of the
# largest exact value. Forward: the kernels round once where the reference rounds at each step, so
# they are rarely worse; gradients: the backward's intermediates (grad of the pre-activation,
# softmax Jacobians) are rounded to the dtype before their reductions, and those differ more.
DISTANCE_SLACK_FORWARD = 1e-3
DISTANCE_SLACK_GRAD = 1e-2

# float32 results of small problems (reductions of at most a few dozen terms, unit-scale values)
# against the reference or against the same op on another path: only the summation order differs,
# which here stays near 1e-6.
FLOAT32_SMALL = {"rtol": 1e-5, "atol": 1e-5}

# The same op on a non-contiguous layout and on a contiguous copy of it: the kernels gather the
# same values and take the same engine, so only a different blocking of the gathered GEMM remains.
FLOAT32_OTHER_LAYOUT = {"rtol": 1e-6, "atol": 1e-6}

# float32 with weights not scaled by 1/sqrt(fan-in) (hypothesis-drawn shapes, up to 16 segments of
# up to 40 features): outputs and gradients reach ~100 in size, and their rounding with them.
FLOAT32_UNSCALED = {"rtol": 1e-4, "atol": 1e-4}

# Sigmoid / softmax gates from the same float32 logits: probabilities in (0, 1), so an absolute
# bound tighter than FLOAT32_SMALL's holds near 0.
FLOAT32_PROBABILITIES = {"rtol": 1e-5, "atol": 1e-6}

# Under CPU autocast, the op against its reference under the same autocast: both run the GEMM in
# bfloat16 (2^-8 relative rounding); rtol is torch's own bfloat16 default, atol covers outputs the
# activation takes near zero.
AUTOCAST_BFLOAT16 = {"rtol": 1.6e-2, "atol": 1e-2}
# Under CPU autocast, a fusion op against its reference on the bfloat16-cast arguments outside
# autocast: the reference rounds its logits, gates and mixture to bfloat16 step by step, the fused
# op in float32 and once, a few bfloat16 roundings apart.
AUTOCAST_BFLOAT16_STEPWISE = {"rtol": 0.05, "atol": 0.05}
# Under CPU autocast, a fusion op against its float32 reference: the arguments themselves are
# rounded to bfloat16, and the projections sum those errors over each input's features.
AUTOCAST_BFLOAT16_VS_FLOAT32 = {"rtol": 0.05, "atol": 0.1}
# Under CUDA autocast (float16 or bfloat16), the op against its reference under the same autocast:
# cuBLAS and the fused epilogues round in different places, each a 2^-8 (bfloat16) step.
AUTOCAST_CUDA = {"rtol": 2e-2, "atol": 2e-2}

# float32 on CUDA against the reference: cuBLAS / cuBLASLt split the reduction differently from the
# reference's GEMM (split-K, another tile order).
CUDA_FLOAT32 = {"rtol": 1e-4, "atol": 1e-4}

# The Triton kernels against a float64 evaluation of the reference (assert_close_to_float64):
# under the interpreter float32 runs in numpy float32, float16 tiles accumulate in float32 but the
# arguments and the stored outputs are float16 (2^-11 relative).
TRITON_INTERPRETED_VS_FLOAT64 = {torch.float32: 2e-4, torch.float16: 2e-2}
# Compiled on CUDA: float32 `tl.dot` runs in TF32 (10-bit mantissa, 2^-11 relative per product),
# bfloat16 arguments carry 2^-8.
TRITON_CUDA_VS_FLOAT64 = {torch.float32: 1e-3, torch.float16: 2e-2, torch.bfloat16: 6e-2}
# The Triton kernels' distance checks (assert_distance) in every dtype: the kernels keep their tiles'
# partial sums and the gates in float32 but store intermediates (gates, logits' gradients) in the
# argument dtype between kernels.
TRITON_DISTANCE_SLACK = {torch.float32: 1e-5, torch.float16: 1e-3, torch.bfloat16: 1e-2}

# Every CPU GEMM engine, forced, against the reference in the same dtype (assert_scaled_error: the
# largest error over 1 + the largest reference value). The engines differ from ATen's GEMM in
# summation order (float32 / float64) and, for bfloat16, in where they round: in float32 with one
# rounding (aten_float32, onednn) or per bfloat16 GEMM. Measured maxima over every engine and the
# cases of tests/test_concat_linear_registration.py and tests/test_fusion_cpu_engines.py:
# float64 2e-15, float32 7e-7, bfloat16 1.1e-2 (three bfloat16 steps).
CPU_ENGINES = {torch.float64: 1e-12, torch.float32: 1e-5, torch.bfloat16: 3e-2}

# kernels/activation.h's scalar formulas (std::exp, std::tanh, std::erf) against PyTorch's
# vectorized ones (Sleef): a few units in the last place of each dtype.
SCALAR_ACTIVATION = {torch.float64: 1e-12, torch.float32: 2e-6}


def tol(value: float) -> dict[str, float]:
    """``rtol`` and ``atol`` both ``value``, for the per-dtype tables of single numbers above."""
    return {"rtol": value, "atol": value}


def assert_distance(
    actual: torch.Tensor,
    plain: torch.Tensor,
    exact: torch.Tensor,
    slack: float,
    name: object = None,
) -> None:
    """``actual``'s error against ``exact`` (a float64 evaluation) stays within twice the error of
    ``plain`` (the reference in ``actual``'s dtype) plus ``slack`` times the largest exact value."""
    exact = exact.to(actual.device).double()
    fused_error = (actual.double() - exact).abs().max().item() if exact.numel() else 0.0
    plain_error = (plain.double().to(exact.device) - exact).abs().max().item() if exact.numel() else 0.0
    scale = max(exact.abs().max().item() if exact.numel() else 0.0, 1e-3)
    assert fused_error <= 2 * plain_error + slack * scale, (name, fused_error, plain_error, scale)


def assert_close_to_float64(
    actual: torch.Tensor, exact: torch.Tensor, tolerance: float, *, scaled: bool = False, name: object = None
) -> None:
    """``actual`` against a float64 evaluation: rtol and atol ``tolerance``; with ``scaled`` the atol
    grows with the largest exact value (for gradients, whose size varies with the shape)."""
    atol = tolerance * max(1.0, exact.abs().max().item()) if scaled and exact.numel() else tolerance
    msg = None if name is None else (lambda m: f"{name}: {m}")
    torch.testing.assert_close(actual.double(), exact, rtol=tolerance, atol=atol, msg=msg)


def assert_scaled_error(
    actual: torch.Tensor, expected: torch.Tensor, tolerance: float, name: object = None
) -> None:
    """The largest error over 1 + the largest expected value is below ``tolerance``."""
    error = (actual.double() - expected.double()).abs().max().item() / (
        1 + expected.double().abs().max().item()
    )
    assert error < tolerance, (name, error, tolerance)


def assert_matches_reference(
    actual: torch.Tensor,
    reference_fn: Callable[..., torch.Tensor],
    args: list,
    dtype: torch.dtype,
    distance_dtypes: Sequence[torch.dtype] = (torch.bfloat16,),
) -> None:
    """float32/float64/float16: `actual` equals `reference_fn(*args)` within FORWARD[dtype].

    dtypes in `distance_dtypes` (bfloat16; float16 too where asked): a distance check: the fused
    result's error against a float64 evaluation of the reference must stay within twice (plus
    DISTANCE_SLACK_FORWARD) the error of the reference run in that dtype itself."""
    if dtype not in distance_dtypes:
        expected = reference_fn(*args)
        torch.testing.assert_close(actual, expected, **FORWARD[dtype])
        return
    plain = reference_fn(*args)
    exact = reference_fn(*[_to_double(a) for a in args])
    assert_distance(actual, plain, exact, DISTANCE_SLACK_FORWARD)


def _to_double(value):
    if isinstance(value, torch.Tensor):
        return value.detach().double()
    if isinstance(value, (list, tuple)):
        return type(value)(_to_double(v) for v in value)
    if isinstance(value, dict):
        return {k: _to_double(v) for k, v in value.items()}
    return value


def assert_grads_match(
    fused: list[torch.Tensor] | tuple[torch.Tensor, ...],
    reference: list[torch.Tensor] | tuple[torch.Tensor, ...],
    exact: list[torch.Tensor] | tuple[torch.Tensor, ...],
    dtype: torch.dtype,
) -> None:
    """Gradients of a fused op against the reference's in the same dtype (`reference`) and in float64
    (`exact`): GRAD[dtype], or for bfloat16 the distance check with DISTANCE_SLACK_GRAD."""
    for got, plain, ref in zip(fused, reference, exact):
        if dtype != torch.bfloat16:
            torch.testing.assert_close(got, plain, **GRAD[dtype])
            continue
        assert_distance(got, plain, ref, DISTANCE_SLACK_GRAD)
