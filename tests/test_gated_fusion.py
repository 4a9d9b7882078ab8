"""gated_fusion (CPU op): against its reference for M = 2, 3, 5, every dtype and edge shape."""

from __future__ import annotations

import pytest
import torch

from mmfast.ops import gated_fusion, gated_fusion_reference
from tests._fusion_cases import detached_copy, gated_args, leaves_of
from tests._tolerances import AUTOCAST_BFLOAT16_STEPWISE, GRAD, assert_grads_match, assert_matches_reference

DTYPES = [torch.float32, torch.float64, torch.bfloat16]
# (M, D, leading dims): sizes that are not multiples of any vector width, 2-D and 3-D inputs.
SHAPES = [(2, 37, (5,)), (3, 19, (4, 3)), (5, 70, (6,)), (2, 1, (3,)), (16, 3, (2,))]


def _reference_grads(args, grad_out, dtype=None):
    copy = detached_copy(args, dtype)
    out = gated_fusion_reference(*copy)
    return torch.autograd.grad(out, leaves_of(copy), grad_out.to(out.dtype))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"M{s[0]}-D{s[1]}-{len(s[2]) + 1}d")
def test_forward_and_backward_match_reference(dtype, shape):
    count, dim, lead = shape
    args = list(gated_args(count, dim, lead, dtype))
    out = gated_fusion(*args)
    assert out.shape == (*lead, dim) and out.dtype == dtype
    assert_matches_reference(out, gated_fusion_reference, args, dtype)

    grad_out = torch.randn_like(out)
    fused = torch.autograd.grad(out, leaves_of(args), grad_out)
    expected = _reference_grads(args, grad_out)
    for got, leaf in zip(fused, leaves_of(args)):
        assert got.shape == leaf.shape and got.dtype == dtype
    assert_grads_match(fused, expected, _reference_grads(args, grad_out, torch.float64), dtype)


@pytest.mark.parametrize("count", [2, 3])
def test_without_bias(count):
    args = list(gated_args(count, 9, (4,), torch.float64, bias=False))
    out = gated_fusion(*args)
    torch.testing.assert_close(out, gated_fusion_reference(*args))
    grads = torch.autograd.grad(out.sum(), leaves_of(args))
    expected = torch.autograd.grad(gated_fusion_reference(*args).sum(), leaves_of(args))
    for got, want in zip(grads, expected):
        torch.testing.assert_close(got, want)


def test_non_contiguous_inputs():
    base = [torch.randn(6, 20, dtype=torch.float64) for _ in range(3)]
    xs = [b[:, ::2] for b in base]  # feature stride 2
    xs.append(torch.randn(10, 6, dtype=torch.float64).t())
    weight = torch.randn(40, 40, dtype=torch.float64)
    out = gated_fusion(xs, weight)
    torch.testing.assert_close(out, gated_fusion_reference(xs, weight))


@pytest.mark.parametrize("count", [2, 4])
@pytest.mark.parametrize("lead", [(0,), (3, 0)])
def test_empty_batch(count, lead):
    args = list(gated_args(count, 5, lead, torch.float32))
    out = gated_fusion(*args)
    assert out.shape == (*lead, 5)
    grads = torch.autograd.grad(out.sum(), leaves_of(args))
    assert all(g.shape == leaf.shape for g, leaf in zip(grads, leaves_of(args)))
    assert all(torch.count_nonzero(g) == 0 for g in grads)


def test_grad_for_some_arguments_only():
    xs, weight, bias = gated_args(3, 6, (4,), torch.float64)
    xs[1].requires_grad_(False)
    weight.requires_grad_(False)
    out = gated_fusion(xs, weight, bias)
    got = torch.autograd.grad(out.sum(), [xs[0], xs[2], bias])
    want = torch.autograd.grad(gated_fusion_reference(xs, weight, bias).sum(), [xs[0], xs[2], bias])
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)


def test_extreme_logits_stay_finite():
    xs, weight, bias = gated_args(3, 8, (4,), torch.float32)
    with torch.no_grad():
        bias.mul_(1e4)
    out = gated_fusion(xs, weight, bias)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, gated_fusion_reference(xs, weight, bias))


@pytest.mark.parametrize("count", [2, 3])
def test_gradcheck_float64(count):
    xs, weight, bias = gated_args(count, 4, (3,), torch.float64)

    def fn(*leaves):
        return gated_fusion(list(leaves[:count]), leaves[count], leaves[count + 1])

    assert torch.autograd.gradcheck(fn, (*xs, weight, bias))


@pytest.mark.parametrize("count", [2, 3])
def test_opcheck(count):
    xs, weight, bias = gated_args(count, 5, (4,), torch.float32)
    torch.library.opcheck(torch.ops.mmfast.gated_fusion_forward.default, (xs, weight, bias))
    torch.library.opcheck(torch.ops.mmfast.gated_fusion.default, (xs, weight, bias))
    torch.library.opcheck(torch.ops.mmfast.gated_fusion.default, (xs, weight, None))


@pytest.mark.parametrize("count", [2, 3])
def test_compile_fullgraph_forward_and_backward(count):
    torch._dynamo.reset()
    args = list(gated_args(count, 7, (5,), torch.float32))
    compiled = torch.compile(gated_fusion, fullgraph=True)
    out = compiled(*args)
    torch.testing.assert_close(out, gated_fusion_reference(*args))
    grads = torch.autograd.grad(out.sum(), leaves_of(args))
    expected = torch.autograd.grad(gated_fusion_reference(*args).sum(), leaves_of(args))
    for a, b in zip(grads, expected):
        torch.testing.assert_close(a, b, **GRAD[torch.float32])


def test_autocast_runs_in_bfloat16_like_linear():
    args = list(gated_args(3, 8, (4,), torch.float32))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = gated_fusion(*args)
    assert out.dtype == torch.bfloat16
    cast = [[x.bfloat16() for x in args[0]], args[1].bfloat16(), args[2].bfloat16()]
    expected = gated_fusion_reference(*cast).float()
    torch.testing.assert_close(out.float(), expected, **AUTOCAST_BFLOAT16_STEPWISE)
    out.float().sum().backward()
    assert args[1].grad is not None and args[1].grad.dtype == torch.float32


def test_backward_keeps_inputs_and_gates_but_no_concatenation():
    xs, weight, bias = gated_args(3, 16, (32,), torch.float32)
    saved = []

    def pack(t):
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        gated_fusion(xs, weight, bias)
    assert (32, 48) in [tuple(t.shape) for t in saved]  # the softmax gates [rows, M*D]
    total = sum(t.numel() for t in saved if t.data_ptr() not in {x.data_ptr() for x in xs})
    # Gates and the weight; the inputs are saved by reference, no [rows, M*D] concatenation copy.
    assert total == 32 * 48 + weight.numel()
