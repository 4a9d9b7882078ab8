"""concat_linear (CPU): against its reference for every activation, dtype and edge shape."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mmfast.ops import ACTIVATIONS, concat_linear, concat_linear_reference
from tests._tolerances import (
    AUTOCAST_BFLOAT16,
    FLOAT32_OTHER_LAYOUT,
    FLOAT32_SMALL,
    assert_matches_reference,
)

DTYPES = [torch.float32, torch.float64, torch.bfloat16]

# (segment feature sizes, leading dims, out features): one, two, three and 16 segments; 2-D and
# 3-D inputs; sizes that are not multiples of any vector width.
SHAPES = [
    ([37], (5,), 11),
    ([3, 9], (7,), 13),
    ([33, 17, 5], (4, 3), 19),
    ([2, 5, 1, 8, 3, 4, 7, 6, 9, 2, 3, 1, 5, 4, 6, 3], (6,), 10),
]


def _make(sizes, lead, out_features, dtype, requires_grad=True, bias=True):
    xs = [torch.randn(*lead, d, dtype=dtype, requires_grad=requires_grad) for d in sizes]
    weight = (torch.randn(out_features, sum(sizes), dtype=dtype) / sum(sizes) ** 0.5).requires_grad_(
        requires_grad
    )
    b = torch.randn(out_features, dtype=dtype, requires_grad=requires_grad) if bias else None
    return xs, weight, b


def _grads(out, tensors, grad_out):
    return torch.autograd.grad(out, tensors, grad_out)


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{len(s[0])}seg-{len(s[1]) + 1}d")
def test_forward_and_backward_match_reference(activation, dtype, shape):
    sizes, lead, out_features = shape
    xs, weight, bias = _make(sizes, lead, out_features, dtype)
    out = concat_linear(xs, weight, bias, activation)
    assert out.shape == (*lead, out_features) and out.dtype == dtype
    assert_matches_reference(out, concat_linear_reference, [xs, weight, bias, activation], dtype)

    grad_out = torch.randn_like(out)
    params = [*xs, weight, bias]
    fused = _grads(out, params, grad_out)

    def reference_grad(index):
        def fn(xs_, w_, b_, act_, g_):
            leaves = [t.detach().requires_grad_() for t in [*xs_, w_, b_]]
            y = concat_linear_reference(leaves[: len(xs_)], leaves[-2], leaves[-1], act_)
            return torch.autograd.grad(y, leaves, g_)[index]

        return fn

    for index, grad in enumerate(fused):
        assert grad.shape == params[index].shape
        assert_matches_reference(grad, reference_grad(index), [xs, weight, bias, activation, grad_out], dtype)


@pytest.mark.parametrize("activation", ["none", "gelu", "relu"])
def test_without_bias(activation):
    xs, weight, _ = _make([6, 10], (9,), 8, torch.float32)
    out = concat_linear(xs, weight, None, activation)
    torch.testing.assert_close(out, concat_linear_reference(xs, weight, None, activation), **FLOAT32_SMALL)
    grads = torch.autograd.grad(out.sum(), [*xs, weight])
    expected = torch.autograd.grad(concat_linear_reference(xs, weight, None, activation).sum(), [*xs, weight])
    for got, want in zip(grads, expected):
        torch.testing.assert_close(got, want, **FLOAT32_SMALL)


def test_non_contiguous_inputs_give_the_contiguous_result():
    base = torch.randn(12, 40)
    xs = [base[:, :9], torch.randn(16, 12).t(), base[::1, 20:33]]  # strided rows, transposed, slice
    assert not all(x.is_contiguous() for x in xs)
    weight = torch.randn(7, 9 + 16 + 13)
    bias = torch.randn(7)
    for activation in ACTIVATIONS:
        strided = concat_linear(xs, weight, bias, activation)
        dense = concat_linear([x.contiguous() for x in xs], weight.t().contiguous().t(), bias, activation)
        torch.testing.assert_close(strided, dense, **FLOAT32_OTHER_LAYOUT)
    weight_t = torch.randn(38, 7).t()  # non-contiguous weight
    torch.testing.assert_close(
        concat_linear(xs, weight_t, bias, "silu"),
        concat_linear_reference(xs, weight_t, bias, "silu"),
        **FLOAT32_SMALL,
    )


def test_non_contiguous_3d_inputs_and_grad_output():
    xs = [torch.randn(3, 5, 8).transpose(0, 1).requires_grad_(), torch.randn(5, 3, 4, requires_grad=True)]
    weight = torch.randn(6, 12, requires_grad=True)
    out = concat_linear(xs, weight, None, "gelu_tanh")
    grad_out = torch.randn(6, 3, 5).permute(2, 1, 0)  # non-contiguous
    got = torch.autograd.grad(out, [*xs, weight], grad_out)
    want = torch.autograd.grad(
        concat_linear_reference(xs, weight, None, "gelu_tanh"), [*xs, weight], grad_out
    )
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, **FLOAT32_SMALL)


@pytest.mark.parametrize("lead", [(0,), (0, 4), (3, 0)])
@pytest.mark.parametrize("activation", ["none", "gelu", "tanh"])
def test_empty_batch(lead, activation):
    xs, weight, bias = _make([3, 5], lead, 4, torch.float32)
    out = concat_linear(xs, weight, bias, activation)
    assert out.shape == (*lead, 4)
    grads = torch.autograd.grad(out.sum(), [*xs, weight, bias])
    assert [g.shape for g in grads] == [x.shape for x in [*xs, weight, bias]]
    assert torch.count_nonzero(grads[-2]) == 0 and torch.count_nonzero(grads[-1]) == 0


def test_zero_width_segment_is_skipped():
    xs = [torch.randn(4, 3), torch.randn(4, 0), torch.randn(4, 5)]
    weight, bias = torch.randn(6, 8), torch.randn(6)
    torch.testing.assert_close(
        concat_linear(xs, weight, bias, "relu"), concat_linear_reference(xs, weight, bias, "relu")
    )


def test_grad_only_for_some_arguments():
    x1 = torch.randn(5, 4, requires_grad=True)
    x2 = torch.randn(5, 6)
    weight = torch.randn(3, 10)
    bias = torch.randn(3, requires_grad=True)
    out = concat_linear([x1, x2], weight, bias, "silu")
    g1, gb = torch.autograd.grad(out.sum(), [x1, bias])
    r1, rb = torch.autograd.grad(concat_linear_reference([x1, x2], weight, bias, "silu").sum(), [x1, bias])
    torch.testing.assert_close(g1, r1)
    torch.testing.assert_close(gb, rb)


def test_inference_mode_and_no_grad():
    xs, weight, bias = _make([7, 9], (4,), 5, torch.float32, requires_grad=False)
    expected = concat_linear_reference(xs, weight, bias, "gelu")
    with torch.no_grad():
        torch.testing.assert_close(concat_linear(xs, weight, bias, "gelu"), expected, **FLOAT32_SMALL)
    with torch.inference_mode():
        torch.testing.assert_close(concat_linear(xs, weight, bias, "gelu"), expected, **FLOAT32_SMALL)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_gradcheck_float64(activation):
    xs, weight, bias = _make([3, 4, 2], (2, 3), 5, torch.float64)
    assert torch.autograd.gradcheck(
        lambda *args: concat_linear(list(args[:3]), args[3], args[4], activation),
        (*xs, weight, bias),
    )


@pytest.mark.parametrize("activation", ["none", "relu", "gelu", "sigmoid"])
def test_autocast_behaves_like_linear(activation):
    xs, weight, bias = _make([16, 8], (6,), 12, torch.float32, requires_grad=False)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = concat_linear(xs, weight, bias, activation)
        expected = concat_linear_reference(xs, weight, bias, activation)
    assert out.dtype == expected.dtype == torch.bfloat16
    torch.testing.assert_close(out, expected, **AUTOCAST_BFLOAT16)


def test_saved_for_backward_holds_no_concatenation():
    """The backward keeps the inputs themselves, never a [*, sum(D_i)] buffer, and a
    pre-activation only for the activations whose gradient needs it."""
    sizes, rows, out_features = [24, 16, 8], 10, 20

    def saved_shapes(fn, activation):
        xs, weight, bias = _make(sizes, (rows,), out_features, torch.float32)
        shapes = []

        def pack(t):
            shapes.append(tuple(t.shape))
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            fn(xs, weight, bias, activation)
        return shapes

    for activation in ACTIVATIONS:
        fused = saved_shapes(concat_linear, activation)
        eager = saved_shapes(concat_linear_reference, activation)
        assert (rows, sum(sizes)) in eager
        assert (rows, sum(sizes)) not in fused
        expected_outputs = 0 if activation == "none" else 1
        assert fused.count((rows, out_features)) == expected_outputs, (activation, fused)


def test_matches_eager_pattern_in_bfloat16_and_float32_at_scale():
    xs = [torch.randn(64, 768), torch.randn(64, 512), torch.randn(64, 128)]
    weight, bias = torch.randn(512, 1408) / 1408**0.5, torch.randn(512)
    for dtype in (torch.float32, torch.bfloat16):
        args = [[x.to(dtype) for x in xs], weight.to(dtype), bias.to(dtype), "gelu"]
        assert_matches_reference(concat_linear(*args), concat_linear_reference, args, dtype)


def test_f_linear_equivalence_single_segment():
    x, weight, bias = torch.randn(3, 4, 10), torch.randn(6, 10), torch.randn(6)
    torch.testing.assert_close(concat_linear([x], weight, bias), F.linear(x, weight, bias), **FLOAT32_SMALL)
