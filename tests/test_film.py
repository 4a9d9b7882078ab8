"""film (CPU op and its Triton kernels) and the FiLM layer: against the reference for every dtype and
edge shape, gradcheck, opcheck, torch.compile, bad input, and the layer's drop-in state dict."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mmfast.nn import FiLM
from mmfast.nn.reference import ReferenceFiLM
from mmfast.ops import film, film_reference
from mmfast.ops.film import stored_channels_last
from tests._tolerances import (
    GRAD,
    TRITON_INTERPRETED_VS_FLOAT64,
    assert_close_to_float64,
    assert_grads_match,
    assert_matches_reference,
)

DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]
# (batch, channels, spatial dims, condition dim): sizes that are no multiple of a vector width,
# 4-D and 5-D maps, a map without spatial dims, batch 1.
SHAPES = [(3, 5, (7, 9), 11), (2, 16, (8, 8), 32), (1, 3, (), 4), (4, 6, (2, 3, 5), 7), (2, 4, (33,), 3)]


def _args(batch, channels, spatial, cond_dim, dtype, bias=True, requires_grad=True):
    generator = torch.Generator().manual_seed(batch * 100 + channels)
    features = torch.randn(batch, channels, *spatial, generator=generator)
    condition = torch.randn(batch, cond_dim, generator=generator)
    weight = torch.randn(2 * channels, cond_dim, generator=generator) / cond_dim**0.5
    b = 0.5 * torch.randn(2 * channels, generator=generator) if bias else None
    tensors = [features, condition, weight] + ([b] if bias else [])
    tensors = [t.to(dtype).requires_grad_(requires_grad) for t in tensors]
    return tensors if bias else [*tensors, None]


def _grads(fn, args, grad_out, dtype=None):
    copy = [None if a is None else a.detach().to(dtype or a.dtype).requires_grad_() for a in args]
    out = fn(*copy)
    leaves = [a for a in copy if a is not None]
    return torch.autograd.grad(out, leaves, grad_out.to(out.dtype))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"B{s[0]}-C{s[1]}-{len(s[2]) + 2}d")
def test_forward_and_backward_match_reference(dtype, shape):
    args = _args(*shape, dtype)
    out = film(*args)
    assert out.shape == args[0].shape and out.dtype == dtype
    assert_matches_reference(
        out, film_reference, args, dtype, distance_dtypes=(torch.bfloat16, torch.float16)
    )
    grad_out = torch.randn_like(out)
    fused = torch.autograd.grad(out, [a for a in args if a is not None], grad_out)
    reference = _grads(film_reference, args, grad_out)
    exact = _grads(film_reference, args, grad_out, torch.float64)
    if dtype == torch.float16:
        # float16 sums over the map in float32 once where the reference rounds each product:
        # compare both with the float64 evaluation.
        for got, want in zip(fused, exact):
            assert_close_to_float64(got, want, 2e-2, scaled=True)
        return
    assert_grads_match(fused, reference, exact, dtype)


def test_without_bias_and_gradients_asked_separately():
    args = _args(3, 4, (5,), 6, torch.float64, bias=False)
    out = film(*args)
    torch.testing.assert_close(out, film_reference(*args))
    for index in range(3):
        inputs = [
            a.detach().requires_grad_(i == index) if a is not None else None for i, a in enumerate(args)
        ]
        (got,) = torch.autograd.grad(film(*inputs).sum(), [inputs[index]])
        (want,) = torch.autograd.grad(film_reference(*inputs).sum(), [inputs[index]])
        torch.testing.assert_close(got, want, **GRAD[torch.float64])


def test_non_contiguous_and_channels_last():
    features, condition, weight, bias = _args(2, 6, (4, 5), 3, torch.float64, requires_grad=False)
    channels_last = features.contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(
        film(channels_last, condition, weight, bias), film_reference(features, condition, weight, bias)
    )
    strided = features[:, :, ::2]
    torch.testing.assert_close(film(strided, condition.t().contiguous().t(), weight, bias),
                               film_reference(strided, condition, weight, bias))  # fmt: skip


def _channels_last(features: torch.Tensor) -> torch.Tensor:
    """``features`` stored channels last: each sample a dense ``[*spatial, C]`` block."""
    order = [0, *range(2, features.dim()), 1]
    inverse = [order.index(d) for d in range(features.dim())]
    return features.permute(order).contiguous().permute(inverse)


# (batch, channels, spatial dims, condition dim) of channels-last maps: 24 channels (the pattern of
# scales spans 48 elements at 16 lanes), a 5-D map, a transposed [B, L, C] sequence, 257 channels
# (whose pattern would exceed its cap: row by row), and a sample longer than one task (8 channels x
# 4480 positions: partial sums across tasks).
CHANNELS_LAST_SHAPES = [(3, 24, (5, 7), 6), (2, 6, (3, 4, 5), 5), (2, 5, (9,), 3), (2, 257, (3, 2), 4),
                        (2, 8, (64, 70), 3)]  # fmt: skip


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape", CHANNELS_LAST_SHAPES, ids=lambda s: f"C{s[1]}-{len(s[2]) + 2}d")
def test_channels_last_stays_channels_last(dtype, shape):
    """A channels-last map (torch.channels_last, channels_last_3d, a transposed [B, L, C]) gives a
    channels-last output and feature gradient, equal to the reference's, with no copy to contiguous;
    a contiguous grad_output gives a contiguous feature gradient."""
    features, condition, weight, bias = _args(*shape, dtype, requires_grad=False)
    channels_last = _channels_last(features).requires_grad_()
    assert stored_channels_last(channels_last) and not channels_last.is_contiguous()
    args = [channels_last, condition.requires_grad_(), weight.requires_grad_(), bias.requires_grad_()]
    out = film(*args)
    assert stored_channels_last(out) and out.stride() == channels_last.stride()
    assert_matches_reference(out, film_reference, args, dtype, distance_dtypes=(torch.bfloat16,))
    for grad_out in (_channels_last(torch.randn_like(features)), torch.randn_like(features)):
        fused = torch.autograd.grad(film(*args), args, grad_out)
        assert stored_channels_last(fused[0]) == stored_channels_last(grad_out)
        reference = _grads(film_reference, args, grad_out)
        exact = _grads(film_reference, args, grad_out, torch.float64)
        assert_grads_match(fused, reference, exact, dtype)


def test_channels_last_opcheck_compile_and_gradcheck():
    features, condition, weight, bias = _args(2, 5, (3, 4), 3, torch.float64)
    args = [_channels_last(features.detach()).requires_grad_(), condition, weight, bias]
    assert torch.autograd.gradcheck(film, args)
    float_args = tuple(a.detach().float().requires_grad_() for a in args)
    float_args = (_channels_last(float_args[0].detach()).requires_grad_(), *float_args[1:])
    torch.library.opcheck(torch.ops.mmfast.film_forward.default, float_args)
    torch.library.opcheck(torch.ops.mmfast.film.default, float_args)
    compiled = torch.compile(film, fullgraph=True)(*float_args)
    assert stored_channels_last(compiled)
    torch.testing.assert_close(compiled, film_reference(*float_args))


def test_empty_batch_and_empty_map():
    args = _args(0, 4, (3, 3), 5, torch.float32)
    out = film(*args)
    assert out.shape == (0, 4, 3, 3)
    grads = torch.autograd.grad(out.sum(), [a for a in args if a is not None], allow_unused=True)
    assert torch.equal(grads[2], torch.zeros_like(args[2])) and torch.equal(
        grads[3], torch.zeros_like(args[3])
    )
    args = _args(2, 4, (0,), 5, torch.float32)
    out = film(*args)
    assert out.shape == (2, 4, 0)
    grads = torch.autograd.grad(out.sum(), [a for a in args if a is not None])
    assert torch.equal(grads[1], torch.zeros_like(args[1]))


def test_gradcheck_float64():
    args = _args(2, 3, (2, 3), 4, torch.float64)
    assert torch.autograd.gradcheck(film, args)


def test_opcheck_and_compile():
    args = _args(2, 3, (4,), 5, torch.float32)
    torch.library.opcheck(torch.ops.mmfast.film_forward.default, tuple(args))
    torch.library.opcheck(torch.ops.mmfast.film.default, tuple(args))
    compiled_fn = torch.compile(film, fullgraph=True)
    torch.testing.assert_close(compiled_fn(*args), film_reference(*args))


def test_second_derivative_raises():
    args = _args(2, 3, (4,), 5, torch.float64)
    (grad,) = torch.autograd.grad(film(*args).sum(), [args[0]], create_graph=True)
    with pytest.raises(RuntimeError, match="derivative for mmfast::film_backward is not implemented"):
        grad.sum().backward()


def test_autocast_runs_in_bfloat16():
    args = _args(2, 3, (4,), 5, torch.float32, requires_grad=False)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = film(*args)
    assert out.dtype == torch.bfloat16


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        (lambda a: [a[0][0, 0, 0], *a[1:]], ValueError, r"features: expected a tensor \[B, C, \*spatial\]"),
        (lambda a: [a[0], a[1][:1], *a[2:]], ValueError, r"condition: expected shape \[2, K\]"),
        (lambda a: [a[0], a[1], a[2][:, :-1], a[3]], ValueError, r"weight: expected shape \[6, 5\]"),
        (lambda a: [a[0], a[1].double(), *a[2:]], TypeError, "condition: expected dtype torch.float32"),
        (lambda a: [a[0], a[1], a[2], a[3][:-1]], ValueError, r"bias: expected shape \[6\]"),
        (lambda a: [a[0].long(), *a[1:]], TypeError, "features: expected a floating-point tensor"),
    ],
)
def test_bad_input_names_the_argument(change, error, message):
    args = change(_args(2, 3, (4, 4), 5, torch.float32, requires_grad=False))
    with pytest.raises(error, match=message):
        film(*args)


def test_layer_state_dict_is_a_linear_generator():
    layer = FiLM(6, 4)
    generator = nn.Linear(4, 12)
    generator.load_state_dict(layer.state_dict())
    features, condition = torch.randn(3, 6, 5, 5), torch.randn(3, 4)
    gamma, beta = generator(condition).chunk(2, dim=1)
    want = features * (1 + gamma[:, :, None, None]) + beta[:, :, None, None]
    torch.testing.assert_close(layer(features, condition), want)
    twin = ReferenceFiLM(6, 4)
    twin.load_state_dict(layer.state_dict(), strict=True)
    torch.testing.assert_close(twin(features, condition), layer(features, condition))
    assert FiLM(3, 2, bias=False).bias is None
    with pytest.raises(ValueError, match="FiLM: expected channels and cond_dim >= 1"):
        FiLM(0, 3)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64], ids=str)
def test_triton_kernels(dtype):
    """The Triton kernels (interpreted on CPU tensors without CUDA, compiled with it) against the
    float64 reference; float64 runs their PyTorch path."""
    pytest.importorskip("triton")
    from mmfast.triton import _common
    from mmfast.triton import film as triton_film

    device = "cpu" if _common.INTERPRETED else "cuda"
    tolerance = TRITON_INTERPRETED_VS_FLOAT64.get(dtype, 1e-12)
    shapes = [(3, 5, (7, 9), 11), (1, 3, (), 4), (2, 70, (33,), 3), (0, 2, (3,), 2)]
    cases = [*((s, False) for s in shapes), ((3, 5, (7, 9), 11), True), ((2, 70, (33,), 3), True)]
    for shape, channels_last in cases:
        args = [a.detach().to(device) for a in _args(*shape, dtype)]
        if channels_last:
            args[0] = _channels_last(args[0])
        out, modulation = triton_film.forward(*args)
        assert stored_channels_last(out) == channels_last
        grad = torch.randn_like(out)
        got = triton_film.backward(grad, args[0], args[1], args[2], modulation, [True] * 4)
        exact = _grads(film_reference, args, grad, torch.float64)
        assert_close_to_float64(out, film_reference(*[a.double() for a in args]), tolerance)
        assert stored_channels_last(got[0]) == stored_channels_last(grad)
        for g, e in zip(got, exact, strict=True):
            assert g.dtype == dtype
            assert_close_to_float64(g, e, tolerance, scaled=True)
        only_features = triton_film.backward(
            grad, args[0], args[1], args[2], modulation, [True, False, False, False]
        )
        assert torch.equal(only_features[0], got[0]) and only_features[1].numel() == 0
