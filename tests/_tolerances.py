"""Per-dtype comparison of a fused result against its reference."""

from __future__ import annotations

from collections.abc import Callable

import torch

TOLERANCES: dict[torch.dtype, dict[str, float]] = {
    torch.float64: {"rtol": 1e-10, "atol": 1e-10},
    torch.float32: {"rtol": 1e-5, "atol": 1e-4},
    torch.float16: {"rtol": 2e-3, "atol": 2e-3},
}


def assert_matches_reference(
    actual: torch.Tensor,
    reference_fn: Callable[..., torch.Tensor],
    args: list,
    dtype: torch.dtype,
) -> None:
    """float32/float64/float16: `actual` equals `reference_fn(*args)` within per-dtype tolerances.

    bfloat16: a distance check, as in Liger-Kernel: the fused result's error against a float64
    evaluation of the reference must stay within twice (plus a little) the error of the
    reference run in bfloat16 itself."""
    if dtype != torch.bfloat16:
        expected = reference_fn(*args)
        torch.testing.assert_close(actual, expected, **TOLERANCES[dtype])
        return
    plain = reference_fn(*args).double()
    exact = reference_fn(*[_to_double(a) for a in args]).to(actual.device)
    fused_error = (actual.double() - exact).abs().max().item()
    plain_error = (plain - exact).abs().max().item()
    scale = exact.abs().max().item() if exact.numel() else 0.0
    assert fused_error <= 2 * plain_error + 1e-3 * max(scale, 1e-3), (fused_error, plain_error, scale)


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
    (`exact`): per-dtype tolerances, or for bfloat16 the same distance check as the forward."""
    for got, plain, ref in zip(fused, reference, exact):
        if dtype != torch.bfloat16:
            tolerance = {torch.float64: 1e-10, torch.float32: 1e-4, torch.float16: 5e-3}[dtype]
            torch.testing.assert_close(got, plain, rtol=tolerance, atol=tolerance)
            continue
        ref = ref.to(got.device)
        fused_error = (got.double() - ref).abs().max().item()
        plain_error = (plain.double() - ref).abs().max().item()
        scale = ref.abs().max().item() if ref.numel() else 0.0
        assert fused_error <= 2 * plain_error + 1e-2 * max(scale, 1e-3), (fused_error, plain_error, scale)
