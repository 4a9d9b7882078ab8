"""attention_fusion (CPU op): against its reference for M = 1..5, every dtype and edge shape."""

from __future__ import annotations

import pytest
import torch

from mmfast.ops import attention_fusion, attention_fusion_reference
from tests._fusion_cases import attention_args, detached_copy, leaves_of
from tests._tolerances import AUTOCAST_BFLOAT16_VS_FLOAT32, GRAD, assert_grads_match, assert_matches_reference

DTYPES = [torch.float32, torch.float64, torch.bfloat16]
# (input dims, D_out, leading dims)
SHAPES = [
    ([37], 11, (5,)),
    ([5, 17], 9, (7,)),
    ([33, 17, 5], 19, (4, 3)),
    ([8, 3, 20, 1, 6], 7, (6,)),
    ([2] * 16, 3, (2,)),
]


def _reference(*args):
    return attention_fusion_reference(*args, return_weights=True)


def _reference_grads(args, grad_out, grad_weights, dtype=None):
    copy = detached_copy(args, dtype)
    out, weights = _reference(*copy)
    loss = (out * grad_out.to(out.dtype)).sum() + (weights * grad_weights.to(weights.dtype)).sum()
    return torch.autograd.grad(loss, leaves_of(copy))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"M{len(s[0])}-{len(s[2]) + 1}d")
def test_forward_and_backward_match_reference(dtype, shape):
    dims, out_dim, lead = shape
    args = list(attention_args(dims, out_dim, lead, dtype))
    out, weights = attention_fusion(*args, return_weights=True)
    assert out.shape == (*lead, out_dim) and weights.shape == (*lead, len(dims))
    assert_matches_reference(out, lambda *a: _reference(*a)[0], args, dtype)
    assert_matches_reference(weights, lambda *a: _reference(*a)[1], args, dtype)

    grad_out, grad_weights = torch.randn_like(out), torch.randn_like(weights)
    loss = (out * grad_out).sum() + (weights * grad_weights).sum()
    fused = torch.autograd.grad(loss, leaves_of(args))
    for got, leaf in zip(fused, leaves_of(args)):
        assert got.shape == leaf.shape and got.dtype == dtype
    expected = _reference_grads(args, grad_out, grad_weights)
    exact = _reference_grads(args, grad_out, grad_weights, torch.float64)
    assert_grads_match(fused, expected, exact, dtype)


@pytest.mark.parametrize("proj_bias", [True, False])
@pytest.mark.parametrize("score_bias", [True, False])
def test_optional_biases(proj_bias, score_bias):
    args = list(attention_args([4, 6], 5, (3,), torch.float64, proj_bias=proj_bias, score_bias=score_bias))
    out = attention_fusion(*args)
    torch.testing.assert_close(out, attention_fusion_reference(*args))
    grads = torch.autograd.grad(out.sum(), leaves_of(args))
    expected = torch.autograd.grad(attention_fusion_reference(*args).sum(), leaves_of(args))
    for a, b in zip(grads, expected):
        torch.testing.assert_close(a, b)


def test_gradient_through_the_weights_only():
    args = list(attention_args([4, 6, 3], 5, (3,), torch.float64))
    _, weights = attention_fusion(*args, return_weights=True)
    target = torch.randn_like(weights)
    grads = torch.autograd.grad((weights * target).sum(), leaves_of(args), allow_unused=True)
    _, ref_weights = _reference(*args)
    expected = torch.autograd.grad((ref_weights * target).sum(), leaves_of(args), allow_unused=True)
    for a, b in zip(grads, expected):
        if b is None:
            assert a is None or torch.count_nonzero(a) == 0
        else:
            torch.testing.assert_close(a, b)


def test_non_contiguous_inputs():
    xs = [torch.randn(6, 20, dtype=torch.float64)[:, ::2], torch.randn(7, 6, dtype=torch.float64).t()]
    projs = [torch.randn(4, 10, dtype=torch.float64), torch.randn(4, 7, dtype=torch.float64)]
    score = torch.randn(2, 17, dtype=torch.float64)
    torch.testing.assert_close(
        attention_fusion(xs, projs, None, score), attention_fusion_reference(xs, projs, None, score)
    )


@pytest.mark.parametrize("lead", [(0,), (3, 0)])
def test_empty_batch(lead):
    args = list(attention_args([4, 6], 5, lead, torch.float32))
    out, weights = attention_fusion(*args, return_weights=True)
    assert out.shape == (*lead, 5) and weights.shape == (*lead, 2)
    grads = torch.autograd.grad(out.sum(), leaves_of(args))
    assert all(g.shape == leaf.shape for g, leaf in zip(grads, leaves_of(args)))
    assert all(torch.count_nonzero(g) == 0 for g in grads)


def test_grad_for_some_arguments_only():
    xs, projs, biases, score, sb = attention_args([4, 6, 3], 5, (4,), torch.float64)
    for t in [xs[0], projs[1], *biases, sb]:
        t.requires_grad_(False)
    wanted = [xs[1], xs[2], projs[0], projs[2], score]
    got = torch.autograd.grad(attention_fusion(xs, projs, biases, score, sb).sum(), wanted)
    want = torch.autograd.grad(attention_fusion_reference(xs, projs, biases, score, sb).sum(), wanted)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)


def test_gradcheck_float64():
    dims = [3, 4, 2]
    args = attention_args(dims, 3, (2,), torch.float64)
    leaves = leaves_of(args)
    m = len(dims)

    def fn(*t):
        out, weights = attention_fusion(
            list(t[:m]),
            list(t[m : 2 * m]),
            list(t[2 * m : 3 * m]),
            t[3 * m],
            t[3 * m + 1],
            return_weights=True,
        )
        return out, weights

    assert torch.autograd.gradcheck(fn, tuple(leaves))


def test_opcheck():
    args = list(attention_args([4, 6, 3], 5, (4,), torch.float32))
    xs, projs, biases, score, sb = args
    torch.library.opcheck(torch.ops.mmfast.attention_fusion_forward.default, (xs, projs, biases, score, sb))
    torch.library.opcheck(torch.ops.mmfast.attention_fusion.default, (xs, projs, [], score, None))


def test_compile_fullgraph_forward_and_backward():
    torch._dynamo.reset()
    args = list(attention_args([4, 6, 3], 5, (2, 3), torch.float32))
    compiled = torch.compile(lambda *a: attention_fusion(*a, return_weights=True), fullgraph=True)
    out, weights = compiled(*args)
    ref_out, ref_weights = _reference(*args)
    torch.testing.assert_close(out, ref_out)
    torch.testing.assert_close(weights, ref_weights)
    grads = torch.autograd.grad(out.sum() + weights.pow(2).sum(), leaves_of(args))
    expected = torch.autograd.grad(ref_out.sum() + ref_weights.pow(2).sum(), leaves_of(args))
    for a, b in zip(grads, expected):
        torch.testing.assert_close(a, b, **GRAD[torch.float32])


def test_autocast_runs_in_bfloat16_like_linear():
    args = list(attention_args([4, 6], 8, (4,), torch.float32))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = attention_fusion(*args)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), attention_fusion_reference(*args), **AUTOCAST_BFLOAT16_VS_FLOAT32)
    out.float().sum().backward()
    assert args[3].grad is not None and args[3].grad.dtype == torch.float32


def test_backward_keeps_no_stacked_projections():
    args = list(attention_args([64, 32, 16], 48, (128,), torch.float32))
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        attention_fusion(*args)
    leaf_ptrs = {t.data_ptr() for t in leaves_of(args)}
    extra = [t for t in saved if t.data_ptr() not in leaf_ptrs]
    # Only the attention weights [rows, M]: no concatenation, no [rows, M, D_out] stack.
    assert [tuple(t.shape) for t in extra] == [(128, 3)]
